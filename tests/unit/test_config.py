from pathlib import Path

import pytest

from forgetscale.config import RunConfig, load_config, log_schedule
from forgetscale.errors import UserError
from forgetscale.presets import PRESETS


def test_default_preset_meets_the_study_shape():
    """The default study's design rules: >= 4 ranks over >= 64x in P, each with >= 2 independent data
    orders; >= 4 evaluations at or after fit.min_step spanning >= 4x in N; batches in random order (no
    length curriculum confounding N)."""
    study = load_config()
    runs = study.runs()
    assert {r.data.dataset for r in runs} == {"news"}
    ranks = sorted({r.lora.rank for r in runs})
    assert len(ranks) >= 4 and ranks[-1] / ranks[0] >= 64
    for rank in ranks:
        assert len({r.train.seed for r in runs if r.lora.rank == rank}) >= 2
    sched = runs[0].eval_schedule()
    fitted = [s for s in sched if s >= study.fit.min_step]
    assert sched[0] == 0 and len(fitted) >= 4 and fitted[-1] / fitted[0] >= 4
    assert all(r.forgetting.corpus == "self" and r.train.sampling == "random" for r in runs)
    assert study.probes.enabled and study.probes.max_items >= 20  # enough items to decide F5


def test_run_ids_are_stable_and_distinct():
    a = [r.run_id for r in load_config().runs()]
    b = [r.run_id for r in load_config().runs()]
    assert a == b and len(set(a)) == len(a)
    changed = load_config(overrides=["train.lr=0.5"]).runs()
    assert not set(a) & {r.run_id for r in changed}


def test_precedence_set_over_file_over_preset(tmp_path: Path):
    f = tmp_path / "s.yaml"
    f.write_text("train:\n  steps: 10\n  lr: 0.01\n")
    s = load_config(f, "smoke", ["train.lr=0.02"])
    assert s.train.steps == 10  # file over preset (smoke has 8)
    assert s.train.lr == 0.02  # --set over file
    assert s.train.batch_size == PRESETS["smoke"]["train"]["batch_size"]  # preset over default


def test_yaml_scientific_notation_is_a_float():
    assert load_config(overrides=["train.lr=1e-4"]).train.lr == pytest.approx(1e-4)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["train.lrr=1"], "unknown key 'train.lrr'"),
        (["train.steps=many"], "train.steps"),
        (["lora.rank=0"], "lora.rank"),
        (["train.optimizer=sgd"], "train.optimizer"),
        (["sweep.lora.rnk=[1,2]"], "lora.rnk"),
        (["nonsense"], "key=value"),
    ],
)
def test_bad_overrides_name_the_key(overrides, needle):
    with pytest.raises(UserError) as e:
        load_config(overrides=overrides)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_files(tmp_path: Path):
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("trian:\n  steps: 3\n")
    with pytest.raises(UserError, match="unknown key 'trian'"):
        load_config(unknown)
    with pytest.raises(UserError, match="unknown preset"):
        load_config(preset="huge")


def test_config_is_frozen():
    cfg = RunConfig()
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises its own ValidationError
        cfg.train.steps = 3  # type: ignore[misc]


@pytest.mark.parametrize(("steps", "n"), [(32, 6), (260, 12), (8, 4), (1, 6), (100, 7)])
def test_log_schedule(steps, n):
    s = log_schedule(steps, n)
    assert s[0] == 0 and s[-1] == steps
    assert list(s) == sorted(set(s))
    assert len(s) == min(n, steps + 1)


def test_paper_preset_validates():
    s = load_config(preset="paper")
    assert s.train.optimizer == "adafactor" and s.train.batch_size == 32 and s.train.seq_len == 512
    assert sorted({r.lora.rank for r in s.runs()}) == [8, 16, 32, 64, 128, 256]


def test_fp16_is_refused_with_the_reason():
    """fp16's loss scaler skips updates while global_step advances: N would not count updates."""
    with pytest.raises(UserError, match=r"train\.precision: .*fp16 is not supported.*skips updates"):
        load_config(overrides=["train.precision=fp16"])


def test_probes_can_select_the_largest_rank_per_dataset():
    study = load_config(overrides=["probes.runs=largest_rank", "sweep.lora.rank=[1,4,16]",
                                  "sweep.data.dataset=[news,instruct]"])
    picked = [(r.data.dataset, r.lora.rank, r.train.seed) for r in study.probed_runs()]
    # every data order of the largest rank (the default sweeps two)
    assert sorted(picked) == [("instruct", 16, 0), ("instruct", 16, 1), ("news", 16, 0), ("news", 16, 1)]
    assert len(load_config(overrides=["probes.runs=all", "sweep.lora.rank=[1,4]"]).probed_runs()) == 4


