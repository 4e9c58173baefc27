"""The method axis on the tiny Llama: every method trains without writing the base, starts exactly at the
base (KL 0), counts P as stated, and is stored, compared and reloadable by stock libraries."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from forgetscale.cli import main
from tests.helpers import TINY_STUDY, store_rows

METHODS = ("[{method.kind: lora, lora.rank: 2}, {method.kind: lora, lora.rank: 4}, {method.kind: dora, lora.rank: 2},"
           " {method.kind: lora, lora.rank: 2, lora.target_modules: mlp}, {method.kind: ia3, train.lr: 0.05},"
           " {method.kind: full, method.blocks: 1, train.lr: 0.001}, {method.kind: full, train.lr: 0.0005}]")
KINDS = {"lora": {"kind": "lora"}, "dora": {"kind": "dora"}, "ia3": {"kind": "ia3"},
         "full-last1": {"kind": "full", "blocks": 1}, "full": {"kind": "full"}}  # fmt: skip


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def _overrides(tiny_model: Path, *extra: str) -> list[str]:
    keep = [o for o in TINY_STUDY if not o.startswith(("sweep.", "fit.", "train.precision"))]
    return [f"model.name={tiny_model}", *keep, "train.precision=fp32", "train.steps=4", "train.eval_steps=[2,4]",
            "fit.min_step=2", "fit.n_boot=0", "probes.enabled=false", "data.dataset=news", *extra]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """Each method, two data orders (LoRA at two ranks: four reference runs, enough to calibrate on)."""
    out = tmp_path_factory.mktemp("methods")
    args = _overrides(tiny_model, f"sweep.method={METHODS}", "sweep.train.seed=[0,1]")
    assert main(["run", "--out", str(out), *_sets(args)]) == 0
    return out


def _runs(out: Path) -> list[dict]:
    return store_rows(out, "SELECT * FROM runs")


def _expected_P(cfg, method: str, size: int) -> int:
    """P by the counts docs/methods.md states, from the architecture alone (Llama: q, k, v, o, gate, up, down)."""
    d, f, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    shapes = {"q_proj": (d, d), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (d, d),
              "gate_proj": (d, f), "up_proj": (d, f), "down_proj": (f, d)}  # (d_in, d_out)
    block = sum(i * o for i, o in shapes.values()) + 2 * d  # the linears and the block's two RMSNorms
    mlp = ("gate_proj", "up_proj", "down_proj")
    if method == "lora":
        return n * size * sum(i + o for i, o in shapes.values())
    if method == "lora-mlp":
        return n * size * sum(i + o for m, (i, o) in shapes.items() if m in mlp)
    if method == "dora":  # LoRA plus a magnitude per output feature
        return n * sum(size * (i + o) + o for i, o in shapes.values())
    if method == "ia3":  # k and v scale their outputs; down_proj (feed-forward) its input
        return n * (shapes["k_proj"][1] + shapes["v_proj"][1] + shapes["down_proj"][0])
    if size:  # full, the last `size` blocks
        return size * block
    return n * block + d + cfg.vocab_size * d  # every weight: + final norm + the (tied) embedding


def test_each_method_is_stored_by_method_with_its_exact_P(study, tiny_model):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(tiny_model)
    runs = _runs(study)
    assert all(r["status"] == "done" for r in runs) and len(runs) == 14
    seen = {(r["method"], r["rank"]): r["P"] for r in runs}
    assert set(seen) == {("lora", 2), ("lora", 4), ("dora", 2), ("lora-mlp", 2), ("ia3", 0), ("full", 1), ("full", 0)}
    for (method, size), P in seen.items():
        assert _expected_P(cfg, method, size) == P, (method, size)


def test_every_method_starts_exactly_at_the_base_and_moves_away(study):
    con = sqlite3.connect(study / "study.sqlite")
    try:
        rows = con.execute("SELECT r.method, m.step, m.forget_kl FROM measurements m JOIN runs r USING (run_id)")
        rows = rows.fetchall()
    finally:
        con.close()
    assert {m for m, _, _ in rows} == {"lora", "dora", "lora-mlp", "ia3", "full"}
    assert all(kl == 0.0 for _, step, kl in rows if step == 0)
    assert all(kl > 0.0 for _, step, kl in rows if step == 4)


def _tiny_run(tiny_model: Path, method: dict):
    """A 3-step run of ``method`` on the tiny model, trained directly (no study)."""
    from forgetscale.config import RunConfig

    return RunConfig.model_validate({"model": {"name": str(tiny_model)}, "method": method,
                                     "lora": {"rank": 2}, "forgetting": {"n_prompts": 3, "max_new_tokens": 8},
                                     "data": {"n_train": 16, "n_heldout": 4},
                                     "train": {"steps": 3, "batch_size": 4, "seq_len": 64, "eval_steps": [],
                                               "precision": "fp32", "lr": 0.01}})  # fmt: skip


@pytest.mark.parametrize("name", list(KINDS))
def test_a_fresh_method_is_the_base_exactly_and_training_never_writes_the_base(name, tiny_model, tmp_path):
    """Measured directly (not the study's cached step-0 row): KL exactly 0 before an update; after real
    updates the model has moved and the base's every tensor hashes as before."""
    import torch

    from forgetscale import methods, train
    from forgetscale.fold import folded
    from forgetscale.forgetting import measure
    from forgetscale.workspace import Workspace

    run = _tiny_run(tiny_model, KINDS[name])
    ws = Workspace(tmp_path / "cache")
    lm, ref = ws.model(run), ws.reference(run)

    def digest(model) -> str:
        h = hashlib.sha256()
        for k, v in sorted(model.state_dict().items()):
            h.update(k.encode() + v.detach().cpu().numpy().tobytes())
        return h.hexdigest()

    before = digest(lm.model)
    trained = methods.attach(lm.model, run)
    try:
        assert methods.is_identity(trained, lm.model)
        with folded(trained):
            assert measure(trained, ref, 8)["forget_kl"] == 0.0
        train.train(trained, lm.tokenizer, run, ws.data(run)[0], lambda *a: None)
        assert not methods.is_identity(trained, lm.model)
        with folded(trained), torch.no_grad():
            assert measure(trained, ref, 8)["forget_kl"] > 0.0
    finally:
        base = methods.detach(trained, lm.model)
    assert base is lm.model and digest(lm.model) == before


def test_a_trained_dora_adapter_is_folded_and_evaluates_as_peft_does(tiny_model, tmp_path):
    """Every DoRA layer folds into m / ||W + s B A|| * (W + s B A): one matmul per layer instead of DoRA's
    per-forward weight norm; the metrics equal PEFT's own unfolded forward to fp32 rounding."""
    import torch

    from forgetscale import methods, train
    from forgetscale.fold import folded
    from forgetscale.forgetting import measure
    from forgetscale.workspace import Workspace

    run = _tiny_run(tiny_model, {"kind": "dora"})
    ws = Workspace(tmp_path / "cache")
    lm, ref = ws.model(run), ws.reference(run)
    trained = methods.attach(lm.model, run)
    try:
        train.train(trained, lm.tokenizer, run, ws.data(run)[0], lambda *a: None)
        dora_layers = sum(1 for m in trained.modules() if getattr(m, "use_dora", {}).get("default"))
        assert dora_layers > 0
        with folded(trained), torch.no_grad():
            assert sum("forward" in m.__dict__ for m in trained.modules()) == dora_layers
            fast = measure(trained, ref, 8)
        trained.eval()
        with torch.no_grad():
            slow = measure(trained, ref, 8)
    finally:
        methods.detach(trained, lm.model)
    assert slow["forget_kl"] > 0.0
    for k in ("forget_kl", "forget_ce", "base_entropy"):
        # one fp32 matmul over the folded weight against PEFT's base matmul, rescale and LoRA matmuls: fp32
        # rounding of the logits (~1e-7 relative), within the 1e-6 the LoRA fold is held to
        assert fast[k] == pytest.approx(slow[k], rel=1e-6, abs=1e-9), k


def _final_kl(out: Path, run_id: str) -> float:
    con = sqlite3.connect(out / "study.sqlite")
    try:
        return con.execute("SELECT forget_kl FROM measurements WHERE run_id = ? ORDER BY step DESC LIMIT 1",
                           (run_id,)).fetchone()[0]  # fmt: skip
    finally:
        con.close()


@pytest.mark.parametrize("method", ["dora", "full"])
def test_a_saved_dora_adapter_and_full_fine_tune_reload_with_stock_libraries(study, tiny_model, method, tmp_path):
    """What the study saved, loaded by stock PEFT / transformers and measured again, gives the stored row."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from forgetscale.config import RunConfig
    from forgetscale.forgetting import measure
    from forgetscale.workspace import Workspace

    run_row = next(r for r in _runs(study) if r["method"] == method and r["rank"] in (2, 1))
    run = RunConfig.model_validate(json.loads(run_row["config"]))
    ws = Workspace(Path(__import__("os").environ["FORGETSCALE_CACHE"]))
    ref = ws.reference(run)
    saved = study / "adapters" / run_row["run_id"]
    if method == "full":
        model = AutoModelForCausalLM.from_pretrained(saved)
    else:
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), saved)
    model.eval()
    assert measure(model, ref, 8)["forget_kl"] == pytest.approx(_final_kl(study, run_row["run_id"]), rel=1e-5)


def test_compare_gives_one_row_per_method_and_fits_carry_f7(study, capsys):
    assert main(["compare", str(study), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["method"] for r in rows) == ["dora", "full", "ia3", "lora-mlp"]
    for r in rows:
        assert {"method", "difference", "lo", "hi", "verdict", "reason"} <= set(r)
        assert r["verdict"] in ("forgets_less", "same", "forgets_more", "undecided")
        if r["lo"] is not None:
            assert r["lo"] <= r["difference"] <= r["hi"]
        assert (r["reason"] is not None) == (r["verdict"] == "undecided")
    fits = json.loads((study / "fits.json").read_text())
    f7 = [f for f in fits["findings"] if f["finding"] == "F7"]
    assert len(f7) == 1 and f7[0]["verdict"] in ("supported", "not_supported", "undecided")
    assert {m["method"] for m in f7[0]["evidence"]["methods"]} == {"dora", "full", "ia3", "lora-mlp"}
    assert {"news", "news [dora]", "news [full]", "news [ia3]", "news [lora-mlp]"} <= set(fits["fits"])


@pytest.mark.parametrize(("extra", "needles"), [
    (["method.kind=full", "mitigation.kind=kl"], ("mitigation.kind kl", "full")),
    (["method.kind=dora", "mitigation.post_hoc=[rescale]"], ("post-hoc", "dora")),
    (["method.blocks=1"], ("method.blocks", "full only")),
    (["method.kind=full", "method.blocks=9"], ("method.blocks", "9", "2 transformer blocks")),
    (["lora.target_modules=[q_proj, nope]"], ("lora.target_modules", "nope")),
])  # fmt: skip
def test_a_method_that_does_not_apply_is_one_line_and_writes_nothing(extra, needles, tiny_model, tmp_path, capsys):
    out = tmp_path / "study"
    rc = main(["run", "--out", str(out), *_sets(_overrides(tiny_model, *extra))])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("forgetscale: error: ")]
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err  # after the model loaded: its log line too
    assert all(n in errors[0] for n in needles), errors[0]
    assert not out.exists() or not any(out.iterdir())


def test_a_store_from_before_the_method_axis_reads_its_runs_as_lora(tmp_path):
    from forgetscale.store import open_store

    path = tmp_path / "old"
    with open_store(path) as store:
        store.register_run("r1", {"lora": {"rank": 4}}, "news", 4)
    con = sqlite3.connect(path / "study.sqlite")
    con.execute("ALTER TABLE runs DROP COLUMN method")  # the table as stores before methods wrote it
    con.commit()
    con.close()
    with open_store(path) as store:
        assert [(r["run_id"], r["method"]) for r in store.runs()] == [("r1", "lora")]


def test_the_report_has_a_methods_section_with_its_figure_and_no_empty_mitigations(study):
    assert main(["report", str(study)]) == 0
    html = (study / "report.html").read_text()
    section = html[html.index('<section id="methods">'):]
    section = section[: section.index("</section>")]
    assert all(f"<td>{m}</td>" in section for m in ("dora", "full", "ia3", "lora-mlp"))
    assert 'id="figure-methods"' in section and "<svg" in section
    assert 'id="mitigations"' not in html
    assert main(["report", str(study), "--format", "md"]) == 0
    md = (study / "report.md").read_text()
    assert "## Methods against LoRA at equal fine-tuning loss" in md and "## Mitigations" not in md
