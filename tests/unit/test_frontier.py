"""The frontier test (laws/frontier.py) and the mitigation config: pure, fast."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from forgetscale.laws.frontier import POST_HOC, fit_line, frontier, residuals


def _plain(noise: float = 0.01, seed: int = 0, n_runs: int = 5) -> dict[str, np.ndarray]:
    """Plain runs on the line 4 - 0.8 ft_loss, with a run effect and point noise of sd ``noise``."""
    rng = np.random.default_rng(seed)
    x = np.tile([1.5, 1.8, 2.1, 2.4], n_runs)
    runs = np.repeat([f"r{i}" for i in range(n_runs)], 4)
    y = 4.0 - 0.8 * x + noise * (rng.standard_normal(x.size) + np.repeat(rng.standard_normal(n_runs), 4))
    return {"ft_loss": x, "forget_ce": y, "run_id": runs, "step": np.tile([8, 16, 24, 32], n_runs)}


def _level(offset: float, n_runs: int, prefix: str, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.tile([1.6, 2.0, 2.3], n_runs)
    y = 4.0 - 0.8 * x + offset + 0.005 * rng.standard_normal(x.size)
    return {"ft_loss": x, "forget_ce": y, "run_id": np.repeat([f"{prefix}{i}" for i in range(n_runs)], 3),
            "step": np.tile([8, 16, 24], n_runs)}


def _cat(*parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def test_verdicts_follow_the_sign_of_the_prediction_interval():
    plain = _plain()
    assert fit_line(plain["ft_loss"], plain["forget_ce"])["c_fft"] == pytest.approx(0.8, abs=0.05)
    pts = _cat(_level(-0.2, 3, "k"), _level(0.2, 3, "p"), _level(0.0, 3, "w"))
    labels = [("kl", 1.0)] * 9 + [("replay", 0.1)] * 9 + [("weight_decay", 0.1)] * 9
    out = {o["mitigation"]: o for o in frontier(plain, pts, labels)}
    assert out["kl"]["verdict"] == "beats_line" and out["kl"]["residual"] == pytest.approx(-0.2, abs=0.03)
    assert out["replay"]["verdict"] == "worse"
    assert out["weight_decay"]["verdict"] == "on_line"
    for o in out.values():
        assert o["lo"] <= o["residual"] <= o["hi"] and o["reason"] is None
        assert o["n_points"] == 9 and o["n_runs"] == 3 and o["n_plain_runs"] == 5 and o["n_outside"] == 0


def test_the_interval_is_for_new_runs_not_the_line():
    """The interval holds the plain runs' run-to-run spread: wider than the line's error alone, and
    narrower for a level of more runs."""
    plain = _plain(noise=0.03)
    two, six = (frontier(plain, _level(0.0, k, "m"), [("kl", 1.0)] * (3 * k))[0] for k in (2, 6))
    assert two["hi"] - two["lo"] > six["hi"] - six["lo"] > 0.03


def test_one_run_or_too_few_plain_runs_is_undecided_with_a_reason():
    one = frontier(_plain(), _level(-0.2, 1, "m"), [("kl", 1.0)] * 3)[0]
    assert one["verdict"] == "undecided" and "1 run" in one["reason"] and one["lo"] is None
    few = frontier(_plain(n_runs=2), _level(-0.2, 3, "m"), [("kl", 1.0)] * 9)[0]
    assert few["verdict"] == "undecided" and "plain runs" in few["reason"]


def test_post_hoc_levels_are_paired_within_run():
    """A rescaled point is judged against its own run's scale-1 point at the same step: a large run effect
    cancels, so a 0.05-nat shift is found although the plain runs' spread is larger (sd ~0.15)."""
    plain = _plain(noise=0.1)
    sel = plain["step"] == 32
    pts = {"ft_loss": plain["ft_loss"][sel] + 0.1, "run_id": plain["run_id"][sel], "step": plain["step"][sel]}
    pts["forget_ce"] = plain["forget_ce"][sel] - 0.08 + 0.05  # along the line by -0.8 * 0.1, then 0.05 above
    out = frontier(plain, pts, [("rescale", 0.5)] * int(sel.sum()))[0]
    # the line's slope enters the contrast over 0.1 of ft_loss only: the residual is 0.05 up to ~0.01
    assert out["verdict"] == "worse" and out["residual"] == pytest.approx(0.05, abs=0.015) and out["n_runs"] == 5
    assert "paired" in out["test"] and "rescale" in POST_HOC
    unpaired = frontier(plain, pts, [("replay", 0.5)] * int(sel.sum()))[0]
    assert unpaired["verdict"] == "on_line"  # the same points judged against new plain runs: spread too large


