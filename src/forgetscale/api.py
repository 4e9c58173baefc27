"""The public Python API: measure forgetting, run a study, read its results, fit, predict and plan.

Re-exported from :mod:`forgetscale` (``forgetscale.measure_forgetting`` and so on). Each
``forgetscale`` command is one call here. Importing this module loads no torch:
:func:`measure_forgetting`, :func:`run_study`, :func:`load_base` and :class:`ForgettingCallback`
import it when used; reading and fitting a study never needs it.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from forgetscale.analysis import plan_directory as plan
from forgetscale.analysis import predict_directory as predict
from forgetscale.analysis import study_rows
from forgetscale.config import ForgettingConfig, ModelConfig, RunConfig, StudyConfig, load_config
from forgetscale.console import format_metrics
from forgetscale.errors import UserError
from forgetscale.laws import fit_study
from forgetscale.models import cache_dir
from forgetscale.report.command import write_report
from forgetscale.store import read_store

if TYPE_CHECKING:
    from forgetscale.callback import ForgettingCallback
    from forgetscale.laws import FitResult
    from forgetscale.study import StudyRun

__all__ = [
    "ForgettingCallback",
    "ForgettingResult",
    "Results",
    "fit_laws",
    "flatten_fit",
    "load_base",
    "load_results",
    "measure_forgetting",
    "plan",
    "predict",
    "run_study",
    "write_report",
]
log = logging.getLogger(__name__)

# predict(dir, steps, rank=None, params=None, dataset=None) and plan(dir, max_forgetting, dataset=None,
# metric="forget_ce", bound="upper") are the study-directory functions of forgetscale.analysis, as they are.


def __getattr__(name: str) -> Any:
    if name == "ForgettingCallback":  # it subclasses transformers' TrainerCallback: torch only when asked for
        from forgetscale.callback import ForgettingCallback

        return ForgettingCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class ForgettingResult:
    """Forgetting of a fine-tuned model against its base on one corpus (nats per token).

    ``forget_ce = base_entropy + forget_kl``. ``*_se`` are standard errors over the
    corpus' sequences (None where the installed metrics do not provide them).

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
    base: str,
    tuned: str | Path,
    corpus: str = "self",
    *,
    kind: Literal["auto", "adapter", "model"] = "auto",
    seq_len: int = 128,
    batch_size: int = 8,
    top_k: int | None = None,
    reference: Literal["hidden", "logits"] = "hidden",
    cache: str | Path | None = None,
) -> ForgettingResult:
    """Forgetting of a PEFT adapter or a fully fine-tuned model against its base model: ``forgetscale forgetting``.

    The base reference is computed once per (base, corpus, tokenizer) before any adapter is
    attached (so the base is never silently changed underneath it) and cached; the fine-tuned
    model is then measured against it in fp32, with its adapter merged for the evaluation.

    Args:
        base: the base model: ``smollm2-135m-instruct`` (built in), a hub id, a local
            directory or a ``.gguf`` file.
        tuned: a PEFT adapter directory or a fully fine-tuned model directory.
        corpus: ``self``, ``wikitext``, a text file or ``hf:NAME[:CONFIG[:SPLIT]]``.
        kind: what ``tuned`` is; ``auto``: an adapter when it holds ``adapter_config.json``.
        seq_len: block length for text corpora.
        batch_size: sequences per forward pass.
        top_k: compact reference (top-K base log-probs + tail; a KL lower bound); None: exact.
        reference: the exact reference's storage: ``hidden`` (d floats per token; full logits
            when the fine-tune changed the LM head) or ``logits``.
        cache: cache directory (default ``FORGETSCALE_CACHE`` or the user cache).

    Returns:
        A :class:`ForgettingResult`.

    Raises:
        UserError: a model, adapter or corpus that cannot be used (the message says why).

    Example::

        >>> import forgetscale
        >>> r = forgetscale.measure_forgetting("smollm2-135m-instruct", "runs/x/adapters/abc", "self")  # doctest: +SKIP
        >>> print(r)  # doctest: +SKIP
        forget_ce 1.9731 ± 0.0412  forget_kl 0.04511 ± 0.00620  base_entropy 1.9280 ...
    """
    import contextlib

    from forgetscale.data.corpus import check_corpus
    from forgetscale.forgetting import measure
    from forgetscale.merge import merged
    from forgetscale.models import check_adapter, load_adapter, load_model, resolve
    from forgetscale.reference import head_signature, same_head
    from forgetscale.workspace import Workspace

    path = Path(tuned)
    adapter = (path / "adapter_config.json").is_file() if kind == "auto" else kind == "adapter"
    run = RunConfig(
        model=ModelConfig(name=base),
        forgetting=ForgettingConfig(
            corpus=corpus, seq_len=seq_len, batch_size=batch_size, top_k=top_k, reference=reference
        ),
    )
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
            model = load_model(ModelConfig(name=str(path)), "--model").model
    except UserError as e:  # the shared loaders name config keys; here the caller named options
        raise UserError(str(e).replace("model.name)", "--base)").replace("forgetting.corpus", "--data")) from None
    if ref.mode == "hidden" and not same_head(head_signature(model), ref.head_check):
        log.info("the fine-tune changed the LM head: using a full-logit base reference instead of the hidden one")
        run = run.model_copy(update={"forgetting": run.forgetting.model_copy(update={"reference": "logits"})})
        with model.disable_adapter() if adapter else contextlib.nullcontext():  # the base's view
            ref = ws.reference(run)
    with merged(model):
        return ForgettingResult.from_metrics(measure(model, ref, batch_size))


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