def test_post_hoc_methods_enter_the_run_id_only_when_set():
    from forgetscale.config import RunConfig

    plain = RunConfig()
    assert plain.mitigation.id_fields() is None  # plain runs keep the ids they had before mitigations
    rescale = RunConfig.model_validate({"mitigation": {"kind": "rescale"}})
    assert rescale.mitigation.id_fields() == {"kind": "rescale", "scales": [0.25, 0.5, 0.75], "rescale_steps": "final"}
    a = RunConfig.model_validate({"mitigation": {"post_hoc": ["intruders", "rescale"]}})
    b = RunConfig.model_validate({"mitigation": {"post_hoc": ["rescale", "intruders"]}})
    assert a.run_id == b.run_id != plain.run_id  # one order, one id; measuring more is another run
    assert a.mitigation.post_hoc_methods() == ("rescale", "intruders")
    # trained kinds ignore post-hoc settings (a sweep sets them for every kind): same id with or without
    kl = RunConfig.model_validate({"mitigation": {"kind": "kl"}})
    kl_ph = RunConfig.model_validate({"mitigation": {"kind": "kl", "post_hoc": ["intruders"]}})
    assert kl.run_id == kl_ph.run_id and kl_ph.mitigation.post_hoc_methods() == ()
    with pytest.raises(ValueError):
        RunConfig.model_validate({"mitigation": {"intruder_lambdas": [1.5]}})


def test_sweep_exclude_leaves_out_matching_combinations():
    study = load_config(overrides=["sweep.lora.rank=[1,4]", "sweep.mitigation.kind=[none,kl]",
                                   "sweep.train.seed=[0]", "sweep_exclude=[{lora.rank: 4, mitigation.kind: kl}]"])
    assert [(r.lora.rank, r.mitigation.kind) for r in study.runs()] == [(1, "none"), (1, "kl"), (4, "none")]
    with pytest.raises(UserError, match="not among the sweep's axes"):
        load_config(overrides=["sweep.lora.rank=[1,4]", "sweep_exclude=[{lora.alpha: 4}]"])
    # --set on a swept key drops the axis, and the exclusions that name it with it
    fixed = load_config(preset="mitigations", overrides=["lora.rank=4"])
    assert {r.mitigation.kind for r in fixed.runs()} == {"none", "replay", "kl"}


def test_a_bundle_axis_sets_its_keys_together_and_set_beats_it():
    bundle = "sweep.method=[{method.kind: full, method.blocks: 2, train.lr: 0.0001}, {method.kind: lora, lora.rank: 8}]"
    runs = load_config(overrides=[bundle, "sweep.lora.rank=[4]"]).runs()  # the default's train.seed axis stays
    assert [(r.method.kind, r.method.blocks, r.lora.rank, r.train.lr, r.train.seed) for r in runs] == [
        ("full", 2, 4, 1e-4, 0), ("lora", None, 8, 4e-3, 0), ("full", 2, 4, 1e-4, 1), ("lora", None, 8, 4e-3, 1)]
    pinned = load_config(overrides=[bundle, "train.lr=0.5"]).runs()  # an explicit key beats the bundle's
    assert {r.train.lr for r in pinned} == {0.5}


def test_runs_that_differ_only_in_a_section_their_method_ignores_are_one_run():
    from forgetscale.config import StudyConfig

    runs = StudyConfig.model_validate({"sweep": {"lora.rank": [1, 4, 16], "method.kind": ["lora", "ia3"]}}).runs()
    assert [(r.method.kind, r.lora.rank) for r in runs] == [("lora", 1), ("ia3", 1), ("lora", 4), ("lora", 16)]
    assert len({r.run_id for r in runs}) == 4


def test_method_labels_sizes_and_named_target_sets():
    from forgetscale.config import TARGET_SETS

    mlp = RunConfig(lora={"target_modules": "mlp"})
    assert mlp.lora.target_modules == TARGET_SETS["mlp"] and mlp.method_label == "lora-mlp"
    assert mlp.run_id == RunConfig(lora={"target_modules": list(TARGET_SETS["mlp"])}).run_id  # a name is its list
    assert RunConfig(method={"kind": "dora"}, lora={"target_modules": "attention"}).method_label == "dora-attention"
    assert RunConfig(lora={"target_modules": ["q_proj", "v_proj"]}).method_label == "lora"  # not a named set
    assert [RunConfig(method=m, lora={"rank": 8}).size for m in
            ({"kind": "lora"}, {"kind": "ia3"}, {"kind": "full", "blocks": 3}, {"kind": "full"})] == [8, 0, 3, 0]
    assert RunConfig(method={"kind": "dora"}).run_id != RunConfig().run_id


@pytest.mark.parametrize(("cfg", "needle"), [
    ({"method": {"kind": "lora", "blocks": 2}}, "full only"),
    ({"method": {"kind": "full"}, "mitigation": {"kind": "kl"}}, "needs an adapter"),
    ({"method": {"kind": "ia3"}, "mitigation": {"post_hoc": ["intruders"]}}, "lora, not ia3"),
    ({"method": {"kind": "sft"}}, "method.kind"),
])  # fmt: skip
def test_a_method_setting_that_cannot_apply_is_refused(cfg, needle):
    from forgetscale.config import validate

    with pytest.raises(UserError, match=needle):
        validate(RunConfig, cfg, "test")
