"""The study pipeline through the real CLI on a tiny random Llama: invariants, resume, bad input."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forgetscale.cli import main
from forgetscale.config import load_config
from tests.helpers import count_rows


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def _rows(out: Path) -> list[tuple]:
    con = sqlite3.connect(out / "study.sqlite")
    try:
        return con.execute(
            "SELECT run_id, step, tokens, ft_loss, forget_ce, forget_kl, base_entropy, forget_top1_ce, data_loss"
            " FROM measurements ORDER BY run_id, step"
        ).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> tuple[Path, list[str], str]:
    """The tiny study run once through the CLI: its directory, its overrides and what it wrote to stderr."""
    from tests.helpers import TINY_STUDY

    overrides = [f"model.name={tiny_model}", *TINY_STUDY]
    out = tmp_path_factory.mktemp("study")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):  # the log handler writes to the current sys.stderr
        assert main(["run", "--out", str(out), *_sets(overrides)]) == 0
    sys.stderr.write(err.getvalue())  # still shown with a failure's captured output
    return out, overrides, err.getvalue()


@pytest.fixture(scope="module")
def finished_study(first_run: tuple[Path, list[str], str]) -> tuple[Path, list[str]]:
    return first_run[0], first_run[1]


def test_the_plan_is_printed_before_the_first_run(first_run):
    lines = first_run[2].splitlines()
    plan = [i for i, line in enumerate(lines) if line.startswith("plan: ")]
    progress = [i for i, line in enumerate(lines) if re.match(r"\[[^\]]+\] step +\d+/\d+ ", line)]
    assert len(plan) == 1 and progress, first_run[2]
    assert plan[0] < progress[0], first_run[2]
    assert re.search(r"plan: 4 of 4 runs to train, \d+ steps and \d+ evaluations on \d+ corpus tokens", lines[plan[0]])


def test_every_planned_row_is_stored(finished_study):
    from forgetscale.models import cache_dir
    from forgetscale.precision import pin_for_study

    out, overrides = finished_study
    # the study recorded its `auto` precision as resolved on creation; its run ids hash that value
    runs = pin_for_study(load_config(overrides=overrides), out, cache_dir()).runs()
    expected = {(r.run_id, s) for r in runs for s in r.eval_schedule()}
    assert {(r[0], r[1]) for r in _rows(out)} == expected
    con = sqlite3.connect(out / "study.sqlite")
    statuses = con.execute("SELECT status, P, provenance FROM runs").fetchall()
    assert all(s == "done" for s, _, _ in statuses)
    ps = sorted({p for _, p, _ in statuses})
    assert len(ps) == 2 and ps[1] == 4 * ps[0]  # P is linear in rank
    prov = json.loads(statuses[0][2])
    assert prov["versions"]["transformers"] and prov["model_fingerprint"].startswith("sha256:")


def test_step_zero_is_the_identity(finished_study):
    out, _ = finished_study
    zero = [r for r in _rows(out) if r[1] == 0]
    assert zero
    for _run, _step, tokens, _ft, ce, kl, h, _top1, _data in zero:
        assert tokens == 0
        assert abs(kl) < 1e-5
        assert ce == pytest.approx(h, abs=1e-5)
    # every run's step 0 is the same base model, so runs on one dataset have identical step-0 rows
    con = sqlite3.connect(out / "study.sqlite")
    dataset = dict(con.execute("SELECT run_id, dataset FROM runs").fetchall())
    con.close()
    per_dataset = {(dataset[r[0]], r[2:]) for r in zero}
    assert len(per_dataset) == len(set(dataset.values()))


def test_kl_is_nonnegative_and_grows(finished_study):
    out, _ = finished_study
    by_run: dict[str, list[tuple]] = {}
    for r in _rows(out):
        by_run.setdefault(r[0], []).append(r)
        assert r[5] >= 0
        assert r[4] == pytest.approx(r[6] + r[5], abs=1e-4)  # CE = H + KL
    for rows in by_run.values():
        assert rows[-1][5] > rows[0][5] + 1e-4  # training moved the model away from the base


def test_adapters_saved_in_peft_format(finished_study):
    out, _ = finished_study
    adapters = list((out / "adapters").iterdir())
    assert len(adapters) == 4
    for a in adapters:
        assert (a / "adapter_config.json").is_file() and (a / "adapter_model.safetensors").is_file()
    assert not [p for p in (out / "adapters").iterdir() if p.name.startswith(".tmp")]


def test_rerun_skips_finished_runs(finished_study, capsys):
    out, overrides = finished_study
    before = _rows(out)
    assert main(["run", "--out", str(out), *_sets(overrides)]) == 0
    assert "4 of 4 runs already done" in capsys.readouterr().err
    assert _rows(out) == before


def test_forgetting_matches_an_independent_implementation(finished_study, tiny_model, tmp_path, capsys):
    """forget_ce by hand: transformers + PEFT, disable_adapter() for the base, the corpus protocol."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = finished_study
    adapter = sorted((out / "adapters").iterdir())[0]
    text = tmp_path / "corpus.txt"
    text.write_text(" ".join(f"Item {i} of the list costs {i * 7 % 13} coins in Lantern Bay." for i in range(120)))
    seq_len = 32
    assert main(["forgetting", "--base", str(tiny_model), "--adapter", str(adapter), "--data", str(text),
                 "--seq-len", str(seq_len), "--json"]) == 0  # fmt: skip
    got = json.loads(capsys.readouterr().out)

    tok = AutoTokenizer.from_pretrained(tiny_model)
    ids = tok(text.read_text(), add_special_tokens=False)["input_ids"]
    n_blocks = len(ids) // seq_len
    blocks = torch.tensor(ids[: n_blocks * seq_len]).view(n_blocks, seq_len)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter).eval()
    with torch.no_grad():
        with model.disable_adapter():
            pb = torch.softmax(model(blocks).logits[:, :-1].double(), -1)
        logq = torch.log_softmax(model(blocks).logits[:, :-1].double(), -1)
    forget_ce = float(-(pb * logq).sum(-1).mean())
    data_loss = float(-logq.gather(-1, blocks[:, 1:, None]).mean())
    assert got["n_tokens"] == n_blocks * (seq_len - 1)
    assert got["forget_ce"] == pytest.approx(forget_ce, rel=1e-4)
    assert got["data_loss"] == pytest.approx(data_loss, rel=1e-4)
    assert got["forget_kl"] > 0