def test_points_outside_the_plain_range_are_counted():
    out = frontier(_plain(), {"ft_loss": np.array([1.0, 2.0, 3.0]), "forget_ce": np.array([3.2, 2.4, 1.6]),
                              "run_id": np.array(["a", "a", "b"]), "step": np.array([8, 16, 8])},
                   [("kl", 1.0)] * 3)  # fmt: skip
    assert out[0]["n_outside"] == 2 and out[0]["n_runs"] == 2


def test_residuals_are_observed_minus_line():
    r = residuals({"c_fft": 2.0, "s_fft": 5.0}, np.array([1.0, 2.0]), np.array([3.5, 0.5]))
    assert r.tolist() == [0.5, -0.5]


def test_plain_run_ids_do_not_change_and_mitigations_enter_them():
    from forgetscale.config import MitigationConfig, RunConfig, canonical_json

    plain = RunConfig()
    # a plain run hashes exactly what it hashed before mitigations existed: old stores resume
    d = plain.model_dump(mode="json")
    d.pop("mitigation")
    d.pop("method")  # plain LoRA: ids from before the method axis resume too
    d["model"].pop("device")  # where a run ran is provenance: ids from before model.device resume too
    old = hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    assert plain.run_id == old
    assert canonical_json(plain)  # still usable for whole configs
    kl = RunConfig(mitigation=MitigationConfig(kind="kl", kl_weight=0.5))
    assert kl.run_id != plain.run_id
    # a field the kind does not use does not change the id
    assert RunConfig(mitigation=MitigationConfig(kind="kl", kl_weight=0.5, replay_fraction=0.2)).run_id == kl.run_id
    assert RunConfig(mitigation=MitigationConfig(kind="kl", kl_weight=2.0)).run_id != kl.run_id
    assert RunConfig(mitigation=MitigationConfig(kl_weight=2.0)).run_id == plain.run_id


def test_scales_drop_one_and_reject_negatives():
    from pydantic import ValidationError

    from forgetscale.config import MitigationConfig

    assert MitigationConfig(scales=(0.75, 1.0, 0.25)).scales == (0.25, 0.75)
    with pytest.raises(ValidationError):
        MitigationConfig(scales=(-0.5,))
    with pytest.raises(ValidationError):
        MitigationConfig(replay_fraction=1.0)


def test_mitigations_preset_is_built_from_the_default():
    from forgetscale.config import load_config
    from forgetscale.presets import PRESETS

    default = load_config(preset="default").runs()[0]
    study = load_config(preset="mitigations")
    runs = study.runs()
    assert {r.mitigation.kind for r in runs} == {"none", "replay", "kl"}
    # the plain runs are also measured after training, rescaled (2-3 scales) and with intruders reduced
    plain = [r for r in runs if r.mitigation.kind == "none"]
    assert all(r.mitigation.post_hoc_methods() == ("rescale", "intruders") for r in plain)
    assert all(2 <= len(r.mitigation.scales) <= 3 and r.mitigation.intruder_lambdas for r in plain)
    for kind in ("replay", "kl"):  # at least 2 runs per level (a level: kind and strength)
        assert len([r for r in runs if r.mitigation.kind == kind]) >= 2
    assert len({r.lora.rank for r in runs}) >= 3 and len({r.data.dataset for r in runs}) == 1
    for r in runs:  # the default's training settings, but for the steps
        assert r.train.model_dump(exclude={"steps", "eval_steps", "n_evals"}) == default.train.model_dump(
            exclude={"steps", "eval_steps", "n_evals"})
        first = min(s for s in r.eval_schedule() if s)
        assert first >= study.fit.min_step == load_config(preset="default").fit.min_step
    assert "mitigations" in PRESETS and not study.probes.enabled


