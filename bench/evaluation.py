"""Evaluation and training against their physical floors, and evaluation at growing corpus sizes.

- :func:`eval_vs_bare_forward`: one scheduled evaluation as a study runs it (``ft_loss`` and
  ``task_kl`` on the held-out examples, :func:`forgetscale.task.held_out_metrics`, then the forgetting
  metrics, :func:`forgetscale.forgetting.measure`; merged adapter, hidden reference) against the
  same forward passes with the adapter disabled and no metrics, the floor no evaluation can go below;
- :func:`train_step_vs_bare`: a LoRA training step as the study takes it against a forward and
  backward pass through the frozen base over the very same batches, at the same precision;
- :func:`scale`: evaluation time, reference size and peak memory at 1k-100k corpus tokens;
- :func:`profile_evaluation`: one scheduled evaluation part by part (prefix, batched forwards, LM head,
  metrics; held-out pass and forgetting pass) against each part's FLOP floor at the fp32 matmul rate
  measured in the same process, with the positions it computes, pads and scores.

Each ratio is timed side by side in one process, alternating, medians of repeats.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from forgetscale import forward, train
from forgetscale.config import RunConfig
from forgetscale.data.encode import Sequence
from forgetscale.fold import folded
from forgetscale.forgetting import measure
from forgetscale.forward import forward_batches, plan_batches
from forgetscale.precision import resolve as resolve_precision
from forgetscale.reference import BaseReference, compute_reference
from forgetscale.task import held_out_metrics


def eval_vs_bare_forward(
    peft_model: Any, corpus: list[Sequence], task_ref: BaseReference, batch_size: int, repeats: int = 3
) -> dict[str, Any]:
    """Seconds of one evaluation over the floor's: the study's own evaluation (as ``forgetscale.run`` calls
    it: :func:`~forgetscale.task.held_out_metrics` against ``task_ref``, the base on the held-out examples,
    then :func:`~forgetscale.forgetting.measure` on the corpus, inside :func:`~forgetscale.fold.folded`).

    The floor runs the evaluation's own forward path (length-sorted batches, shared-prefix cache,
    vocabulary projection at scored positions only) over the same sequences with the adapter
    disabled, and computes nothing from the logits. Also timed: the evaluation with the full-logit
    reference and with the adapter unmerged, to show what each shortcut is worth.
    """
    with tempfile.TemporaryDirectory() as tmp:
        refs = {}
        with peft_model.disable_adapter():
            for mode in ("hidden", "logits"):
                refs[mode] = compute_reference(peft_model, corpus, batch_size, Path(tmp) / mode, mode=mode)

        held = list(task_ref.sequences)
        seen: dict[tuple[str, bool], dict[str, float]] = {}  # each variant's metrics, last repeat

        def floor() -> None:
            with peft_model.disable_adapter():
                for seqs in (held, corpus):
                    for _ in forward_batches(peft_model, seqs, batch_size):
                        pass

        def evaluation(mode: str, merge: bool = True) -> Callable[[], None]:
            def run() -> None:
                with folded(peft_model) if merge else contextlib.nullcontext():
                    held_out = held_out_metrics(peft_model, task_ref, batch_size)
                    seen[mode, merge] = {**held_out, **measure(peft_model, refs[mode], batch_size)}

            return run

        times = _alternate(
            {
                "floor": floor,
                "hidden": evaluation("hidden"),
                "logits": evaluation("logits"),
                "hidden_unmerged": evaluation("hidden", merge=False),
            },
            repeats,
        )
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "value": med["hidden"] / med["floor"],
        "target": 1.15,
        "floor_s": med["floor"],
        "evaluation_s": med["hidden"],
        "logits_reference_ratio": med["logits"] / med["floor"],
        "unmerged_ratio": med["hidden_unmerged"] / med["floor"],
        "corpus_tokens": sum(s.n_targets for s in corpus),
        "heldout_tokens": sum(s.n_targets for s in held),
        "times_s": times,
        "metrics": {k: seen["hidden", True][k] for k in ("ft_loss", "task_kl", "forget_ce", "forget_kl")},
    }


def matmul_rate(repeats: int = 5, rows: int = 1024) -> float:
    """fp32 GFLOP/s of one (rows x 576) @ (576 x 1536) matmul, SmolLM2-135M's MLP shape, best of ``repeats``:
    the rate the evaluation's floor is priced at, measured where and when the evaluation runs."""
    x, w = torch.randn(rows, 576), torch.randn(1536, 576)
    F.linear(x, w)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        F.linear(x, w)
        best = min(best, time.perf_counter() - t)
    return 2 * rows * 576 * 1536 / best / 1e9