def test_ft_loss_se_matches_a_per_example_computation(finished_study, tiny_model):
    """ft_loss and ft_loss_se by hand: the trained adapter through transformers + PEFT, one held-out
    example at a time (no batching, padding or shared prefix), the cluster standard error written out."""
    import numpy as np
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from forgetscale.models import cache_dir
    from forgetscale.precision import pin_for_study
    from forgetscale.workspace import Workspace

    out, overrides = finished_study
    runs = {r.run_id: r for r in pin_for_study(load_config(overrides=overrides), out, cache_dir()).runs()}
    con = sqlite3.connect(out / "study.sqlite")
    try:
        got = con.execute("SELECT run_id, step, ft_loss, ft_loss_se FROM measurements ORDER BY run_id, step").fetchall()
    finally:
        con.close()
    for _rid, step, _loss, se in got:
        assert se is not None and np.isfinite(se) and se >= 0, step  # at step 0 too (the base's spread)
    rid = got[-1][0]
    _, last_step, ft_loss, ft_loss_se = max(r for r in got if r[0] == rid)
    assert last_step == runs[rid].train.steps and ft_loss_se > 0
    held = Workspace(cache_dir()).data(runs[rid])[1]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), out / "adapters" / rid).eval()
    sums, counts = [], []
    with torch.no_grad():
        for s in held:
            ids = torch.tensor([s.ids])
            logq = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)  # position t-1 predicts token t
            nll = -logq.gather(-1, ids[0, 1:, None])[:, 0]
            keep = torch.tensor(s.mask[1:])
            sums.append(float(nll[keep].sum()))
            counts.append(int(keep.sum()))
    S, c = np.array(sums), np.array(counts, float)
    mean = S.sum() / c.sum()
    n = len(S)
    se = np.sqrt(n / (n - 1) * np.sum((S - mean * c) ** 2)) / c.sum()
    # The study evaluates in fp32 batches (padded, length-sorted, a shared prefix cached), this path one
    # unpadded example at a time with a float64 softmax: the logits differ by fp32 summation order, ~1e-6
    # relative, so each example's loss agrees to ~1e-6 and the mean to 1e-4 (as forget_ce above). The SE is
    # a root of squared deviations from that mean, of the same relative size as the losses' spread, so the
    # same order of error holds; 1e-3 leaves a factor of 10 and still fails any other grouping or weighting.
    assert ft_loss == pytest.approx(mean, rel=1e-4)
    assert ft_loss_se == pytest.approx(se, rel=1e-3)


