"""The shipped presets: the default study, a smoke test, the paper's setting, mitigations and methods.

Each is a partial study config (plain data, validated by :func:`forgetscale.config.load_config`); why each
setting was chosen is written beside it, and the measurements behind the choices are in docs/.
"""

from __future__ import annotations

import json
from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        # Chosen by measurement (docs/default-study.md): lr 4e-3 ends the onset of
        # forgetting by step 8 on news, so 32 steps give six evaluations past it over a 4x span in N;
        # random order keeps batches exchangeable across steps (the length-grouped sampler is a
        # long-to-short curriculum that confounds N with length). instruct saturates inside the onset
        # at this scale (KL 0.21 at step 8, 0.20 at 16, while ft_loss fell 1.41 -> 1.16): no (P, N) law
        # to fit there, so the default studies news, the paper's new-knowledge case.
        "name": "default",
        "data": {"dataset": "news"},
        "train": {"steps": 32, "lr": 4e-3, "sampling": "random", "eval_steps": [8, 12, 16, 24, 32]},
        # Replication beats corpus size (docs/default-study.md): every run is scored on the same corpus, so
        # its sampling error moves the level of all runs alike, while the laws need independent runs. 64
        # prompts (shipped, see data/corpus.py) keep rank 1's forget_kl_se under 10% of forget_kl; batches
        # of 32 for sampling, evaluation and probes.
        "forgetting": {"n_prompts": 64, "max_new_tokens": 32, "batch_size": 32},
        "fit": {"min_step": 8},
        "probes": {"enabled": True, "runs": "largest_rank", "max_items": 40, "max_new_tokens": 16, "batch_size": 32},
        # two independent data orders (and LoRA initialisations) per rank: batch-to-batch shocks are then
        # replicated noise that intervals can be honest about, not a shock common to every run
        "sweep": {"lora.rank": [1, 4, 16, 64], "train.seed": [0, 1]},
    },
    "smoke": {
        "name": "smoke",
        "data": {"n_train": 32, "n_heldout": 4},
        "train": {"steps": 4, "batch_size": 2, "n_evals": 3, "seq_len": 64},
        "forgetting": {"n_prompts": 4, "max_new_tokens": 24},
        "fit": {"n_boot": 20},
        "probes": {"enabled": True, "max_items": 3, "max_new_tokens": 12},
        "sweep": {"data.dataset": ["news", "instruct"], "lora.rank": [1, 8]},
    },
    "paper": {
        # Kalajdzievski 2024: Llama-2-7b-chat, LoRA on all 7 linear modules with rsLoRA,
        # Adafactor, batch 32, context 512, 260 steps, forgetting on WikiText-103 test.
        "name": "paper",
        "model": {"name": "meta-llama/Llama-2-7b-chat-hf", "dtype": "bfloat16"},
        "data": {"dataset": "hf:Open-Orca/OpenOrca", "n_train": 8320, "n_heldout": 512},
        "lora": {"alpha": 16.0},
        "train": {
            "steps": 260,
            "batch_size": 32,
            "optimizer": "adafactor",
            "lr": 1e-4,
            "seq_len": 512,
            "precision": "bf16",
            "n_evals": 12,
        },
        "forgetting": {"corpus": "wikitext", "seq_len": 512, "batch_size": 8},
        "fit": {"min_step": 50},
        "sweep": {"lora.rank": [8, 16, 32, 64, 128, 256]},
    },
}