def evaluation_counts(model: Any, ref: BaseReference, task_ref: BaseReference, batch_size: int) -> dict[str, Any]:
    """Positions one evaluation computes (real and padding), scores, and the forward FLOPs it must spend.

    Per pass (held-out, forgetting) from the batch plan the forward path runs (:func:`plan_batches`); FLOPs
    are 2 x the matmul weights outside the embedding and LM head per computed position (attention's own
    products, a few percent at these lengths, left out) and 2 x d x V per scored position for the head.
    """
    head = model.get_output_embeddings().weight
    body = sum(
        p.numel()
        for n, p in model.named_parameters()
        if p.ndim == 2 and "lora_" not in n and "embed" not in n and p.data_ptr() != head.data_ptr()
    )
    out: dict[str, Any] = {"body_params": body, "head_params": head.numel()}
    for name, r in (("held_out", task_ref), ("forgetting", ref)):
        plan = plan_batches(list(r.sequences), batch_size)
        out[name] = {
            "prefix": plan.prefix,
            "real": plan.real_tokens,
            "padding": plan.padding_tokens,
            "scored": plan.scored,
            "batches": len(plan.batches),
            "body_gflop": 2 * body * plan.real_tokens / 1e9,
            "prefix_gflop": 2 * body * plan.prefix / 1e9,
            "head_gflop": 2 * head.numel() * plan.scored / 1e9,
        }
    return out


@contextlib.contextmanager
def _part_timer(model: Any, fwd: Any = forward) -> Any:
    """Seconds spent in ``fwd``'s prefix pass, its batched forwards and the LM head within them, while open.

    ``fwd`` is the module whose ``prefix_cache`` and ``kept_logits`` the evaluation calls (patched in place,
    restored on exit); the head is timed by hooks on ``model``'s output embeddings."""
    spent = {"prefix": 0.0, "forward": 0.0, "head": 0.0}
    head = model.get_output_embeddings()
    started: list[float] = []
    hooks = [
        head.register_forward_pre_hook(lambda *_: started.append(time.perf_counter())),
        head.register_forward_hook(
            lambda *_: spent.__setitem__("head", spent["head"] + time.perf_counter() - started.pop())
        ),
    ]
    originals = {"prefix_cache": fwd.prefix_cache, "kept_logits": fwd.kept_logits}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] += time.perf_counter() - t

        return run

    fwd.prefix_cache = timed("prefix", originals["prefix_cache"])
    fwd.kept_logits = timed("forward", originals["kept_logits"])
    try:
        yield spent
    finally:
        for k, v in originals.items():
            setattr(fwd, k, v)
        for h in hooks:
            h.remove()


def profile_parts(
    peft_model: Any,
    ref: BaseReference,
    task_ref: BaseReference,
    batch_size: int,
    held_out: Callable[..., Any] = held_out_metrics,
    forgetting: Callable[..., Any] = measure,
    fwd: Any = forward,
) -> dict[str, float]:
    """Seconds of each part of one evaluation as ``forgetscale.run`` takes it (inside :func:`folded`): the
    held-out pass and the forgetting pass, each split into prefix, forwards (the model without its head),
    head, and the rest (metrics, batching, copies). ``held_out``, ``forgetting`` and ``fwd`` are what runs
    it (another implementation can be timed against the current one)."""
    parts: dict[str, float] = {}
    with folded(peft_model):
        for name, fn, r in (("held_out", held_out, task_ref), ("forgetting", forgetting, ref)):
            with _part_timer(peft_model, fwd) as spent:
                t = time.perf_counter()
                fn(peft_model, r, batch_size)
                total = time.perf_counter() - t
            parts |= {
                f"{name}.prefix": spent["prefix"],
                f"{name}.forwards": spent["forward"] - spent["head"],
                f"{name}.head": spent["head"],
                f"{name}.metrics": total - spent["prefix"] - spent["forward"],
            }
    return parts