def test_forgetting_of_a_model_against_itself_is_zero(tiny_model, tmp_path, capsys):
    text = tmp_path / "corpus.txt"
    text.write_text("The river town of Lantern Bay held its vote on the new bridge. " * 30)
    assert main(["forgetting", "--base", str(tiny_model), "--model", str(tiny_model), "--data", str(text),
                 "--seq-len", "16", "--json"]) == 0  # fmt: skip
    got = json.loads(capsys.readouterr().out)
    assert abs(got["forget_kl"]) < 1e-6
    assert got["forget_ce"] == pytest.approx(got["base_entropy"], abs=1e-5)


def test_base_reference_equals_disabled_adapter_after_training(tiny_model):
    """PEFT injects LoRA in place; the reference taken before training must be what disable_adapter() gives."""
    import numpy as np

    from forgetscale import train
    from forgetscale.config import RunConfig
    from forgetscale.forgetting import measure
    from forgetscale.forward import target_logprobs
    from forgetscale.models import cache_dir
    from tests.helpers import TINY_STUDY

    # the full-logit reference: its log-probabilities are compared with disable_adapter()'s directly
    study = load_config(overrides=[f"model.name={tiny_model}", *TINY_STUDY[:-2], "forgetting.reference=logits"])
    run: RunConfig = study.runs()[0]
    from forgetscale.workspace import Workspace

    ws = Workspace(cache_dir())
    ref = ws.reference(run)
    lm = ws.model(run)
    peft_model = train.attach_lora(lm.model, run.lora, 0)
    try:
        # a fresh adapter is the identity: the study shares one step-0 measurement between runs on this basis
        assert train.is_identity(peft_model)
        assert abs(measure(peft_model, ref, 4)["forget_kl"]) < 1e-6
        train.train(peft_model, lm.tokenizer, run, ws.data(run)[0], lambda *a: None)
        assert not train.is_identity(peft_model)
        with peft_model.disable_adapter():
            for rows, logq, _ in target_logprobs(peft_model, list(ref.sequences), 4):
                np.testing.assert_allclose(logq.numpy(), ref.logp[rows], atol=1e-5)
        # ...while with the adapter on, the trained model really differs from that reference
        gaps = [
            float(np.abs(lq.numpy() - ref.logp[r]).max())
            for r, lq, _ in target_logprobs(peft_model, list(ref.sequences), 4)
        ]
        assert max(gaps) > 1e-3
    finally:
        base = train.detach_lora(peft_model)
    # after the run the shared base model is the original again
    for rows, logq, _ in target_logprobs(base, list(ref.sequences), 4):
        np.testing.assert_allclose(logq.numpy(), ref.logp[rows], atol=1e-5)


