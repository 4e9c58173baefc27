"""The public Python API: one function per ``forgetscale`` command, and the pieces to use in your own training.

Re-exported from :mod:`forgetscale` (``forgetscale.measure_forgetting`` and so on). Each command is
one call here:

- ``forgetscale run``: :func:`run_study` (sweep, probes, fits, report);
- ``forgetscale forgetting``: :func:`measure_forgetting`;
- ``forgetscale probe``: :func:`probe`;
- ``forgetscale fit``: :func:`fit` (a study directory) or :func:`fit_csv` (a CSV file);
- ``forgetscale predict``, ``plan``, ``compare``, ``report``: :func:`predict`, :func:`plan`,
  :func:`compare`, :func:`write_report`.

Besides: :func:`load_results` (a study's tables), :func:`fit_laws` (the laws on rows you hold),
:func:`findings` (F1-F6 of a fitted study), :class:`ForgettingCallback` and :func:`load_base`.
The study-directory functions live in :mod:`forgetscale.results`. Importing this module loads no
torch: :func:`measure_forgetting`, :func:`run_study`, :func:`probe`, :func:`load_base` and
:class:`ForgettingCallback` import it when used; reading and fitting a study never needs it.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from forgetscale.config import ForgettingConfig, ModelConfig, RunConfig, StudyConfig, load_config
from forgetscale.console import format_metrics
from forgetscale.errors import UserError
from forgetscale.laws import fit_study
from forgetscale.models import cache_dir
from forgetscale.report.command import write_report
from forgetscale.results import (
    Results,
    compare,
    findings,
    fit,
    fit_csv,
    flatten_fit,
    load_results,
    plan,
    predict,
)

if TYPE_CHECKING:
    from forgetscale.callback import ForgettingCallback
    from forgetscale.laws import FitResult
    from forgetscale.study import StudyRun

__all__ = [
    "ForgettingCallback",
    "ForgettingResult",
    "Results",
    "compare",
    "findings",
    "fit",
    "fit_csv",
    "fit_laws",
    "flatten_fit",
    "lm_eval_flips",
    "load_base",
    "load_results",
    "measure_forgetting",
    "plan",
    "predict",
    "probe",
    "run_study",
    "write_report",
]
log = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    if name == "ForgettingCallback":  # it subclasses transformers' TrainerCallback: torch only when asked for
        from forgetscale.callback import ForgettingCallback

        return ForgettingCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class ForgettingResult:
    """Forgetting of a fine-tuned model against its base on one corpus (nats per token).

    ``forget_ce = base_entropy + forget_kl``. ``*_se`` are standard errors over the
    corpus' sequences (None where the installed metrics do not provide them). The rest is
    llama.cpp's ``--kl-divergence`` summary (:meth:`forgetscale.forgetting.Evaluation.summary`):
    ``kl_percentiles`` (max, 99.9%, ..., median, ..., min of the per-position KL), ``top1_agree``
    (the share of positions whose top token is the base's), ``dp_mean``/``dp_rms``/``dp_percentiles``
    (llama.cpp's Δp = p_ft - p_base of the corpus' next token), ``dp_top1_mean``/``dp_top1_rms`` (the same
    difference at the base's top token), ``forget_rkl`` (reverse KL(p_ft || p_base); a full-logit reference
    only). ``top`` lists the corpus sequences with the largest mean KL when asked for
    (``{seq, tokens, kl, text}``).

    >>> r = ForgettingResult(forget_ce=2.1, forget_kl=0.2, base_entropy=1.9, forget_top1_ce=1.0,
    ...                      data_loss=3.0, n_tokens=1000, forget_ce_se=0.05, forget_kl_se=0.01)
    >>> print(r)
    forget_ce 2.1000 ± 0.0500  forget_kl 0.20000 ± 0.01000  base_entropy 1.9000  forget_top1_ce 1.0000  data_loss 3.0000
    >>> r.as_dict()["forget_kl"]
    0.2
    """

    forget_ce: float
    forget_kl: float
    base_entropy: float
    forget_top1_ce: float
    data_loss: float
    n_tokens: int
    forget_ce_se: float | None = None
    forget_kl_se: float | None = None
    forget_rkl: float | None = None
    forget_rkl_se: float | None = None
    kl_p50: float | None = None
    kl_p99: float | None = None
    kl_percentiles: dict[str, float] | None = None
    top1_agree: float | None = None
    top1_agree_se: float | None = None
    dp_mean: float | None = None
    dp_mean_se: float | None = None
    dp_rms: float | None = None
    dp_rms_se: float | None = None
    dp_percentiles: dict[str, float] | None = None
    dp_top1_mean: float | None = None
    dp_top1_mean_se: float | None = None
    dp_top1_rms: float | None = None
    n_sequences: int | None = None
    reference: str | None = None
    top: list[dict[str, Any]] | None = None

    @classmethod
    def from_metrics(cls, m: Mapping[str, Any]) -> ForgettingResult:
        """From :func:`forgetscale.forgetting.measure`'s dict (extra keys ignored)."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in m.items() if k in names})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return format_metrics(self.as_dict())


def measure_forgetting(
    base: str | None,
    tuned: str | Path,
    corpus: str | None = None,
    *,
    kind: Literal["auto", "adapter", "model"] = "auto",
    seq_len: int | None = None,
    batch_size: int | None = None,
    top_k: int | None = None,
    reference: Literal["hidden", "logits"] | None = None,
    cache: str | Path | None = None,
    like: str | Path | None = None,
    top: int = 0,
    reverse: bool = False,
    dtype: Literal["float32", "bfloat16", "float16"] | None = None,
    device: Literal["auto", "cpu", "cuda", "mps"] | None = None,
) -> ForgettingResult:
    """Forgetting of a PEFT adapter or a fully fine-tuned model against its base model: ``forgetscale forgetting``.

    The base reference is computed once per (base, corpus, tokenizer) before any adapter is
    attached (so the base is never silently changed underneath it) and cached; the fine-tuned
    model is then measured against it in the base's dtype, with its adapter folded into its weights for the
    evaluation (:func:`forgetscale.fold.folded`; the base weights are never written).

    Args:
        base: the base model: ``smollm2-135m-instruct`` (built in), a hub id, a local
            directory or a ``.gguf`` file. None with ``like``.
        tuned: a PEFT adapter directory or a fully fine-tuned model directory.
        corpus: ``self`` (the default), ``wikitext``, a text file or ``hf:NAME[:CONFIG[:SPLIT]]``.
        kind: what ``tuned`` is; ``auto``: an adapter when it holds ``adapter_config.json``.
        seq_len: block length for text corpora (default 128).
        batch_size: sequences per forward pass (default 8).
        top_k: compact reference (top-K base log-probs + tail; a KL lower bound); None: exact.
        reference: the exact reference's storage: ``hidden`` (the default; d floats per token; full
            logits when the fine-tune changed the LM head) or ``logits``.
        cache: cache directory (default ``FORGETSCALE_CACHE`` or the user cache).
        like: a study directory: measure on exactly its base, corpus and settings (its stored run
            config: model and dtype, ``forgetting.*``, the reference mode, the batch size), so that a
            stored row can be checked by hand. Excludes ``base``, ``corpus`` and the settings.
        top: list this many corpus sequences with the largest mean KL (``ForgettingResult.top``).
        reverse: require the reverse KL(p_ft || p_base), which only a full-logit reference gives.
        dtype: the dtype both models are loaded and evaluated in (default ``float32``; with ``like``, the
            study's unless given).
        device: where both run (default ``auto``: cuda, then mps, then cpu).

    Returns:
        A :class:`ForgettingResult`.

    Raises:
        UserError: a model, adapter, corpus or study that cannot be used, settings given with ``like``,
            or ``reverse`` without a full-logit reference (the message says why).

    Example::

        >>> import forgetscale
        >>> r = forgetscale.measure_forgetting("smollm2-135m-instruct", "runs/x/adapters/abc", "self")  # doctest: +SKIP
        >>> print(r)  # doctest: +SKIP
        forget_ce 1.9731 ± 0.0412  forget_kl 0.04511 ± 0.00620  base_entropy 1.9280 ...
    """
    import contextlib

    from forgetscale.data.corpus import check_corpus
    from forgetscale.fold import folded
    from forgetscale.forgetting import evaluate
    from forgetscale.models import check_adapter, load_adapter, load_model, resolve
    from forgetscale.reference import head_signature, same_head
    from forgetscale.texts import corpus_texts, top_sequences
    from forgetscale.workspace import Workspace

    path = Path(tuned)
    adapter = (path / "adapter_config.json").is_file() if kind == "auto" else kind == "adapter"
    if like is not None:
        options = (("--base", base), ("--data", corpus), ("--seq-len", seq_len), ("--batch-size", batch_size),
                   ("--top-k", top_k), ("--reference", reference))
        given = [o for o, v in options if v is not None]
        if given:
            raise UserError(f"--like {like} takes the base, corpus and settings from the study; "
                            f"drop {', '.join(given)}")
        run = _like_run(Path(like), path)
    else:
        if base is None:
            raise UserError("forgetting needs --base MODEL (or --like STUDY_DIR)")
        run = RunConfig(
            model=ModelConfig(name=base, dtype=dtype or "float32"),
            forgetting=ForgettingConfig(corpus=corpus or "self", seq_len=seq_len or 128, batch_size=batch_size or 8,
                                        top_k=top_k, reference=reference or "hidden"),
        )  # fmt: skip
    # with `like`, the study's own dtype unless another is asked for (the same adapter, measured in bf16)
    model_update = {k: v for k, v in (("dtype", dtype), ("device", device)) if v is not None}
    if model_update:
        run = run.model_copy(update={"model": run.model.model_copy(update=model_update)})
    if reverse:
        _check_reverse(run, like)
    try:
        # every input is checked before the first model loads: bad input fails at once
        if adapter:
            check_adapter(path, "--adapter")
        else:
            resolve(ModelConfig(name=str(path)), "--model")
        resolve(run.model)
        check_corpus(run.forgetting)
        ws = Workspace(Path(cache) if cache is not None else cache_dir())
        ref = ws.reference(run)
        if adapter:
            model = load_adapter(ws.model(run).model, path, "--adapter")
        else:
            # the fine-tuned model in the base's dtype and on its device: the reference serves no other
            model = load_model(ModelConfig(name=str(path), dtype=run.model.dtype, device=run.model.device),
                               "--model").model  # fmt: skip
    except UserError as e:  # the shared loaders name config keys; here the caller named options
        raise UserError(str(e).replace("model.name)", "--base)").replace("forgetting.corpus", "--data")) from None
    if ref.mode == "hidden" and not same_head(head_signature(model), ref.head_check):
        log.info("the fine-tune changed the LM head: using a full-logit base reference instead of the hidden one")
        run = run.model_copy(update={"forgetting": run.forgetting.model_copy(update={"reference": "logits"})})
        with model.disable_adapter() if adapter else contextlib.nullcontext():  # the base's view
            ref = ws.reference(run)
    with folded(model):
        ev = evaluate(model, ref, run.forgetting.batch_size)
    found = top_sequences(ev.sequence_kl(), corpus_texts(ref.sequences, ws.model(run).tokenizer), top,
                          ev.counts.astype(int).tolist()) if top > 0 else None  # fmt: skip
    return ForgettingResult.from_metrics(
        {**ev.row(), **ev.summary(), "n_sequences": len(ev.counts), "reference": ref.mode, "top": found}
    )


def _check_reverse(run: RunConfig, like: str | Path | None) -> None:
    """Raise the one-line error for a reverse KL asked of a reference that cannot give it."""
    f = run.forgetting
    if f.top_k is None and f.reference == "logits":
        return
    what = f"the top-{f.top_k} reference keeps only {f.top_k} base log-probs per token" if f.top_k else \
        "the hidden reference keeps only the base's expected output embedding per token, not its distribution"
    if like is not None:
        raise UserError(f"--reverse: reverse KL(p_ft || p_base) needs the base's full distribution and {what}; "
                        f"the study {like} was measured so: rerun it with --set forgetting.reference=logits"
                        + (" --set forgetting.top_k=null" if f.top_k else ""))  # fmt: skip
    raise UserError(f"--reverse: reverse KL(p_ft || p_base) needs the base's full distribution and {what}; "
                    "use --reference logits (forgetting.reference=logits in a study)"
                    + (" without --top-k" if f.top_k else ""))  # fmt: skip


def _like_run(directory: Path, tuned: Path) -> RunConfig:
    """The run config whose corpus and settings ``forgetscale forgetting --like DIR`` measures with: the run
    whose adapter ``tuned`` is (``DIR/adapters/<run_id>``), else the one every run of the study shares.

    Raises:
        UserError: no study in ``directory``, no readable run config, or runs that differ in model or
            forgetting settings with ``tuned`` not one of the study's adapters.
    """
    from pydantic import ValidationError

    from forgetscale.store import open_study

    with open_study(directory) as store:
        stored = [(r["run_id"], r["config"]) for r in store.runs()]
    runs: dict[str, RunConfig] = {}
    for rid, config in stored:
        if not config or config.get("source") == "ForgettingCallback":
            continue  # a callback's run records its settings, not a run config
        try:
            runs[rid] = RunConfig.model_validate(config)
        except ValidationError as e:
            raise UserError(f"--like {directory}: run {rid}'s stored config cannot be read "
                            f"({e.errors()[0]['loc']}: {e.errors()[0]['msg']})") from None  # fmt: skip
    if not runs:
        raise UserError(f"--like {directory}: the study holds no run config (runs of `forgetscale run`)")
    try:
        own = tuned.resolve().relative_to((directory / "adapters").resolve()).parts[0]
    except (ValueError, IndexError):
        own = None
    if own in runs:
        return runs[own]
    settings = {json.dumps([r.model.model_dump(mode="json"), r.forgetting.model_dump(mode="json"),
                            r.lora.target_modules], sort_keys=True) for r in runs.values()}  # fmt: skip
    if len(settings) > 1:
        raise UserError(f"--like {directory}: the study's runs differ in model or forgetting settings; pass an "
                        f"adapter from {directory / 'adapters'}/<run_id> to take that run's")  # fmt: skip
    return next(iter(runs.values()))


def run_study(
    config: StudyConfig | str | Path | None = None,
    out: str | Path | None = None,
    *,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    cache: str | Path | None = None,
    dry_run: bool = False,
) -> StudyRun:
    """Run a forgetting study, resumably, then probe, fit the laws and write the report: ``forgetscale run``.

    Progress (one line per run and scheduled step, with its ETA) goes to the ``forgetscale`` loggers at
    level INFO; :func:`forgetscale.console.log_to_stderr` shows it as the command does.

    Args:
        config: a :class:`forgetscale.config.StudyConfig`, or a study YAML file; None: ``preset``.
        out: the study directory (default ``runs/<study name>``).
        preset: ``default``, ``smoke``, ``paper``, ... (with a file or None).
        overrides: ``key=value`` settings that win over the file and preset (with a file or None).
        cache: the cache directory (default ``FORGETSCALE_CACHE`` or the user cache).
        dry_run: validate and return the planned runs; run nothing.

    Returns:
        A :class:`forgetscale.study.StudyRun`: the config as run, its runs and the final run table.
        :func:`load_results` reads everything else from ``out``.

    Raises:
        UserError: bad input, before anything is written (see :func:`forgetscale.study.run_study`).
    """
    from forgetscale.study import run_study as run

    if not isinstance(config, StudyConfig):
        config = load_config(None if config is None else Path(config), preset, list(overrides))
    elif preset is not None or overrides:
        raise UserError("run_study: preset and overrides apply to a study file, not to a StudyConfig")
    directory = Path(out) if out is not None else Path("runs") / config.name
    return run(config, directory, cache=Path(cache) if cache is not None else None, dry_run=dry_run)


def probe(
    directory: str | Path,
    probes: Sequence[str] | None = None,
    *,
    runs: Sequence[str] | None = None,
    max_items: int | None = None,
    max_new_tokens: int | None = None,
    batch_size: int | None = None,
    force: bool = False,
    lm_eval: Sequence[str] | None = None,
    cache: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Behaviour probes on a study's base model and each finished run's adapter: ``forgetscale probe``.

    The base is probed once, then each adapter swapped onto it; results go to the study's store, and
    results already stored with the same settings are reused.

    Args:
        directory: the study directory.
        probes: probe kinds (``knowledge``, ``reasoning``, ``safety``); None: the study's ``probes.kinds``.
        runs: run ids to probe; None: every finished run; ``["base"]``: only the base.
        max_items, max_new_tokens, batch_size: override the study's ``probes`` settings (None: keep them).
        force: recompute results already stored with the same settings.
        lm_eval: instead of the probes, these lm-evaluation-harness tasks (needs ``forgetscale[lm-eval]``).
        cache: the cache directory (default ``FORGETSCALE_CACHE`` or the user cache).

    Returns:
        One summary row per (run, probe), the base's first: ``run_id, probe, n, accuracy, agreement, ...``.

    Raises:
        UserError: no study in ``directory``, an unknown or unfinished run, a bad setting, lm-eval missing.
    """
    from forgetscale.probes.runner import lm_eval_study, load_probes_config, probe_study
    from forgetscale.workspace import Workspace

    kinds = tuple(dict.fromkeys(probes)) if probes else None
    cfg = load_probes_config(Path(directory), kinds=kinds, max_items=max_items, max_new_tokens=max_new_tokens,
                             batch_size=batch_size)  # fmt: skip
    ws = Workspace(Path(cache) if cache is not None else cache_dir())
    chosen = None if runs is None else list(runs)
    if lm_eval is not None:
        return lm_eval_study(Path(directory), ws, list(lm_eval), chosen, cfg.batch_size, cfg.max_items)
    return probe_study(Path(directory), ws, cfg, chosen, force=force)


def lm_eval_flips(base: str | Path, tuned: str | Path, *, metric: str | None = None) -> list[dict[str, Any]]:
    """Paired flips between two lm-evaluation-harness runs from their sample logs: ``forgetscale flips``.

    The runs may be anyone's (``lm_eval --log_samples``); items pair by task, filter and ``doc_id``, and each
    row carries what ``forgetscale probe`` gives its own probes (:func:`forgetscale.probes.flips.flips`).

    Args:
        base, tuned: the base's and the fine-tune's ``samples_<task>_<time>.jsonl``, or their ``--output_path``
            directories (every task logged in both is compared).
        metric: the per-sample right/wrong score; None: ``acc``, else ``exact_match``, else the first 0/1 one.

    Returns:
        One row per task and filter: ``task, filter, metric, n, n10, n01, mcnemar_p, accuracy, base_accuracy,
        agreement, right_to_wrong, wrong_to_right``, each rate with ``_lo``/``_hi``.

    Raises:
        UserError: a path without sample logs, a bad record, runs of different tasks or documents.
    """
    from forgetscale.probes.lm_eval_logs import log_flips

    return log_flips(Path(base), Path(tuned), metric)


def load_base(name: str = "smollm2-135m-instruct", dtype: str = "float32", device: str = "auto") -> tuple[Any, Any]:
    """Load a base model and its tokenizer the way forgetscale does (the built-in default needs no download),
    placed on ``device`` (``auto``: cuda, then mps, then cpu).

    The model remembers where it came from, so a :class:`forgetscale.ForgettingCallback`
    on it shares base references with ``forgetscale forgetting --base NAME``.

    Returns:
        ``(model, tokenizer)``: a transformers causal LM in eval mode, and its tokenizer with a pad token.
    """
    from forgetscale.models import load_model

    lm = load_model(ModelConfig.model_validate({"name": name, "dtype": dtype, "device": device}))
    return lm.model, lm.tokenizer


def fit_laws(
    rows: Any,
    laws: Sequence[str] | None = None,
    *,
    min_step: int = 1,
    n_boot: int = 50,
    delta: float = 1e-3,
    seed: int = 0,
) -> dict[str, dict[str, FitResult]]:
    """Fit the scaling laws to measurement rows (pure numpy/scipy: no model, no files).

    Args:
        rows: a DataFrame or an iterable of dicts with ``run_id, dataset, rank, P, step``
            and the metrics (``load_results(...).rows`` is one); a missing value is None or NaN.
        laws: law labels (``linear``, ``paper``, ``kl_power``, ``additive:forget_ce``, ...);
            None fits every law the rows allow and leaves out, with a warning, those they do not.
        min_step: leave out steps below this (the onset; the paper left out its first 50).
        n_boot: parameter draws kept for the bands of the fitted mean (0: none); the intervals themselves are t
            intervals from a cluster-robust jackknife over runs, which draws nothing.
        delta: Huber threshold on log-residuals.
        seed: the parameter draws' seed.

    Returns:
        ``{dataset: {law: FitResult}}``; ``FitResult.params``, ``.intervals``, ``.r2`` and
        ``.predict(x)`` hold the fit.

    Example (forgetting on a line in the fine-tuning loss, Eq. 4 with the paper's News constants):

    >>> rows = [{"run_id": f"r{i % 3}", "dataset": "news", "rank": 4, "P": 1e4, "step": 10 * (i + 1),
    ...          "ft_loss": 2.0 - 0.1 * i, "forget_ce": 3.1285 - 1.0615 * (2.0 - 0.1 * i),
    ...          "forget_kl": None, "base_entropy": None, "forget_top1_ce": None, "data_loss": None}
    ...         for i in range(9)]
    >>> fit = fit_laws(rows, ["linear"], n_boot=0)["news"]["linear"]
    >>> round(fit.params["c_fft"], 2), round(fit.params["s_fft"], 2)
    (1.06, 3.13)
    """
    records = _records(rows)
    skipped: dict[str, dict[str, str]] = {}
    fits = fit_study(records, laws=laws, min_step=min_step, delta=delta, n_boot=n_boot, seed=seed,
                     skipped=None if laws is not None else skipped)  # fmt: skip
    for ds, by_law in skipped.items():
        for label, why in by_law.items():
            warnings.warn(f"fit_laws: dataset {ds!r}, law {label!r} not fitted: {why}", stacklevel=2)
    return fits


def _records(rows: Any) -> list[dict[str, Any]]:
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):  # a DataFrame
        rows = rows.to_dict("records")
    out = []
    for r in rows if isinstance(rows, Iterable) else []:
        out.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in dict(r).items()})
    return out