def test_a_post_hoc_level_that_changed_nothing_is_undecided():
    """Intruder reduction that found no intruder reproduces each run's own points: nothing to judge,
    rather than an 'on_line' verdict from a zero-width interval."""
    x = np.tile([1.0, 2.0, 3.0], 3)
    runs = np.repeat(["a", "b", "c"], 3)
    steps = np.tile([8, 16, 32], 3)
    y = 5.0 - x + 0.01 * np.repeat([1.0, -1.0, 0.5], 3)
    plain = {"ft_loss": x, "forget_ce": y, "run_id": runs, "step": steps}
    last = steps == 32
    same = {"ft_loss": x[last], "forget_ce": y[last], "run_id": runs[last], "step": steps[last]}
    (row,) = frontier(plain, same, [("intruders", 0.0)] * 3)
    assert row["verdict"] == "undecided" and "unchanged" in row["reason"] and row["residual"] == 0.0
    moved = {**same, "forget_ce": y[last] - 0.05 + 1e-3 * np.arange(3)}
    (row,) = frontier(plain, moved, [("intruders", 0.0)] * 3)
    assert row["verdict"] == "beats_line" and row["hi"] < 0


def test_run_spread_is_modelled_in_p_and_a_noisy_rank_gets_its_own():
    # plain run residuals whose sd grows 4x from the smallest to the largest rank: the fitted spread at
    # the largest rank must exceed the smallest's (pooled, they would be equal), and the slope of log
    # variance in log P, averaged over 200 draws of 12 runs, must be near the true 2·log(4)/log(64) = 0.67
    from forgetscale.laws.frontier import run_variance

    rng = np.random.default_rng(0)
    levels = np.repeat([1.0, 4.0, 16.0, 64.0], 3)
    sd = 0.02 * (levels / levels[0]) ** (np.log(4) / np.log(64))
    slopes = [run_variance(rng.standard_normal(12) * sd, levels)["gamma"][1] for _ in range(200)]
    assert np.mean(slopes) == pytest.approx(2 * np.log(4) / np.log(64), abs=0.12)  # sd of the mean ~0.03
    m = run_variance(rng.standard_normal(12) * sd, levels)
    assert "linear in log P" in m["model"] and m["slope"] is not None
    assert "equal" in run_variance(rng.standard_normal(12) * sd, None)["model"]


def test_a_level_is_judged_with_the_spread_at_its_own_rank():
    # the same plain level, placed at the quietest or the noisiest rank of a study whose run spread
    # grows with rank: the noisy rank's interval is wider, and the row says how its spread was had
    rng = np.random.default_rng(2)
    ranks = np.repeat([1.0, 4.0, 16.0, 64.0], 2)
    parts = []
    for i, r in enumerate(ranks):
        x = np.array([1.5, 1.8, 2.1, 2.4]) - 0.1 * np.log(r)
        y = 4.0 - 0.8 * x + 0.02 * (r / 1.0) ** 0.5 * rng.standard_normal() + 0.003 * rng.standard_normal(4)
        parts.append({"ft_loss": x, "forget_ce": y, "run_id": np.repeat(f"p{i}", 4), "step": np.array([8, 16, 24, 32]),
                      "P": np.repeat(r, 4)})
    plain = _cat(*parts)
    widths = {}
    for r in (1.0, 64.0):
        lvl = {**_level(0.0, 2, "m"), "P": np.repeat(r, 6)}
        row = frontier(plain, lvl, [("kl", 1.0)] * 6)[0]
        widths[r] = row["hi"] - row["lo"]
        assert "linear in log P" in row["variance"] and "forgetting corpus" in row["conditional_on"]
    assert widths[64.0] > 2 * widths[1.0], widths