def _cli(args: list[str], capture: bool = False) -> subprocess.Popen:
    """The CLI in a child process (so it can be killed); output captured only when asked."""
    stream = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "forgetscale.cli", *args], stdout=stream, stderr=stream, text=True)




def _kill_once(p: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL ``p`` as soon as ``ready()`` holds; fail (not hang) if it never does."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert p.poll() is None, "the study finished before the kill point"
        assert time.monotonic() < deadline, "kill point not reached in time"
        time.sleep(0.02)
    p.kill()
    p.wait(timeout=60)


def test_killed_study_resumes_to_the_same_rows(tiny_model, tmp_path):
    from tests.helpers import TINY_STUDY

    sets = _sets([f"model.name={tiny_model}", *TINY_STUDY])
    ref_out, out = tmp_path / "uninterrupted", tmp_path / "killed"
    assert _cli(["run", "--out", str(ref_out), *sets]).wait(timeout=600) == 0
    expected = _rows(ref_out)
    # kill (SIGKILL) at chosen points of progress, not after wall-clock delays (machines differ 2.5x in
    # speed): inside the first run, inside the second, inside the third (4 rows per run; every restart
    # re-measures its unfinished run from step 0)
    for rows_before_kill in (2, 6, 10):
        p = _cli(["run", "--out", str(out), *sets])
        _kill_once(p, lambda n=rows_before_kill: count_rows(out) >= n)
        assert count_rows(out) < len(expected)  # it really was killed before the end
    assert _cli(["run", "--out", str(out), *sets]).wait(timeout=600) == 0
    got = _rows(out)
    assert [r[:3] for r in got] == [r[:3] for r in expected]  # same keys, no duplicates (primary key)
    for a, b in zip(got, expected, strict=True):
        assert a[3:] == pytest.approx(b[3:], rel=1e-6, abs=1e-9)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--set", "train.lrr=1"], "unknown key 'train.lrr'"),
        (["--set", "train.steps=lots"], "train.steps"),
        (["--set", "model.name=/no/such/model"], "not found"),
        (["--set", "data.dataset=EMPTY"], "empty"),
        (["--set", "data.dataset=MALFORMED"], ":2: not valid JSON"),
        (["--set", "forgetting.corpus=SHORT"], "shorter than one block"),
        (["--set", "lora.target_modules=[nope_proj]"], "nope_proj"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tiny_model, tmp_path, extra, needle):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n{"text": "x"}\n')
    (tmp_path / "short.txt").write_text("too short")
    subst = {"EMPTY": "empty.jsonl", "MALFORMED": "bad.jsonl", "SHORT": "short.txt"}
    extra = [next((e.replace(k, str(tmp_path / v)) for k, v in subst.items() if k in e), e) for e in extra]
    out = tmp_path / "out"
    p = _cli(["run", "--out", str(out), "--set", f"model.name={tiny_model}", "--set", "train.steps=2", *extra], True)
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 2, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("forgetscale: error:")]
    assert len(errors) == 1 and needle in errors[0], stderr
    assert stderr.strip().splitlines()[-1] == errors[0] and "Traceback" not in stderr
    assert not out.exists()


# The CLI in a child process whose training loss turns NaN from update 3 on. The divergence is forced
# (the loss the Trainer backpropagates is multiplied by NaN) rather than hoped for from a huge learning
# rate: lr=1e15 diverges on some CPUs and stays finite on others (ft_loss 5.99 at every step on a Xeon).
_NAN_FROM_STEP_3 = """
import sys
from forgetscale import train
from forgetscale.cli import main

stock = train.TargetsOnlyTrainer.compute_loss

def compute_loss(self, *args, **kwargs):
    loss = stock(self, *args, **kwargs)
    return loss * float("nan") if self.state.global_step >= 2 else loss

train.TargetsOnlyTrainer.compute_loss = compute_loss
sys.exit(main(sys.argv[1:]))
"""


