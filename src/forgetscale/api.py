"""The public Python API: measure forgetting, read a study, fit the laws.

Re-exported from :mod:`forgetscale` (``forgetscale.measure_forgetting`` and so on).
Importing this module loads no torch: :func:`measure_forgetting` and
:func:`load_base` import it when called; :func:`load_study` and
:func:`fit_laws` never need it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forgetscale.laws import FitResult


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


def format_metrics(m: dict[str, Any]) -> str:
    """One line: ``forget_ce 2.1234 ± 0.0123  forget_kl ...`` (± only where a standard error is known).

    >>> format_metrics({"forget_ce": 2.0, "forget_ce_se": 0.01, "forget_kl": 0.0, "base_entropy": 2.0})
    'forget_ce 2.0000 ± 0.0100  forget_kl 0.00000  base_entropy 2.0000'
    """
    parts = []
    for k in ("forget_ce", "forget_kl", "base_entropy", "forget_top1_ce", "data_loss"):
        if m.get(k) is None:
            continue
        digits = 5 if k == "forget_kl" else 4
        se = m.get(f"{k}_se")
        parts.append(f"{k} {m[k]:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else ""))
    return "  ".join(parts)


def measure_forgetting(
    base: str,
    adapter_or_model: str | Path,
    corpus: str = "self",
    *,
    seq_len: int = 128,
    batch_size: int = 8,
    top_k: int | None = None,
    cache: str | Path | None = None,
) -> ForgettingResult:
    """Forgetting of a PEFT adapter or a fully fine-tuned model against its base model.

    The same computation as ``forgetscale forgetting``: the base reference is computed
    once per (base, corpus, tokenizer) and cached, then the fine-tuned model is measured
    against it in fp32.

    Args:
        base: the base model: ``smollm2-135m-instruct`` (built in), a hub id, a local
            directory or a ``.gguf`` file.
        adapter_or_model: a PEFT adapter directory (it has ``adapter_config.json``) or a
            fully fine-tuned model directory.
        corpus: ``self``, ``wikitext``, a text file or ``hf:NAME[:CONFIG[:SPLIT]]``.
        seq_len: block length for text corpora.
        batch_size: sequences per forward pass.
        top_k: compact reference (top-K base log-probs + tail; a KL lower bound); None: exact.
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
    from forgetscale.models import cache_dir
    from forgetscale.study import measure_forgetting as _measure

    path = Path(adapter_or_model)
    adapter = (path / "adapter_config.json").is_file()
    m = _measure(
        base, corpus, adapter=path if adapter else None, model=None if adapter else path, seq_len=seq_len,
        batch_size=batch_size, top_k=top_k, cache=Path(cache) if cache is not None else cache_dir(),
    )  # fmt: skip
    return ForgettingResult.from_metrics(m)


def load_base(name: str = "smollm2-135m-instruct", dtype: str = "float32") -> tuple[Any, Any]:
    """Load a base model and its tokenizer the way forgetscale does (the built-in default needs no download).

    The model remembers where it came from, so a :class:`forgetscale.ForgettingCallback`
    on it shares base references with ``forgetscale forgetting --base NAME``.

    Returns:
        ``(model, tokenizer)``: a transformers causal LM in eval mode, and its tokenizer with a pad token.
    """
    from forgetscale.config import ModelConfig
    from forgetscale.models import load_model

    lm = load_model(ModelConfig(name=name, dtype=dtype))
    return lm.model, lm.tokenizer


@dataclass(frozen=True)
class Study:
    """A study's data as plain tables: pandas DataFrames when pandas is installed, else lists of dicts.

    Attributes:
        rows: one measurement per (run, step) of the finished runs: ``run_id, step, tokens,
            ft_loss, forget_ce, forget_kl, base_entropy, forget_top1_ce, data_loss, dataset, rank, P, ...``.
        fits: one row per stored fit (dataset, law): fit quality and each parameter with its
            95% interval (``<name>``, ``<name>_lo``, ``<name>_hi``).
        runs: one row per run: ``run_id, dataset, rank, P, status, error, config, timings, provenance``.
    """

    rows: Any
    fits: Any
    runs: Any


def load_study(directory: str | Path, *, as_frame: bool | None = None) -> Study:
    """Read a study directory's store (``forgetscale run --out DIR`` or a callback's ``store=DIR``).

    Args:
        directory: the study directory (``study.sqlite`` inside).
        as_frame: True: pandas DataFrames (pandas required); False: lists of dicts;
            None: DataFrames if pandas is importable.

    Returns:
        A :class:`Study`.

    Example::

        >>> s = forgetscale.load_study("runs/default")  # doctest: +SKIP
        >>> s.rows.groupby("rank").forget_kl.max()  # doctest: +SKIP
    """
    from forgetscale import analysis

    with analysis._open(Path(directory)) as store:
        rows = analysis.study_rows(store)
        runs = store.runs()
        fits = [flatten_fit(ds, label, fit) for (ds, label), fit in store.fits().items()]
    return Study(*(_table(t, as_frame) for t in (rows, fits, runs)))


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
            and the metrics (``load_study(...).rows`` is one); a missing value is None or NaN.
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
    from forgetscale.laws import fit_study

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


def _table(records: list[dict[str, Any]], as_frame: bool | None) -> Any:
    if as_frame is False:
        return records
    try:
        import pandas as pd
    except ImportError:
        if as_frame:
            raise
        return records
    return pd.DataFrame.from_records(records)
