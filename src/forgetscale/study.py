"""The study pipeline: validate, prepare shared inputs once, run what is not done, fit.

Everything that can be wrong with the input (config, model, datasets, corpus)
is checked before the store is opened, so bad input never leaves a
half-written study behind.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgetscale.config import RunConfig, StudyConfig, canonical_json
from forgetscale.data.encode import Sequence, encode_example, fingerprint
from forgetscale.errors import UserError

if TYPE_CHECKING:
    from forgetscale.executors import Executor
    from forgetscale.forgetting import BaseReference
    from forgetscale.models import LoadedModel
    from forgetscale.store import Store

Log = Callable[[str], None]


@dataclass
class Workspace:
    """Loads each base model, dataset and base reference once per process and hands them out."""

    cache: Path
    log: Log = lambda _msg: None
    _models: dict[str, LoadedModel] = field(default_factory=dict)
    _data: dict[str, tuple[list[Sequence], list[Sequence]]] = field(default_factory=dict)
    _refs: dict[str, BaseReference] = field(default_factory=dict)
    _raw: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = field(default_factory=dict)
    _base_evals: dict[str, dict[str, float]] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    """Wall seconds spent per set-up phase in this process (for the benchmark's breakdown)."""

    def _phase(self, name: str, since: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - since

    def model(self, run: RunConfig) -> LoadedModel:
        from forgetscale.models import load_model

        key = canonical_json(run.model)
        if key not in self._models:
            self._models.clear()  # one base model in memory at a time
            t = time.perf_counter()
            self._models[key] = load_model(run.model)
            self._phase("load_model", t)
            self.log(f"loaded base model {run.model.name} in {time.perf_counter() - t:.1f}s")
        return self._models[key]

    def data(self, run: RunConfig) -> tuple[list[Sequence], list[Sequence]]:
        """Encoded (train, held-out) sequences for the run's dataset."""
        key = self._data_key(run)
        if key not in self._data:
            d = run.data
            train, held = self.raw_data(run)
            tok = self.model(run).tokenizer
            enc = []
            for name, part in (("train", train), ("held-out", held)):
                seqs = [s for s in (encode_example(e, tok, run.train.seq_len) for e in part) if s is not None]
                if not seqs:
                    raise UserError(f"dataset {d.dataset}: no {name} example has a token to train on")
                enc.append(seqs)
            self._data[key] = (enc[0], enc[1])
        return self._data[key]

    @staticmethod
    def _data_key(run: RunConfig) -> str:
        """What the encoded (train, held-out) sequences depend on."""
        return json.dumps([canonical_json(run.data), run.train.seq_len, canonical_json(run.model)])

    def raw_data(self, run: RunConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(train, held-out) examples before tokenization: checks the dataset without loading a model."""
        from forgetscale.data.sources import load_splits

        d = run.data
        key = canonical_json(d)
        if key not in self._raw:
            self._raw[key] = load_splits(d.dataset, d.n_train, d.n_heldout, d.seed, d.split)
        return self._raw[key]

    def reference(self, run: RunConfig) -> BaseReference:
        """The base reference for the run's (model, corpus), from the disk cache when present."""
        from forgetscale.data.corpus import build_corpus
        from forgetscale.forgetting import BaseReference

        memo = canonical_json(run.model) + canonical_json(run.forgetting) + json.dumps(run.lora.target_modules)
        if memo in self._refs:
            return self._refs[memo]
        lm = self.model(run)
        f = run.forgetting
        mode = reference_mode(run, lm.model)
        t = time.perf_counter()
        seqs = build_corpus(f, lm.tokenizer, lm.model, lm.fingerprint, self.cache)
        self._phase("forgetting_corpus", t)
        key = reference_key(lm.fingerprint, lm.tokenizer, seqs, run.model.dtype, f.top_k, mode)
        directory = self.cache / "refs" / key
        ref = cached_reference(directory, seqs, self.log)
        if ref is None:
            t = time.perf_counter()
            store_reference(lm.model, seqs, f.batch_size, directory, f.top_k, mode)
            self._phase("base_reference", t)
            self.log(f"base reference: {sum(s.n_targets for s in seqs)} tokens in {time.perf_counter() - t:.1f}s")
            ref = BaseReference.load(directory, tuple(seqs))
        self._refs[memo] = ref
        return ref

    def base_evaluation(self, run: RunConfig, compute: Callable[[], dict[str, float]]) -> dict[str, float]:
        """The step-0 measurement shared by every run on the same (model, data, corpus).

        A fresh LoRA adapter is the identity (B = 0), so every run of a sweep on
        one dataset starts from the same numbers: ``compute`` runs once per key.
        """
        key = self._data_key(run) + canonical_json(run.forgetting)  # the held-out data and the base reference
        if key not in self._base_evals:
            self._base_evals[key] = compute()
        return dict(self._base_evals[key])

    def data_fingerprint(self, run: RunConfig) -> str:
        train, held = self.data(run)
        return fingerprint(train + held)


def reference_mode(run: RunConfig, model: Any) -> str:
    """The exact reference mode a run gets: ``forgetting.reference``, except that a LoRA on the LM
    head changes the head, so the hidden mode (valid only for the base's head) falls back to logits."""
    from forgetscale.forgetting import head_module_name

    if run.forgetting.reference == "hidden" and head_module_name(model) in run.lora.target_modules:
        return "logits"
    return run.forgetting.reference


def reference_key(
    model_fingerprint: str, tok: Any, seqs: list[Sequence], dtype: str, top_k: int | None, mode: str = "logits"
) -> str:
    """The cache key of a base reference: everything its numbers depend on.

    Shared by studies, ``forgetscale forgetting`` and :class:`forgetscale.ForgettingCallback`,
    so that each reuses a reference any of them computed.
    """
    from forgetscale.models import tokenizer_fingerprint

    return "-".join(
        [
            model_fingerprint.split(":")[-1][:16],
            tokenizer_fingerprint(tok),
            fingerprint(seqs),
            dtype,
            f"k{top_k}-tail2" if top_k else ("exact" if mode == "logits" else mode),  # tail2: the tail summed directly
        ]
    )


_PER_POSITION = ("entropy", "top1", "logp", "topk_idx", "topk_logp", "tail_logp", "mean_emb")
"""BaseReference arrays with one row per target position (checked when a cached reference is loaded)."""


def cached_reference(directory: Path, seqs: list[Sequence], log: Log) -> BaseReference | None:
    """The base reference cached in ``directory``; None when there is none, or when it is damaged
    (truncated or garbage files, rows that do not fit the corpus): it is a cache, so a damaged
    entry is discarded, to be computed again, rather than failing the command."""
    import numpy as np

    from forgetscale.forgetting import BaseReference

    if not directory.exists():
        return None
    try:
        # the zip's own CRCs first: np.load also leaves its file open when the archive is damaged
        with zipfile.ZipFile(directory / "meta.npz") as z:
            bad = z.testzip()
        if bad is not None:
            raise ValueError(f"meta.npz member {bad} fails its CRC check")
        ref = BaseReference.load(directory, tuple(seqs))
        for name in _PER_POSITION:
            a = getattr(ref, name, None)
            if a is not None and (a.ndim == 0 or a.shape[0] != ref.n_tokens):
                raise ValueError(f"{name} has {a.shape} rows for {ref.n_tokens} positions")
        if not np.isfinite(ref.entropy).all():
            raise ValueError("non-finite base entropy")
        stored = [n for n in ("logp", "mean_emb", "topk_idx") if getattr(ref, n, None) is not None]
        if len(stored) != 1:  # a file of the reference is missing (or one too many)
            raise ValueError(f"the base distribution is stored as {stored or 'nothing'}")
        parts = {"topk_idx": ("topk_logp", "tail_logp"), "mean_emb": ("head_check",)}.get(stored[0], ())
        if any(getattr(ref, n, None) is None for n in parts):
            raise ValueError(f"{stored[0]} without {', '.join(parts)}")
        return ref
    except Exception as e:  # whatever is wrong with a cache entry, it is recomputed
        log(f"base reference cache {directory.name} is damaged ({type(e).__name__}: {e}); computing it again")
        from forgetscale.models import discard

        discard(directory)
        return None


def store_reference(
    model: Any, seqs: list[Sequence], batch_size: int, directory: Path, top_k: int | None, mode: str = "logits"
) -> None:
    """Compute a base reference into ``directory``; a half-written one never carries the final name."""
    from forgetscale.forgetting import compute_reference

    tmp = directory.with_name(directory.name + f".tmp{time.time_ns()}")
    compute_reference(model, seqs, batch_size, tmp, top_k, mode)
    if not directory.exists():  # complete references only ever carry the final name
        tmp.rename(directory)
    else:  # another process finished the same reference first
        shutil.rmtree(tmp, ignore_errors=True)


def measure_forgetting(
    base: str,
    data: str,
    adapter: Path | None = None,
    model: Path | None = None,
    seq_len: int = 128,
    batch_size: int = 8,
    top_k: int | None = None,
    cache: Path | None = None,
    log: Log = lambda _m: None,
    reference: str = "hidden",
) -> dict[str, float]:
    """Forgetting of an adapter or a fully fine-tuned model against its base, on corpus ``data``.

    The base reference is taken before the adapter is attached (and cached), so
    the base model is never silently changed underneath it.
    """
    from forgetscale.config import ForgettingConfig, ModelConfig
    from forgetscale.data.corpus import check_corpus
    from forgetscale.forgetting import head_signature, measure, same_head
    from forgetscale.merge import merged
    from forgetscale.models import cache_dir, check_adapter, load_adapter, load_model, resolve

    run = RunConfig(
        model=ModelConfig(name=base),
        forgetting=ForgettingConfig(
            corpus=data, seq_len=seq_len, batch_size=batch_size, top_k=top_k, reference=reference
        ),
    )
    try:
        # every input is checked before the first model loads: bad input fails at once
        if adapter is not None:
            check_adapter(Path(adapter), "--adapter")
        else:
            resolve(ModelConfig(name=str(model)), "--model")
        resolve(run.model)
        check_corpus(run.forgetting)
        ws = Workspace(cache or cache_dir(), log)
        ref = ws.reference(run)
        if adapter is not None:
            tuned = load_adapter(ws.model(run).model, Path(adapter), "--adapter")
        else:
            tuned = load_model(ModelConfig(name=str(model)), "--model").model
    except UserError as e:  # the shared loaders name config keys; here the user typed options
        raise UserError(str(e).replace("model.name)", "--base)").replace("forgetting.corpus", "--data")) from None
    if ref.mode == "hidden" and not same_head(head_signature(tuned), ref.head_check):
        log("the fine-tune changed the LM head: using a full-logit base reference instead of the hidden one")
        run = run.model_copy(update={"forgetting": run.forgetting.model_copy(update={"reference": "logits"})})
        with tuned.disable_adapter() if adapter is not None else contextlib.nullcontext():  # the base's view
            ref = ws.reference(run)
    with merged(tuned):
        return measure(tuned, ref, batch_size)


def fix_precision(study: StudyConfig, out: Path, cache: Path) -> StudyConfig:
    """``study`` with ``train.precision: auto`` replaced by a concrete precision, once per study.

    The value recorded when the study in ``out`` was created wins; a new study
    takes this machine's measured choice (:mod:`forgetscale.precision`). So run
    ids, resume and the numbers do not depend on the machine a study resumes on.
    """
    swept = "train.precision" in study.sweep
    if study.train.precision != "auto" and not (swept and "auto" in study.sweep["train.precision"]):
        return study
    recorded = None
    if (out / "study.sqlite").is_file():
        from forgetscale.store import open_store

        with open_store(out, create=False) as store:
            recorded = ((store.get_meta("study") or {}).get("train") or {}).get("precision")
    if recorded not in ("fp32", "bf16"):
        from forgetscale.precision import resolve

        recorded = resolve("auto", cache)
    update: dict[str, Any] = {}
    if study.train.precision == "auto":
        update["train"] = study.train.model_copy(update={"precision": recorded})
    if swept:
        axis = tuple(recorded if v == "auto" else v for v in study.sweep["train.precision"])
        update["sweep"] = {**study.sweep, "train.precision": tuple(dict.fromkeys(axis))}
    return study.model_copy(update=update)


def prepare_study(study: StudyConfig, ws: Workspace) -> list[RunConfig]:
    """Validate every input of ``study`` and warm the shared ones; writes nothing to the study directory.

    Raises:
        UserError: anything wrong with the config, model, datasets or corpus.
    """
    runs = study.runs()
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise UserError(
            "the sweep produces duplicate runs (an axis repeats a value, or sweeps a mitigation setting that "
            "a swept mitigation.kind does not use, e.g. mitigation.kl_weight for kind none)"
        )
    from forgetscale.data.corpus import check_corpus
    from forgetscale.mitigation import check_replay
    from forgetscale.models import resolve
    from forgetscale.train import check_targets

    for r in runs:  # cheap checks first: a typo should not wait for a model to load
        resolve(r.model)
        ws.raw_data(r)
        check_corpus(r.forgetting)
        check_replay(r)
    for r in runs:  # then validate and warm every shared input before writing anything
        ws.data(r)
        ws.reference(r)
        check_targets(ws.model(r).model, r.lora)
        if r.mitigation.kind == "replay":  # sampled here, so that Ray ships it with the corpora
            _replay(r, ws)
    return runs


def run_study(
    study: StudyConfig, out: Path, ws: Workspace, log: Log = print, *, executor: Executor
) -> list[dict[str, Any]]:
    """Run every run of ``study`` not yet done in ``out``'s store on ``executor``; return the final run table.

    The caller holds ``out``'s run lock (:func:`forgetscale.lock.hold`): one runner per directory, and
    this process is the store's only writer, whatever the executor (:mod:`forgetscale.executors`).
    """
    from forgetscale.store import open_store

    runs = prepare_study(study, ws)  # the Workspace caches: cheap when the caller prepared already
    ids = [r.run_id for r in runs]
    with open_store(out) as store:
        store.set_meta("study", study.model_dump(mode="json"))
        store.set_meta("run_ids", ids)
        for r in runs:
            store.register_run(r.run_id, r.model_dump(mode="json"), r.data.dataset, r.lora.rank)
        todo = [r for r in runs if store.run_status(r.run_id) != "done"]
        if len(todo) < len(runs):
            log(f"{len(runs) - len(todo)} of {len(runs)} runs already done; skipping them")
        executor.run(todo, ws, store, out, log)
        store.set_meta("phases", dict(ws.phases))
        return summary_table(store, ids)


def execute_run(run: RunConfig, ws: Workspace, store: Store, adapter_dir: Path, progress: _Progress) -> None:
    """Train one run from scratch, committing a measurement row at every scheduled step."""
    from forgetscale import train
    from forgetscale.forgetting import measure, sequence_loss
    from forgetscale.merge import merged
    from forgetscale.mitigation import scaled_rows

    lm = ws.model(run)
    train_seqs, held = ws.data(run)
    ref = ws.reference(run)
    bs = run.forgetting.batch_size
    replay = _replay(run, ws) if run.mitigation.kind == "replay" else None  # sampled by the base, unadapted
    peft_model = train.attach_lora(lm.model, run.lora, run.train.seed)
    try:
        P = train.trainable_parameters(peft_model)
        precision = train.resolve_precision(run.train.precision)
        store.start_run(run.run_id, P, provenance(lm.fingerprint, ws.data_fingerprint(run), ref, precision))

        def metrics(model: Any) -> dict[str, float]:
            with merged(model):  # W + s BA once per evaluation, not two extra matmuls per layer and call
                return {"ft_loss": sequence_loss(model, held, bs), **measure(model, ref, bs)}

        def evaluate(model: Any, step: int, tokens: int) -> None:
            if step == 0 and train.is_identity(model):
                m = ws.base_evaluation(run, lambda: metrics(model))
            else:
                m = metrics(model)
            ft_loss = m.pop("ft_loss")
            if not all(math.isfinite(v) for v in (ft_loss, m["forget_ce"], m["forget_kl"])):
                raise train.Diverged(
                    f"run {run.run_id}: training diverged (non-finite outputs at step {step}); lower train.lr"
                )
            row = {"step": step, "tokens": tokens, "ft_loss": ft_loss, "n_eval_tokens": m.pop("n_tokens"), **m}
            store.add_measurement(run.run_id, row)
            progress.step(step, run.train.steps, row)
            for scaled in scaled_rows(run, model, step, tokens, metrics):  # mitigation.kind: rescale
                store.add_measurement(run.run_id, scaled)

        try:
            timings = train.train(peft_model, lm.tokenizer, run, train_seqs, evaluate, replay)
            train.save_adapter(peft_model, adapter_dir)
        except BaseException as e:
            store.fail_run(run.run_id, f"{type(e).__name__}: {e}")
            raise
        store.finish_run(run.run_id, timings)
    finally:
        train.detach_lora(peft_model)


def _replay(run: RunConfig, ws: Workspace) -> list[Sequence]:
    from forgetscale.mitigation import replay_sequences

    lm = ws.model(run)
    return replay_sequences(run, lm.tokenizer, lm.model, lm.fingerprint, ws.cache)


def summary_table(store: Store, run_ids: list[str]) -> list[dict[str, Any]]:
    """One row per run: its last measurement and timings."""
    runs = {r["run_id"]: r for r in store.runs()}
    out = []
    for rid in run_ids:
        r = runs[rid]
        rows = store.measurements(rid)
        last = rows[-1] if rows else {}
        out.append(
            {
                "run_id": rid,
                "dataset": r["dataset"],
                "rank": r["rank"],
                "P": r["P"],
                "status": r["status"],
                "step": last.get("step"),
                "ft_loss": last.get("ft_loss"),
                "forget_ce": last.get("forget_ce"),
                "forget_kl": last.get("forget_kl"),
                "seconds": (r["timings"] or {}).get("total"),
            }
        )
    return out


def provenance(model_fp: str, data_fp: str, ref: BaseReference, precision: str) -> dict[str, Any]:
    """What produced a run's numbers: versions, git state, device, fingerprints."""
    import torch

    versions = {}
    for pkg in ("forgetscale", "torch", "transformers", "peft", "accelerate", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "versions": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()}",
        "train_precision": precision,
        "git": _git_state(),
        "model_fingerprint": model_fp,
        "data_fingerprint": data_fp,
        "corpus_fingerprint": fingerprint(ref.sequences),
        "corpus_tokens": ref.n_tokens,
    }


def _git_state() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


@dataclass
class _Progress:
    """Prints ``run i/n, step, ETA`` lines; the ETA extrapolates the pace of steps so far."""

    total_steps: int
    log: Log
    label: str = ""
    done_steps: int = 0
    _t0: float = field(default_factory=time.perf_counter)
    _last_step: int = 0

    def step(self, step: int, steps: int, row: dict[str, Any]) -> None:
        if step < self._last_step or step == 0:
            self._last_step = 0
        self.done_steps += step - self._last_step
        self._last_step = step
        elapsed = time.perf_counter() - self._t0
        eta = elapsed / self.done_steps * (self.total_steps - self.done_steps) if self.done_steps else float("nan")
        self.log(
            f"[{self.label}] step {step:>4}/{steps}  ft_loss {row['ft_loss']:.4f}  "
            f"forget_ce {row['forget_ce']:.4f}{_se(row, 'forget_ce', 4)}  "
            f"forget_kl {row['forget_kl']:.5f}{_se(row, 'forget_kl', 5)}  "
            f"elapsed {_hms(elapsed)}  ETA {_hms(eta)}"
        )


def _se(row: dict[str, Any], key: str, digits: int) -> str:
    """`` ± se`` for a metric whose standard error the row carries, else nothing."""
    se = row.get(f"{key}_se")
    return "" if se is None or se != se else f" ± {se:.{digits}f}"


def _hms(seconds: float) -> str:
    if seconds != seconds:  # NaN before the first step
        return "?"
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s"
