"""From measurement rows to fitted laws: which laws a study fits, on which columns, and the fits.

Rows are the store's measurements joined with their run (one dict per run and
step). Every applicable law is fitted per dataset. The independent units are
the runs; a row's optional ``seed`` names its data order (runs with the same
seed saw the same batches, so their points at one step share a step shock;
rows without a seed are taken to share one order, as the default study's do).
Selection and reliability are ``select.py``; predictions and plans ``predict.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from forgetscale.laws.fit import FitError, FitResult, fit_law
from forgetscale.laws.forms import LAWS, get_law

ROW_KEYS = ("run_id", "dataset", "rank", "P", "step", "ft_loss", "forget_ce", "forget_kl",
            "base_entropy", "forget_top1_ce", "data_loss")
METRICS = ("ft_loss", "forget_ce", "forget_kl", "base_entropy", "forget_top1_ce", "data_loss")
COLUMNS = ("P", "N", "rank", *METRICS)  # what a law may take as input or target; N is `step`
PREDICTED = ("ft_loss", "forget_ce", "forget_kl")
FORGETTING = ("forget_ce", "forget_kl")


@dataclass(frozen=True)
class LawSpec:
    """How the study applies a law form: which row columns are its inputs and targets."""

    label: str
    law: str
    inputs: tuple[str, ...]
    targets: tuple[str, ...]


def law_specs(laws: Sequence[str] | None = None) -> list[LawSpec]:
    """The laws a study fits.

    Args:
        laws: labels (``"paper"``, ``"additive:ft_loss"``) or form names
            (``"additive"`` means both of its targets). None: every registered
            form whose columns the rows have, plus ``additive`` on ``forget_ce``
            and ``ft_loss``.

    Returns:
        One :class:`LawSpec` per fit, in a stable order.

    Example:
        >>> [s.label for s in law_specs(["linear", "additive"])]
        ['linear', 'additive:forget_ce', 'additive:ft_loss']
    """
    names = list(laws) if laws is not None else list(LAWS)
    out: list[LawSpec] = []
    for name in names:
        law, _, target = name.partition(":")
        form = get_law(law)
        direct = set(form.inputs) | set(form.outputs) <= set(COLUMNS)
        if direct and not target:
            out.append(LawSpec(law, law, form.inputs, form.outputs))
        elif len(form.outputs) > 1 and target:
            raise ValueError(f"{name!r}: law {law!r} models {form.outputs} together; use {law!r}")
        elif len(form.inputs) == 2 and len(form.outputs) == 1:
            # a generic two-input form: inputs are (P, N), the target is named in the label
            targets = [target] if target else ["forget_ce", "ft_loss"]
            for t in targets:
                if t not in METRICS:
                    raise ValueError(f"{name!r}: unknown target {t!r}; choose from {METRICS}")
                out.append(LawSpec(f"{law}:{t}", law, ("P", "N"), (t,)))
        elif laws is not None:
            raise ValueError(
                f"law {name!r} has inputs {form.inputs} and outputs {form.outputs}, which are not "
                f"study columns {COLUMNS}; name a target as '{law}:<metric>' for a 2-input form"
            )
    return list({s.label: s for s in out}.values())


def rows_to_arrays(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    """Group measurement rows by dataset into column arrays.

    Args:
        rows: dicts with at least :data:`ROW_KEYS`; missing metric values (None)
            become NaN.

    Returns:
        ``{dataset: {column: array}}`` with ``run_id`` and ``seed`` (the data order; ``""`` when
        the rows carry none) as strings, ``N`` (= ``step``) and every metric as floats, in row order.

    Example:
        >>> a = rows_to_arrays([{**dict.fromkeys(ROW_KEYS, 1.0), "run_id": "r", "dataset": "d"}])
        >>> a["d"]["N"], a["d"]["run_id"]
        (array([1.]), array(['r'], dtype='<U1'))
    """
    by_ds: dict[str, list[Mapping[str, Any]]] = {}
    for i, row in enumerate(rows):
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise ValueError(f"measurement row {i} lacks {missing} (has {sorted(row)})")
        by_ds.setdefault(str(row["dataset"]), []).append(row)
    out = {}
    for ds, rs in by_ds.items():
        cols: dict[str, np.ndarray] = {"run_id": np.array([str(r["run_id"]) for r in rs]),
                                       "seed": np.array(["" if r.get("seed") is None else str(r["seed"]) for r in rs])}
        for key, src in (("P", "P"), ("N", "step"), ("rank", "rank"), *((m, m) for m in METRICS)):
            cols[key] = np.array([math.nan if r[src] is None else float(r[src]) for r in rs])
        out[ds] = cols
    return out


def fit_study(
    rows: Iterable[Mapping[str, Any]],
    laws: Sequence[str] | None = None,
    min_step: int = 1,
    delta: float | Literal["auto"] = "auto",
    n_boot: int = 1000,
    seed: int = 0,
    skipped: dict[str, dict[str, str]] | None = None,
) -> dict[str, dict[str, FitResult]]:
    """Fit every applicable law to every dataset of a study.

    Args:
        rows: measurement rows (see :func:`rows_to_arrays`).
        laws: which laws (see :func:`law_specs`); None for all.
        min_step: drop steps below this (the paper dropped the first 50). Step 0
            is always dropped for laws in P and N, since N = 0 is outside them.
        delta: Huber threshold on log-residuals, or ``"auto"`` (``fit.py``).
        n_boot: parameter draws kept per fit (``FitResult.samples``).
        seed: seed of the draws and the noise-floor simulation.
        skipped: if given, laws that cannot be fitted are recorded here as
            ``skipped[dataset][label] = reason`` and left out; otherwise the
            first such :class:`FitError` is raised, naming dataset and law.

    Returns:
        ``{dataset: {label: FitResult}}``.
    """
    specs = law_specs(laws)
    out: dict[str, dict[str, FitResult]] = {}
    for ds, cols in sorted(rows_to_arrays(rows).items()):
        out[ds] = {}
        for spec in specs:
            try:
                fit = _fit_spec(spec, cols, min_step, delta, n_boot, seed)
            except FitError as e:
                if skipped is None:
                    raise FitError(f"dataset {ds!r}, law {spec.label!r}: {e}") from e
                skipped.setdefault(ds, {})[spec.label] = str(e)
                continue
            out[ds][spec.label] = fit
    return out


def _fit_spec(spec: LawSpec, cols: Mapping[str, np.ndarray], min_step: int, delta: float | Literal["auto"],
              n_boot: int, seed: int) -> FitResult:
    keep = cols["N"] >= min_step
    if "N" in spec.inputs:
        keep &= cols["N"] > 0
    notes = []
    for c in (*spec.inputs, *spec.targets):
        bad = keep & ~np.isfinite(cols[c])
        if bad.any():
            notes.append(f"dropped {int(bad.sum())} point(s) without {c}")
        keep &= np.isfinite(cols[c])
    for t in spec.targets:
        bad = keep & (cols[t] <= 0)
        if bad.any():
            notes.append(f"dropped {int(bad.sum())} point(s) with {t} <= 0")
        keep &= cols[t] > 0
    if not keep.any():
        raise FitError(f"no usable points (steps >= {min_step}, finite, positive targets)")
    seeds = cols["seed"][keep]
    entropy = cols["base_entropy"][keep]
    offset = {"forget_ce": float(np.median(entropy))} if np.isfinite(entropy).any() else {}
    # the splits name their columns: a law on ft_loss is still held out by rank and by step
    holdout = {"P": cols["P"][keep], "N": cols["N"][keep]}
    fit = fit_law(
        spec.law, {c: cols[c][keep] for c in spec.inputs}, {t: cols[t][keep] for t in spec.targets},
        groups=cols["run_id"][keep], inputs=spec.inputs, targets=spec.targets, delta=delta,
        n_boot=n_boot, seed=seed, holdout=holdout,
        change={t: change_since_start(cols, t)[keep] for t in spec.targets},
        cells=np.char.add(np.char.add(seeds, "|"), cols["N"][keep].astype(str)),
        n_orders=len(np.unique(seeds)), offset=offset,
    )
    return replace(fit, warnings=fit.warnings + tuple(notes), settings={**fit.settings, "min_step": min_step})


def change_since_start(cols: Mapping[str, np.ndarray], target: str) -> np.ndarray:
    """Each point's change of ``target`` since step 0 of its run (NaN where unknown).

    ``forget_kl`` is its own change (0 at step 0); ``forget_ce`` falls back to
    ``forget_kl`` for a run without a step-0 row; other metrics need one.
    """
    y = cols[target]
    if target == "forget_kl":
        return y.copy()
    start = {r: v for r, n, v in zip(cols["run_id"], cols["N"], y, strict=True) if n == 0 and np.isfinite(v)}
    y0 = np.array([start.get(r, np.nan) for r in cols["run_id"]])
    out = y - y0
    if target == "forget_ce":
        out = np.where(np.isfinite(out), out, cols["forget_kl"])
    return out




def shared_training(n_train: int, steps: int, batch: int, n_orders: int, pool: float | None = None) -> dict[str, Any]:
    """What the data orders of a study share: the training examples each has seen, and how many in common.

    ``pool`` None (``data.examples: shared``): every order draws from the same ``n_train`` examples, so
    replicates differ in order and in which examples they happen to reach, not in the pool. ``pool`` a
    number (``per_order``): each order draws its own ``n_train`` from ``pool`` examples (``inf``: a fresh
    sample of a synthetic generator), so replicates differ in the examples they draw as well. With ``steps x
    batch`` draws an order sees ``min(steps x batch, n_train)`` distinct examples (a shuffled pass, no repeats
    before its examples are used up); two orders have ``seen^2 / n_train`` (shared) or ``seen^2 / pool``
    (per_order) of them in common on average, which is what independent random draws give.

    Example: the default study (256 examples, 32 steps of 4), shared and per_order from a 1024-example file.
        >>> d = shared_training(256, 32, 4, 2)
        >>> d["seen_per_order"], d["expected_common"], d["share_common"]
        (128, 64.0, 0.5)
        >>> shared_training(256, 32, 4, 2, pool=1024)["expected_common"]
        16.0
    """
    seen = min(steps * batch, n_train)
    per_order = pool is not None
    within = (pool if per_order else n_train) or math.inf
    common = seen * seen / within
    out: dict[str, Any] = {"n_train": n_train, "seen_per_order": seen, "expected_common": common,
                           "share_common": common / seen if seen else 0.0, "n_orders": n_orders,
                           "examples": "per_order" if per_order else "shared", "pool": pool}  # fmt: skip
    several = n_orders > 1
    if not per_order:
        out["statement"] = (f"the {n_orders} data order(s) draw from the same {n_train} training examples: each has "
                            f"seen {seen} by step {steps}" + (f", about {common:.0f} ({out['share_common']:.0%}) of "
                            "them in common, so orders are not independent samples of training data" if several
                            else ""))  # fmt: skip
        return out
    source = (
        "a fresh sample of the synthetic generator"
        if math.isinf(within)
        else f"the {within:.0f} outside the held-out ones"
    )
    drawn = n_train * n_train / within
    overlap = ("share only the generator's rare repeats" if math.isinf(within) else f"have about {drawn:.0f} in "
               f"common and their seen examples about {common:.0f} ({out['share_common']:.0%})")  # fmt: skip
    out["statement"] = (f"each of the {n_orders} data order(s) draws its own {n_train} training examples ({source}): "
                        f"each has seen {seen} by step {steps}" + (f"; two orders' draws {overlap}, as random draws "
                        "give, so intervals over orders include the sampling of training examples" if several
                        else ""))  # fmt: skip
    return out
