"""Side-by-side speed measurements on the default model: forgetting evaluation and training."""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from forgetscale import train
from forgetscale.config import RunConfig, load_config
from forgetscale.data.encode import Sequence
from forgetscale.fold import folded
from forgetscale.forgetting import measure
from forgetscale.models import cache_dir
from forgetscale.precision import resolve as resolve_precision
from forgetscale.reference import BaseReference, compute_reference
from forgetscale.schema import FORGETTING_METRICS as METRICS
from forgetscale.workspace import Workspace


@dataclass
class Setup:
    """The default study at rank 16: base model, both datasets, the forgetting corpus, the base reference on
    the held-out examples (taken before the adapter exists, as a study takes it), a trained adapter."""

    runs: dict[str, RunConfig]
    """dataset -> run (the default study's two datasets)."""
    ws: Workspace
    base_copy: torch.nn.Module
    peft_model: Any
    corpus: list[Sequence]
    task_ref: BaseReference
    """The base on the news run's held-out examples: what a study's evaluations score ft_loss and task_kl on."""
    _base: Any = None

    @property
    def run(self) -> RunConfig:
        return self.runs["news"]

    def base_model(self) -> torch.nn.Module:
        """The base model with the benchmark's adapter removed (for the training benchmarks)."""
        if self._base is None:
            self._base = self.peft_model.unload()
        return self._base

    @classmethod
    def create(cls, quick: bool = False) -> Setup:
        overrides = ["train.steps=4", "forgetting.n_prompts=4"] if quick else ["train.steps=8"]
        study = load_config(preset="default", overrides=["sweep.lora.rank=[16]", *overrides])
        runs = {r.data.dataset: r for r in study.runs()}
        ws = Workspace(cache_dir())
        run = runs["news"]  # the default study's first dataset: the forgetting and precision benchmarks use it
        lm = ws.model(run)
        corpus = list(ws.reference(run).sequences)  # samples (or loads) the `self` corpus
        task_ref = ws.task_reference(run)  # from the base: before the adapter below is attached
        base_copy = copy.deepcopy(lm.model).eval()  # what the naive approach keeps: a second full model
        peft_model = train.attach_lora(lm.model, run.lora, run.train.seed)
        train.train(peft_model, lm.tokenizer, run, ws.data(run)[0], lambda *a: None)  # a real, moved adapter
        return cls(runs, ws, base_copy, peft_model, corpus, task_ref)