def profile_evaluation(
    peft_model: Any, ref: BaseReference, task_ref: BaseReference, batch_size: int, repeats: int = 3
) -> dict[str, Any]:
    """Print and return one scheduled evaluation's parts (median seconds over ``repeats`` after a warm-up)
    against their floors: each part's FLOPs (:func:`evaluation_counts`) at the matmul rate measured before
    each repeat (its best). Metrics and bookkeeping have no FLOP floor worth the name (a few passes over a
    vocabulary per position): their floor is shown as 0, so all of their time is above it."""
    counts = evaluation_counts(peft_model, ref, task_ref, batch_size)
    profile_parts(peft_model, ref, task_ref, batch_size)
    runs, rates = [], []
    for _ in range(repeats):
        rates.append(matmul_rate())
        runs.append(profile_parts(peft_model, ref, task_ref, batch_size))
    rate = max(rates)
    seconds = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    floors = {}
    for name in ("held_out", "forgetting"):
        c = counts[name]
        floors |= {
            f"{name}.prefix": c["prefix_gflop"] / rate,
            f"{name}.forwards": (c["body_gflop"] - c["prefix_gflop"]) / rate,
            f"{name}.head": c["head_gflop"] / rate,
            f"{name}.metrics": 0.0,
        }
    total, floor = sum(seconds.values()), sum(floors.values())
    print(f"matmul rate {rate:.0f} GFLOP/s (fp32, best of {repeats} x 5)")
    for name in ("held_out", "forgetting"):
        c = counts[name]
        print(f"{name}: {c['real']} positions computed ({c['prefix']} of them a shared prefix, once) + "
              f"{c['padding']} padding in {c['batches']} batches; {c['scored']} scored")  # fmt: skip
    print(f"{'part':22s} {'seconds':>8s} {'share':>6s} {'floor':>7s} {'x floor':>7s}")
    for k, v in seconds.items():
        ratio = f"{v / floors[k]:7.2f}" if floors[k] > 0 else "      -"
        print(f"{k:22s} {v:8.2f} {v / total:6.1%} {floors[k]:7.2f} {ratio}")
    print(f"{'total':22s} {total:8.2f} {1:6.1%} {floor:7.2f} {total / floor:7.2f}")
    return {"seconds": seconds, "floor_s": floors, "total_s": total, "floor_total_s": floor,
            "value": total / floor, "matmul_gflops": rate, "counts": counts, "runs": runs}  # fmt: skip


def train_step_vs_bare(base: torch.nn.Module, tok: Any, run: RunConfig, seqs: list[Sequence]) -> dict[str, Any]:
    """Seconds of the study's LoRA training steps over a forward+backward through the frozen base.

    The LoRA side is ``train.train`` itself (Trainer, data loading, optimizer, bookkeeping), timed
    step by step from an evaluation callback at every step; its batches are recorded and the bare
    side runs exactly those, with the same loss (projected at labelled positions only) and the same
    precision (bf16 autocast when the run trains in bf16), the input embeddings requiring grad so that
    the backward pass goes through every layer. The first step (warm-up, compilation) is left out.
    """
    steps = run.train.steps
    run = run.model_copy(update={"train": run.train.model_copy(update={"eval_steps": tuple(range(1, steps + 1))})})
    precision = resolve_precision(run.train.precision)
    by_ids = {s.ids: s for s in seqs}
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    stamps: dict[int, float] = {}

    def record(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        if torch.is_grad_enabled() and kwargs.get("input_ids") is not None:  # training forwards only
            batches.append((kwargs["input_ids"].detach().cpu(), kwargs["attention_mask"].detach().cpu()))

    inner = base.get_decoder() if hasattr(base, "get_decoder") else base.model
    handle = inner.register_forward_pre_hook(record, with_kwargs=True)
    peft_model = train.attach_lora(base, run.lora, run.train.seed)
    try:
        train.train(peft_model, tok, run, seqs, lambda _m, step, _t: stamps.__setitem__(step, time.perf_counter()))
    finally:
        handle.remove()
        peft_model.unload()
    lora = [stamps[k] - stamps[k - 1] for k in range(2, steps + 1)]
    bare = []
    base.enable_input_require_grads()
    try:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
        for ids, attn in batches[1:steps]:
            keep = torch.zeros_like(ids, dtype=torch.bool)
            for j in range(len(ids)):
                n = int(attn[j].sum())
                mask = by_ids[tuple(ids[j, :n].tolist())].mask
                keep[j, : n - 1] = torch.tensor(mask[1:n])
            t = time.perf_counter()
            with autocast:
                logits = base(input_ids=ids, attention_mask=attn, logits_to_keep=keep).logits
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids[:, 1:][keep[:, :-1]])
            loss.backward()
            bare.append(time.perf_counter() - t)
    finally:
        base.disable_input_require_grads()
        base.zero_grad(set_to_none=True)
    return {
        "value": sum(lora) / sum(bare),
        "target": 1.25,
        "precision": precision,
        "steps_timed": len(lora),
        "lora_step_s": statistics.median(lora),
        "bare_step_s": statistics.median(bare),
    }