def test_nan_loss_is_reported_as_bad_input(tiny_model, tmp_path):
    from tests.helpers import TINY_STUDY

    out = tmp_path / "out"
    sets = _sets([f"model.name={tiny_model}", *TINY_STUDY, "sweep.lora.rank=[4]", "sweep.data.dataset=[news]"])
    p = subprocess.run(
        [sys.executable, "-c", _NAN_FROM_STEP_3, "run", "--out", str(out), *sets],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 2, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("forgetscale: error:") and "training diverged" in last and "step 3" in last, p.stderr
    assert "Traceback" not in p.stderr
    con = sqlite3.connect(out / "study.sqlite")
    try:
        (status,) = con.execute("SELECT status FROM runs").fetchone()
        steps = [s for (s,) in con.execute("SELECT step FROM measurements ORDER BY step")]
    finally:
        con.close()
    assert status == "failed"  # recorded as failed...
    assert steps == [0, 2]  # ...with the rows measured before the divergence kept (schedule 0, 2, 4, 8)


def test_dry_run_validates_the_paper_preset(capsys):
    assert main(["run", "--preset", "paper", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "6 runs" in out and "Llama-2-7b-chat-hf" in out and "opt=adafactor" in out


def test_mixed_precision_training_is_evaluated_in_fp32(tiny_model):
    """accelerate runs bf16 training by wrapping forward in autocast; evaluations must not inherit it."""
    from forgetscale import train
    from forgetscale.forgetting import measure
    from forgetscale.models import cache_dir
    from forgetscale.workspace import Workspace
    from tests.helpers import TINY_STUDY

    study = load_config(
        overrides=[f"model.name={tiny_model}", *TINY_STUDY[:-2], "train.precision=bf16", "train.n_evals=3"]
    )
    run = study.runs()[0]
    ws = Workspace(cache_dir())
    ref, lm = ws.reference(run), ws.model(run)
    seen: list[dict[str, float]] = []
    peft_model = train.attach_lora(lm.model, run.lora, 0)
    try:
        train.train(peft_model, lm.tokenizer, run, ws.data(run)[0], lambda m, *_: seen.append(measure(m, ref, 4)))
        assert len(seen) == 3
        assert abs(seen[0]["forget_kl"]) < 1e-7  # an fp32 forward of the identity adapter: exactly the base
        assert seen[-1]["forget_kl"] > 1e-4
        assert "_original_forward" not in peft_model.__dict__  # the autocast wrapper is gone after training
        after = measure(peft_model, ref, 4)
        assert after["forget_kl"] == pytest.approx(seen[-1]["forget_kl"], rel=1e-6)
    finally:
        train.detach_lora(peft_model)


def test_step_zero_is_measured_once_per_dataset(tiny_model):
    """Runs that differ only in LoRA settings share the step-0 measurement; another dataset does not."""
    from forgetscale.models import cache_dir
    from forgetscale.workspace import Workspace
    from tests.helpers import TINY_STUDY

    runs = load_config(overrides=[f"model.name={tiny_model}", *TINY_STUDY]).runs()  # 2 datasets x 2 ranks
    ws = Workspace(cache_dir())
    calls: list[str] = []

    def compute() -> dict[str, float]:
        calls.append("x")
        return {"ft_loss": float(len(calls))}

    got = {(r.data.dataset, r.lora.rank): ws.base_evaluation(r, compute)["ft_loss"] for r in runs}
    assert len(calls) == 2
    assert got[("news", 1)] == got[("news", 4)] != got[("instruct", 1)] == got[("instruct", 4)]
    ws.base_evaluation(runs[0], compute)["ft_loss"] = -1.0  # callers get a copy, not the cached dict
    assert ws.base_evaluation(runs[0], compute)["ft_loss"] == got[(runs[0].data.dataset, runs[0].lora.rank)]