def _mitigations_preset() -> dict[str, Any]:
    """Plain LoRA against replay, KL-to-base, WiSE-FT rescaling and intruder reduction, on the default's
    training settings.

    One dataset (the default's first) and one data order; the default's three smallest ranks trained plain
    (the line's 3 runs), and ``replay`` and ``kl`` at the smallest and largest of them: 7 trainings, 2
    runs per trained level. The plain runs are also measured after training (``post_hoc``): rescaled
    (WiSE-FT) and with their intruder dimensions reduced, which costs evaluations (and SVDs) only. It
    trains half the default's steps (but at least twice ``fit.min_step``, so every evaluation is past the
    onset), evaluates at the first and last of the default's evaluation steps in that range, measures
    forgetting on at most 32 of the shipped prompts and does not probe. Its measured time is in
    docs/mitigations.md.
    """
    default = json.loads(json.dumps(PRESETS["default"]))
    sweep = default.get("sweep", {})
    # read from the default's own settings, which it states explicitly (this module imports no config class:
    # the config module loads the presets)
    train, min_step = default["train"], default["fit"]["min_step"]
    steps = min(train["steps"], max(2 * min_step, train["steps"] // 2))
    schedule = sorted({0, *train["eval_steps"], train["steps"]})
    past = [s for s in schedule if min_step <= s <= steps] or [steps]
    evals = sorted({past[0], steps})
    datasets = sweep.get("data.dataset") or [default["data"]["dataset"]]
    ranks = sorted(sweep.get("lora.rank") or [1, 4, 16])[:3]
    return {
        **{k: v for k, v in default.items() if k not in ("name", "sweep", "probes")},
        "name": "mitigations",
        "data": {**default.get("data", {}), "dataset": datasets[0]},
        "train": {**default.get("train", {}), "steps": steps, "eval_steps": evals},
        "forgetting": {**default.get("forgetting", {}), "n_prompts": min(default["forgetting"]["n_prompts"], 32)},
        "mitigation": {"replay_fraction": 0.2, "replay_examples": 32, "kl_weight": 1.0,
                       "post_hoc": ["rescale", "intruders"], "scales": [0.25, 0.5, 0.75],
                       "intruder_lambdas": [0.0, 0.75]},  # fmt: skip
        "fit": {**default.get("fit", {}), "n_boot": 20},
        "probes": {"enabled": False},
        "sweep": {"lora.rank": ranks, "mitigation.kind": ["none", "replay", "kl"]},
        # replay and kl at the smallest and largest rank only: 2 runs per level, spread along the line
        "sweep_exclude": [{"lora.rank": r, "mitigation.kind": k} for r in ranks[1:-1] for k in ("replay", "kl")],
    }


PRESETS["mitigations"] = _mitigations_preset()


METHOD_LR = {"lora": 4e-3, "dora": 4e-3, "lora-mlp": 4e-3, "ia3": 3e-2, "full": 3e-3}
"""Each method's learning rate in the ``methods`` preset (docs/methods.md). LoRA's is the default study's, chosen
there against rank 64's overshoot. DoRA and MLP-only LoRA share it on purpose: they are LoRA's parametrisation
with a different magnitude or target set, and one rate isolates that difference. IA3 (3e-2) and the full
fine-tune of the last 2 blocks (3e-3) are reparametrisations whose rates have no relation to LoRA's: each is
the rate with the lowest held-out fine-tuning loss after 8 steps in ``python -m bench.method_lr``, inside its
grid (IA3 1e-2 to 1e-1; full 1e-4 to 1e-2, where 1e-2 diverged to ft_loss 3.64)."""


def _methods_preset() -> dict[str, Any]:
    """LoRA against DoRA, MLP-only LoRA, IA3 and a full fine-tune of the last blocks, each on its own line.

    The default's data and evaluation settings, 12 steps evaluated at 4, 8 and 12 (what matters is a curve
    on the plane of fine-tuning loss and forgetting per run, and the 30-minute budget on the reference CPU:
    16 steps with four evaluations measured 11m55s on a 2-core CPU that runs whole studies 2.2-2.9x faster
    than the reference), two data orders per method, and each method at its own learning rate
    (:data:`METHOD_LR`). LoRA, the reference, runs at two ranks so that its line has four runs to be
    calibrated on; the others at one size. Forgetting is measured on 32 of the shipped prompts, nothing is
    probed, and two worker processes train side by side (1.5x the training throughput of one process on
    the reference CPU's two cores; the same verdicts, to four decimals, as one process). Its measured time
    is in docs/methods.md.
    """
    default = json.loads(json.dumps(PRESETS["default"]))
    lr = METHOD_LR
    methods = [
        {"method.kind": "lora", "lora.rank": 4, "train.lr": lr["lora"]},
        {"method.kind": "lora", "lora.rank": 16, "train.lr": lr["lora"]},
        {"method.kind": "dora", "lora.rank": 4, "train.lr": lr["dora"]},
        {"method.kind": "lora", "lora.rank": 4, "lora.target_modules": "mlp", "train.lr": lr["lora-mlp"]},
        {"method.kind": "ia3", "train.lr": lr["ia3"]},
        {"method.kind": "full", "method.blocks": 2, "train.lr": lr["full"]},
    ]
    return {
        **{k: v for k, v in default.items() if k not in ("name", "sweep", "probes")},
        "name": "methods",
        "train": {**default.get("train", {}), "steps": 12, "eval_steps": [4, 8, 12]},
        "forgetting": {**default.get("forgetting", {}), "n_prompts": 32},
        "fit": {**default.get("fit", {}), "min_step": 4, "n_boot": 20},
        "probes": {"enabled": False},
        "executor": {"kind": "processes", "workers": 2},
        "sweep": {"method": methods, "train.seed": [0, 1]},
    }


PRESETS["methods"] = _methods_preset()
