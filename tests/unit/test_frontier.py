"""The frontier test (laws/frontier.py) and the mitigation config: pure, fast."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from forgetscale.laws.frontier import fit_line, frontier, residuals


def _plain(noise: float = 0.01, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.tile([1.5, 1.8, 2.1, 2.4], 5)
    runs = np.repeat([f"r{i}" for i in range(5)], 4)
    return x, 4.0 - 0.8 * x + noise * rng.standard_normal(x.size), runs


def test_verdicts_follow_the_sign_of_the_interval():
    x, y, runs = _plain()
    line = fit_line(x, y, runs, n_boot=100)
    assert line.params["c_fft"] == pytest.approx(0.8, abs=0.05)
    px = np.array([1.6, 2.0, 2.3] * 3)
    on = 4.0 - 0.8 * px
    pts_y = np.concatenate([on[:3] - 0.2, on[3:6] + 0.2, on[6:] + np.array([0.005, -0.005, 0.0])])
    labels = [("kl", 1.0)] * 3 + [("replay", 0.1)] * 3 + [("rescale", 0.5)] * 3
    prun = np.array(["a", "b", "c", "d", "e", "f", "g", "h", "i"])
    out = {o["mitigation"]: o for o in frontier(line, px, pts_y, prun, labels, n_boot=400)}
    assert out["kl"]["verdict"] == "beats_line" and out["kl"]["residual"] == pytest.approx(-0.2, abs=0.02)
    assert out["replay"]["verdict"] == "worse"
    assert out["rescale"]["verdict"] == "on_line"
    for o in out.values():
        assert o["lo"] <= o["residual"] <= o["hi"]
        assert o["n_points"] == 3 and o["n_runs"] == 3 and o["n_outside"] == 0


def test_points_outside_the_plain_range_are_counted():
    x, y, runs = _plain()
    line = fit_line(x, y, runs, n_boot=20)
    out = frontier(line, np.array([1.0, 2.0, 3.0]), np.array([3.2, 2.4, 1.6]), np.array(["a", "a", "b"]),
                   [("kl", 1.0)] * 3, n_boot=50)  # fmt: skip
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
    from forgetscale.config import PRESETS, load_study

    default = load_study(preset="default").runs()[0]
    study = load_study(preset="mitigations")
    runs = study.runs()
    assert {r.mitigation.kind for r in runs} == {"rescale", "replay", "kl"}
    assert len({r.lora.rank for r in runs}) >= 3 and len({r.data.dataset for r in runs}) == 1
    for r in runs:  # the default's training settings, but for the steps
        assert r.train.model_dump(exclude={"steps", "eval_steps", "n_evals"}) == default.train.model_dump(
            exclude={"steps", "eval_steps", "n_evals"})
        assert min(s for s in r.eval_schedule() if s) >= study.fit.min_step == load_study(preset="default").fit.min_step
    assert "mitigations" in PRESETS and not study.probes.enabled