def naive_forget_ce(base: torch.nn.Module, tuned: torch.nn.Module, seqs: list[Sequence], batch_size: int) -> float:
    """forget_ce the obvious way: both models' full logits, full-vocabulary fp32 softmax, every time."""
    total, n = 0.0, 0
    with torch.inference_mode():
        for b in range(0, len(seqs), batch_size):
            batch = seqs[b : b + batch_size]
            width = max(len(s.ids) for s in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            attn = torch.zeros_like(ids)
            mask = torch.zeros(len(batch), width, dtype=torch.bool)
            for j, s in enumerate(batch):
                ids[j, : len(s.ids)] = torch.tensor(s.ids)
                attn[j, : len(s.ids)] = 1
                mask[j, : len(s.ids)] = torch.tensor(s.mask)
            p = torch.softmax(base(input_ids=ids, attention_mask=attn).logits.float(), -1)[:, :-1]
            logq = F.log_softmax(tuned(input_ids=ids, attention_mask=attn).logits.float(), -1)[:, :-1]
            ce = -(p * logq).sum(-1)
            total += float(ce[mask[:, 1:]].double().sum())
            n += int(mask[:, 1:].sum())
    return total / n


def forgetting_speedup(
    setup: Setup, n_evals: int = 10, top_ks: tuple[int, ...] = (4096, 256), max_seqs: int | None = 64
) -> dict[str, Any]:
    """Throughput of forgetscale's evaluation (reference once + ``n_evals`` measurements, merged adapter)
    vs the naive approach recomputing the base at every evaluation, with the relative error of
    ``forget_ce`` and the reference's bytes per token, for each reference mode (``hidden``, the
    default, then ``logits`` and top-K); and the hidden reference's error against full logits.

    Both sides are per-token costs, so ``max_seqs`` evenly spaced sequences of the corpus stand in
    for all of it. On a 2-core CPU, 64 of the default corpus' 192 sequences took 433 s on the naive
    side and ~112 s per mode; the whole corpus, three times the tokens, would take ~45 minutes."""
    bs = setup.run.forgetting.batch_size
    corpus = setup.corpus
    if max_seqs is not None and len(corpus) > max_seqs:
        corpus = corpus[:: len(corpus) // max_seqs][:max_seqs]
    n_tokens = sum(s.n_targets for s in corpus)
    t = time.perf_counter()
    naive = [naive_forget_ce(setup.base_copy, setup.peft_model, corpus, bs) for _ in range(n_evals)]
    naive_s = time.perf_counter() - t
    modes: dict[str, Any] = {}
    for name, top_k in [("hidden", None), ("logits", None), *((f"top{k}", k) for k in top_ks)]:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            with setup.peft_model.disable_adapter():
                ref = compute_reference(
                    setup.peft_model, corpus, bs, Path(tmp), top_k, mode="logits" if top_k else name
                )
            ref_s = time.perf_counter() - t
            size = sum(f.stat().st_size for f in Path(tmp).iterdir())
            t = time.perf_counter()
            with folded(setup.peft_model):  # as the study evaluates
                ours = [measure(setup.peft_model, ref, bs) for _ in range(n_evals)]
            ours_s = time.perf_counter() - t
            unmerged = measure(setup.peft_model, ref, bs)
        total = ref_s + ours_s
        modes[name] = {
            "mode": ref.mode,
            "speedup": naive_s / total,
            "rel_error": abs(ours[-1]["forget_ce"] - naive[-1]) / naive[-1],
            "forget_ce": ours[-1]["forget_ce"],
            "forget_kl": ours[-1]["forget_kl"],
            "forget_kl_se": ours[-1]["forget_kl_se"],
            "merged_rel_error": max(abs(ours[-1][k] - unmerged[k]) / abs(unmerged[k]) for k in METRICS if unmerged[k]),
            "bytes_per_token": size / n_tokens,
            "reference_s": ref_s,
            "evaluations_s": ours_s,
            "tokens_per_s": n_evals * n_tokens / total,
        }
    h, lg = modes["hidden"], modes["logits"]
    return {
        "hidden_reference_rel_error": max(abs(h[k] - lg[k]) / abs(lg[k]) for k in ("forget_ce", "forget_kl")),
        "n_evals": n_evals,
        "n_sequences": len(corpus),
        "n_tokens": n_tokens,
        "naive_s": naive_s,
        "naive_tokens_per_s": n_evals * n_tokens / naive_s,
        "naive_forget_ce": naive[-1],
        "modes": modes,
    }


def trainer_overhead(setup: Setup, steps: int = 8, repeats: int = 3) -> dict[str, Any]:
    """forgetscale's training (its Trainer set-up, loss and callback; evaluations no-ops) vs a plain
    ``transformers.Trainer`` + PEFT LoRA with the same data and settings (precision and sampling
    included), alternated ``repeats`` times on each dataset of the default study; then the same
    training in fp32 vs the default precision, and achieved FLOP/s against this machine's matmul peak.

    Consumes ``setup``'s trained adapter: run it after :func:`forgetting_speedup`."""
    base = setup.base_model()  # the benchmark's trained adapter is not needed any more
    out: dict[str, Any] = {"steps": steps, "datasets": {}}
    ours_total = plain_total = 0.0
    for dataset, run in setup.runs.items():
        run = _with_train(run, steps=steps)
        seqs = setup.ws.data(run)[0]
        ours_t, plain_t = [], []
        for _ in range(repeats):
            ours_t.append(_train_ours(base, run, setup))
            plain_t.append(_train_plain(base, run, setup))
        ours, plain = statistics.median(ours_t), statistics.median(plain_t)
        ours_total, plain_total = ours_total + ours, plain_total + plain
        out["datasets"][dataset] = {
            "ours_s": ours_t,
            "plain_s": plain_t,
            "overhead": ours / plain - 1,
            "tokens_per_s": _tokens(seqs, run.train.batch_size, steps) / ours,
            "target_fraction": sum(s.n_targets for s in seqs) / sum(len(s.ids) for s in seqs),
        }
    out["overhead"] = ours_total / plain_total - 1

    # precision: the default (auto) against fp32, and each against its own matmul peak
    run = _with_train(setup.run, steps=steps)
    seqs = setup.ws.data(run)[0]
    default = resolve_precision(run.train.precision)
    fp32_run = _with_train(run, precision="fp32")
    times: dict[str, list[float]] = {"fp32": [], default: []}
    for _ in range(repeats if default != "fp32" else 0):
        times["fp32"].append(_train_ours(base, fp32_run, setup))
        times[default].append(_train_ours(base, run, setup))
    if default == "fp32":
        times["fp32"] = out["datasets"][run.data.dataset]["ours_s"]
    lm = setup.ws.model(run)
    flops = _train_flops(lm.model, seqs, run.train.batch_size, steps)
    out["precision"] = default
    out["precisions"] = {}
    for prec, ts in times.items():
        peak = matmul_peak_flops(dtype=torch.bfloat16 if prec == "bf16" else torch.float32)
        achieved = flops / statistics.median(ts)
        out["precisions"][prec] = {
            "train_s": ts,
            "train_gflops": achieved / 1e9,
            "peak_gflops": peak / 1e9,
            "matmul_peak_fraction": achieved / peak,
        }
    out["precision_speedup"] = statistics.median(times["fp32"]) / statistics.median(times[default])
    out["matmul_peak_fraction"] = out["precisions"][default]["matmul_peak_fraction"]
    return out


def _with_train(run: RunConfig, **update: Any) -> RunConfig:
    return run.model_copy(update={"train": run.train.model_copy(update=update)})


def _train_ours(base: torch.nn.Module, run: RunConfig, setup: Setup) -> float:
    """Seconds of forgetscale training: ``train.train``'s ``train`` (``trainer.train()`` minus the
    no-op evaluations; data set-up, Trainer construction and adapter excluded)."""
    with _fresh_adapter(base, run) as peft_model:
        lm = setup.ws.model(run)
        return train.train(peft_model, lm.tokenizer, run, setup.ws.data(run)[0], lambda *a: None)["train"]


def _train_plain(base: torch.nn.Module, run: RunConfig, setup: Setup) -> float:
    """Seconds of the textbook recipe: ``Trainer`` + PEFT LoRA with the same settings, timed the same way."""
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, PrinterCallback, Trainer, TrainingArguments

    lm = setup.ws.model(run)
    t = run.train
    precision = resolve_precision(t.precision)
    with _fresh_adapter(base, run) as peft_model, tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, max_steps=t.steps, per_device_train_batch_size=t.batch_size, learning_rate=t.lr,
            lr_scheduler_type=t.scheduler, seed=t.seed, report_to=[], save_strategy="no", disable_tqdm=True,
            dataloader_pin_memory=False, train_sampling_strategy=t.sampling, bf16=precision == "bf16",
            use_cpu=not torch.cuda.is_available(),
        )  # fmt: skip
        seqs = setup.ws.data(run)[0]
        ds = Dataset.from_list([{"input_ids": list(s.ids), "labels": s.labels()} for s in seqs])
        collator = DataCollatorForSeq2Seq(lm.tokenizer, padding=True, label_pad_token_id=-100)
        trainer = Trainer(model=peft_model, args=args, train_dataset=ds, data_collator=collator)
        trainer.remove_callback(PrinterCallback)  # quiet, as forgetscale's is
        # the window train.train reports as "train": trainer.train() alone (set-up and adapter excluded)
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start


@contextmanager
def _fresh_adapter(base: torch.nn.Module, run: RunConfig) -> Iterator[Any]:
    """A new LoRA adapter on the shared base model, removed on exit."""
    model = train.attach_lora(base, run.lora, run.train.seed)
    try:
        yield model
    finally:
        model.unload()


def _tokens(seqs: list[Sequence], batch_size: int, steps: int) -> float:
    """Non-padding tokens processed in ``steps`` steps (the dataset cycles)."""
    return sum(len(s.ids) for s in seqs) / len(seqs) * batch_size * steps


def _train_flops(model: torch.nn.Module, seqs: list[Sequence], batch_size: int, steps: int) -> float:
    """LoRA training FLOPs of ``steps`` steps: forward (2 per matmul weight per token) + backward to
    activations (2 more; frozen weights need no weight gradients) + causal attention scores both ways.
    The vocabulary projection counts only at labelled positions, the only ones forgetscale projects."""
    head = model.get_output_embeddings().weight.numel()
    body = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)) - head
    cfg = model.config
    mean_len = sum(len(s.ids) for s in seqs) / len(seqs)
    attn = 2 * 2 * (mean_len / 2) * cfg.num_attention_heads * cfg.head_dim * cfg.num_hidden_layers
    target_fraction = sum(s.n_targets for s in seqs) / sum(len(s.ids) for s in seqs)
    per_token = 2 * (2 * body + attn) + 2 * 2 * head * target_fraction
    return _tokens(seqs, batch_size, steps) * per_token


def matmul_peak_flops(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """This machine's matmul rate in ``dtype`` with the current thread settings (best of ``repeats``)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best
