"""F5, agreement with the base falls further than accuracy: the probes' items, paired base against run.

:mod:`forgetscale.laws.findings` gathers it with the other findings; the statistic, its margin and its
intervals are described in :func:`f5`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from forgetscale.probes.flips import mcnemar_exact, outcome

F5_MIN_ITEMS, F5_MARGIN, F5_BOOT = 20, 0.5, 2000
SAFETY = "safety"


def _finding(ds: str, name: str, verdict: str, **evidence: Any) -> dict[str, Any]:
    return {"dataset": ds, "finding": name, "verdict": verdict, "evidence": evidence}


def _item_records(probe_items: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[tuple[float, ...]]]]:
    """``{probe: {item: [(base_correct, correct, changed), ...]}}`` over runs (safety: "correct" = refused)."""
    out: dict[str, dict[str, list[tuple[float, ...]]]] = {}
    for it in probe_items:
        correct, base_correct = outcome(it), outcome(it, "base_")  # probes' one pairing rule
        if correct is None or base_correct is None:
            continue
        changed = 1.0 - float(bool(it.get("agree")))
        out.setdefault(str(it.get("probe")), {}).setdefault(str(it.get("id")), []).append(
            (float(bool(base_correct)), float(bool(correct)), changed))
    return out


def _boot_items(groups: list[np.ndarray], stat: Any, rng: np.random.Generator) -> np.ndarray:
    """``stat`` of the pooled records of ``F5_BOOT`` resamples of items (an item keeps all its runs)."""
    sums = np.array([g.sum(axis=0) for g in groups])  # (items, columns)
    idx = rng.integers(0, len(groups), (F5_BOOT, len(groups)))
    return stat(sums[idx].sum(axis=1))


def f5(ds: str, probe_items: Sequence[Mapping[str, Any]], seed: int = 0) -> dict[str, Any]:
    """F5: agreement with the base falls further than accuracy — answers change without a net loss.

    Per probe, every (run, item) record is a pair against the base: ``n10`` items right -> wrong,
    ``n01`` wrong -> right (an exact McNemar test on these discordant pairs, ``probes.flips.mcnemar_exact``;
    it treats records as independent, so it is a description, not the verdict's test), and ``changed``
    (the answer differs from the base's, whether or not its correctness does).

    The statistic. A wrong answer that changes to another wrong answer lowers agreement and leaves
    accuracy alone, so "agreement drop minus accuracy drop" is at least the share of such changes
    whatever else happens: it cannot be 0 when the claim is false. The statistic used instead reads
    only the answers that could be lost, the base's right answers that changed (``n_cr``):
    ``made_up = 1 - (n10 - n01) / n_cr``, the share of those changes that accuracy did not pay for
    (answers still right, or made up by wrong answers that became right). It is 0 when every right
    answer that changed is lost and nothing is gained (agreement falls only by losses: the claim is
    false at any base accuracy), 1 when accuracy is flat, above 1 when accuracy rises.
    On the knowledge and reasoning probes pooled it gets a percentile interval over items (2,000
    resamples; an item keeps all its runs; resamples without a changed right answer are left out).
    One margin, stated in advance: :data:`F5_MARGIN` = 0.5, midway between its two poles. Supported: a
    one-sided 5% test rejects ``made_up <= 0.5`` (its 90% interval lies above); not supported: one
    rejects ``made_up >= 0.5`` (it lies below: at least half of what the changed right answers could
    cost is lost); otherwise undecided. The agreement and accuracy drops and their difference are
    reported beside it. Safety is reported apart, never in the verdict: lost refusals (the base refused,
    the model no longer does) as a share of the base's refusals with its interval; new refusals are
    listed, not credited. Fewer than 20 scored items, or no right answer that changed: undecided.

    Args:
        ds: dataset name.
        probe_items: per-(run, item) records ``{"probe", "run_id", "id", "agree", "correct",
            "base_correct"}`` (safety: ``answer``/``base_answer`` are "refused").
        seed: the bootstrap's seed.

    Returns:
        The finding, with per-probe counts (``probes``), ``made_up`` (value, 95% lo/hi, 90% lo90/hi90),
        ``agreement_drop``, ``accuracy_drop``, ``difference`` and ``safety`` in its evidence.
    """
    rng = np.random.default_rng(seed)
    ev: dict[str, Any] = {"claim": "agreement with the base falls further than accuracy",
                          "test": "made_up = 1 - accuracy drop / right answers that changed; percentile bootstrap "
                                  f"over items ({F5_BOOT} resamples); one-sided 5% tests against the margin "
                                  f"{F5_MARGIN}; safety reported apart",
                          "units": "items (each with all its runs)", "margin": F5_MARGIN,
                          "conditional_on": "these runs and this probe set: the interval is over items, the runs "
                                            "are taken as given"}  # fmt: skip
    by_probe = _item_records(probe_items)
    probes: dict[str, Any] = {}
    pooled: list[np.ndarray] = []
    for probe, items in sorted(by_probe.items()):
        recs = np.array([r for rs in items.values() for r in rs])  # (base_correct, correct, changed)
        n10 = int(np.sum((recs[:, 0] == 1) & (recs[:, 1] == 0)))
        n01 = int(np.sum((recs[:, 0] == 0) & (recs[:, 1] == 1)))
        p = mcnemar_exact(n10, n01)
        probes[probe] = {"n_items": len(items), "n_records": len(recs), "n10_right_to_wrong": n10,
                         "n01_wrong_to_right": n01, "changed": int(recs[:, 2].sum()),
                         "changed_right": int(np.sum(recs[:, 0] * recs[:, 2])), "mcnemar_exact_p": float(p),
                         "agreement_drop": float(recs[:, 2].mean()), "accuracy_drop": (n10 - n01) / len(recs)}
        # columns: changed, accuracy lost, base right, right -> wrong, wrong -> right, 1, base right and changed
        groups = [np.array([[r[2], r[0] - r[1], r[0], r[0] * (1 - r[1]), (1 - r[0]) * r[1], 1.0, r[0] * r[2]]
                            for r in rs]) for rs in items.values()]  # fmt: skip
        if probe == SAFETY or probe.startswith(SAFETY):
            ev["safety"] = _safety(probe, groups, rng)
        else:
            pooled += groups
    ev["probes"] = probes
    ev["n_items"] = len(pooled)
    ev["multiplicity"] = ("the per-probe McNemar p-values describe each probe and are not adjusted; the verdict "
                          "rests on the pooled statistic alone")
    if len(pooled) < F5_MIN_ITEMS:
        return _finding(ds, "F5", "undecided", reason=f"{len(pooled)} scored knowledge/reasoning items "
                        f"(< {F5_MIN_ITEMS})", **ev)  # fmt: skip
    total = np.sum([g.sum(axis=0) for g in pooled], axis=0)
    boot = _boot_items(pooled, lambda s: np.column_stack([
        s[:, :2] / s[:, 5:6], np.where(s[:, 6] > 0, 1 - s[:, 1] / np.maximum(s[:, 6], 1), np.nan)]), rng)
    for key, val, b in (("agreement_drop", total[0] / total[5], boot[:, 0]),
                        ("accuracy_drop", total[1] / total[5], boot[:, 1]),
                        ("difference", (total[0] - total[1]) / total[5], boot[:, 0] - boot[:, 1])):
        lo, hi = np.percentile(b, [2.5, 97.5])
        ev[key] = {"value": float(val), "lo": float(lo), "hi": float(hi)}
    ev["difference"]["definition"] = ("agreement drop - accuracy drop: at least the share of wrong answers that "
                                      "changed to other wrong ones, so reported, not tested")
    if total[6] == 0:
        return _finding(ds, "F5", "undecided", reason="no right answer of the base changed: nothing could be "
                        "lost", **ev)  # fmt: skip
    made = boot[:, 2]
    lo, hi, lo90, hi90 = (float(v) for v in np.nanpercentile(made, [2.5, 97.5, 5, 95]))
    ev["made_up"] = {"value": float(1 - total[1] / total[6]), "lo": lo, "hi": hi, "lo90": lo90, "hi90": hi90,
                     "n_changed_right": int(total[6]),
                     "definition": "1 - (right->wrong - wrong->right) / right answers that changed: 0 when every "
                                   "changed right answer is lost and none gained, 1 when accuracy is flat"}
    if lo90 > F5_MARGIN:
        return _finding(ds, "F5", "supported", **ev)
    if hi90 < F5_MARGIN:
        return _finding(ds, "F5", "not_supported", **ev)
    return _finding(ds, "F5", "undecided", reason=f"made_up's 90% interval [{lo90:.3g}, {hi90:.3g}] contains the "
                    f"margin {F5_MARGIN}", **ev)  # fmt: skip


def _safety(probe: str, groups: list[np.ndarray], rng: np.random.Generator) -> dict[str, Any]:
    """Lost refusals (base refused, the model complies) as a share of the base's refusals, over items."""
    total = np.sum([g.sum(axis=0) for g in groups], axis=0)  # columns 2: base refused, 3: lost, 4: new
    out: dict[str, Any] = {"probe": probe, "base_refusals": int(total[2]), "lost_refusals": int(total[3]),
                           "new_refusals": int(total[4]), "n_records": int(total[5]),
                           "note": "new refusals are listed, not credited against lost ones"}  # fmt: skip
    if total[2] > 0:
        # a resample that draws none of the refusing items has no share at all: it is left out, not
        # counted as 0 (which pulled the lower bound to 0 whenever refusing items were few)
        boot = _boot_items(groups, lambda s: np.where(s[:, 2] > 0, s[:, 3] / np.maximum(s[:, 2], 1), np.nan), rng)
        lo, hi = np.nanpercentile(boot, [2.5, 97.5])
        refusing = sum(int(g[:, 2].sum() > 0) for g in groups)
        out["lost_share"] = {"value": float(total[3] / total[2]), "lo": float(lo), "hi": float(hi),
                             "interval": f"95% percentile bootstrap over items ({refusing} items the base refused; "
                                         "resamples without one left out)"}  # fmt: skip
    return out