def scale(
    peft_model: Any,
    tok: Any,
    sizes: tuple[int, ...] = (1_000, 10_000, 100_000),
    seq_len: int = 128,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Reference time and size, evaluation time and peak memory at each corpus size (hidden reference).

    The corpus is generated news text (a stand-in for WikiText-103 test, ~280k tokens) cut by the
    corpus protocol into blocks of ``seq_len`` tokens, every position after the first scored.
    """
    blocks = _text_blocks(tok, max(sizes), seq_len)
    rows = []
    for size in sizes:
        corpus = blocks[: max(1, round(size / (seq_len - 1)))]
        with tempfile.TemporaryDirectory() as tmp:
            with _PeakRss() as ref_mem, peft_model.disable_adapter():
                t = time.perf_counter()
                ref = compute_reference(peft_model, corpus, batch_size, Path(tmp) / "r", mode="hidden")
                ref_s = time.perf_counter() - t
            with _PeakRss() as eval_mem, folded(peft_model):
                t = time.perf_counter()
                measure(peft_model, ref, batch_size)
                eval_s = time.perf_counter() - t
            ref_bytes = sum(f.stat().st_size for f in (Path(tmp) / "r").iterdir())
        rows.append(
            {
                "tokens": ref.n_tokens,
                "reference_s": ref_s,
                "evaluation_s": eval_s,
                "evaluation_us_per_token": 1e6 * eval_s / ref.n_tokens,
                "reference_bytes": ref_bytes,
                "reference_peak_mb": ref_mem.peak_mb,
                "evaluation_peak_mb": eval_mem.peak_mb,
            }
        )
    first, last = rows[0], rows[-1]
    return {
        "rows": rows,
        # linear growth: time per token stays flat; bounded memory: peak does not follow the corpus
        "time_per_token_growth": last["evaluation_us_per_token"] / first["evaluation_us_per_token"],
        "peak_memory_growth": max(last["evaluation_peak_mb"], 1.0) / max(first["evaluation_peak_mb"], 1.0),
        "token_growth": last["tokens"] / first["tokens"],
    }


def _alternate(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each function, run in turn ``repeats`` times after one untimed warm-up round."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return times


def _text_blocks(tok: Any, tokens: int, seq_len: int) -> list[Sequence]:
    """Consecutive ``seq_len``-token blocks of generated news text, at least ``tokens`` scored positions."""
    from forgetscale.data.synthetic import generate

    ids: list[int] = []
    seed = 0
    need = (tokens // (seq_len - 1) + 1) * seq_len
    while len(ids) < need:
        text = "\n\n".join(e.get("text") or "" for e in generate("news", 200, seed=seed))
        ids += tok(text, add_special_tokens=False)["input_ids"]
        seed += 1
    mask = (False,) + (True,) * (seq_len - 1)
    return [Sequence(tuple(ids[i : i + seq_len]), mask) for i in range(0, need - seq_len + 1, seq_len)]


class _PeakRss:
    """Peak resident memory above the level at entry, sampled every 10 ms (Linux /proc)."""

    def __enter__(self) -> _PeakRss:
        self.start = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())

    @property
    def peak_mb(self) -> float:
        return self.peak - self.start


def _rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def main() -> None:
    """``python -m bench.evaluation``: :func:`profile_evaluation` on the default study's first run (rank 4),
    after two training steps so that the adapter has moved (an adapter at identity costs the same)."""
    from forgetscale.config import load_config
    from forgetscale.console import quiet_libraries
    from forgetscale.models import cache_dir
    from forgetscale.workspace import Workspace

    quiet_libraries()
    study = load_config(preset="default", overrides=["sweep.lora.rank=[4]", "train.steps=2"])
    run = next(iter(study.runs()))
    ws = Workspace(cache_dir())
    lm = ws.model(run)
    ref, task_ref = ws.reference(run), ws.task_reference(run)  # the base's, before the adapter exists
    peft_model = train.attach_lora(lm.model, run.lora, run.train.seed)
    train.train(peft_model, lm.tokenizer, run, ws.data(run)[0], lambda *a: None)
    profile_evaluation(peft_model, ref, task_ref, run.forgetting.batch_size)


if __name__ == "__main__":
    main()