def load_base(name: str = "smollm2-135m-instruct", dtype: str = "float32") -> tuple[Any, Any]:
    """Load a base model and its tokenizer the way forgetscale does (the built-in default needs no download).

    The model remembers where it came from, so a :class:`forgetscale.ForgettingCallback`
    on it shares base references with ``forgetscale forgetting --base NAME``.

    Returns:
        ``(model, tokenizer)``: a transformers causal LM in eval mode, and its tokenizer with a pad token.
    """
    from forgetscale.models import load_model

    lm = load_model(ModelConfig(name=name, dtype=dtype))
    return lm.model, lm.tokenizer


@dataclass(frozen=True)
class Results:
    """A study's results as tables: lists of dicts, or pandas DataFrames with ``load_results(..., as_frame=True)``.

    Attributes:
        rows: one measurement per (run, step) of the finished runs: ``run_id, step, tokens,
            ft_loss, ft_loss_se, forget_ce, forget_kl, base_entropy, forget_top1_ce, data_loss,
            dataset, rank, P, ...`` (:class:`forgetscale.schema.Measurement`).
        fits: one row per stored fit (dataset, law): fit quality and each parameter with its
            95% interval (``<name>``, ``<name>_lo``, ``<name>_hi``).
        runs: one row per run: ``run_id, dataset, rank, P, status, error, config, timings, provenance``.
        probes: one row per (run, probe): ``run_id, probe`` and the probe's summary (``accuracy``, ...).
    """

    rows: Any
    fits: Any
    runs: Any
    probes: Any


def load_results(directory: str | Path, *, as_frame: bool = False) -> Results:
    """Read a study directory's store (``forgetscale run --out DIR`` or a callback's ``store=DIR``).

    Args:
        directory: the study directory (``study.sqlite`` inside).
        as_frame: pandas DataFrames (pandas required) instead of lists of dicts.

    Returns:
        A :class:`Results`.

    Raises:
        UserError: no study in ``directory``.

    Example::

        >>> r = forgetscale.load_results("runs/default", as_frame=True)  # doctest: +SKIP
        >>> r.rows.groupby("rank").forget_kl.max()  # doctest: +SKIP
    """
    with read_store(Path(directory)) as store:
        rows = study_rows(store)
        runs = store.runs()
        fits = [flatten_fit(ds, label, fit) for (ds, label), fit in store.fits().items()]
        probes = [{"run_id": p["run_id"], "probe": p["probe"], **p["summary"]} for p in store.probes()]
    return Results(*(_table(t, as_frame) for t in (rows, fits, runs, probes)))


def flatten_fit(dataset: str, label: str, fit: Mapping[str, Any]) -> dict[str, Any]:
    """One flat row for a stored fit: quality per target, parameters with their intervals.

    >>> f = {"law": "linear", "n_points": 9, "reliable": True, "r2": {"forget_ce": 0.9}, "rmse": {"forget_ce": 0.01},
    ...      "params": {"c_fft": {"value": 1.7, "lo": 1.5, "hi": 1.9}}}
    >>> row = flatten_fit("news", "linear", f)
    >>> row["law"], row["r2_forget_ce"], row["c_fft"], row["c_fft_lo"], row["c_fft_hi"]
    ('linear', 0.9, 1.7, 1.5, 1.9)
    """
    out: dict[str, Any] = {"dataset": dataset, "law": label}
    for k in ("n_points", "n_groups", "reliable"):
        if k in fit:
            out[k] = fit[k]
    for k in ("r2", "rmse"):
        for target, v in (fit.get(k) or {}).items():
            out[f"{k}_{target}"] = v
    for name, p in (fit.get("params") or {}).items():
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = p.get("value"), p.get("lo"), p.get("hi")
    return out


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
        n_boot: bootstrap replicates over runs for the 95% intervals (0: none).
        delta: Huber threshold on log-residuals.
        seed: the bootstrap's seed.

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


def _table(records: list[dict[str, Any]], as_frame: bool) -> Any:
    if not as_frame:
        return records
    import pandas as pd  # not a dependency: asked for explicitly

    return pd.DataFrame.from_records(records)
