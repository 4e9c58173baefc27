"""llama.cpp's KL-divergence summary, reverse KL, the most-forgotten texts and ``forgetting --like`` on a tiny Llama.

Every figure of the summary is checked against an independent computation from the two models' float64
log-probabilities at the same positions; a tiny study's stored row is re-measured with ``--like``.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from forgetscale.cli import main
from tests.helpers import SCRIPT, TEXT, TINY_STUDY, one_error_line, store_rows, train_adapter


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, sharp_model: Path) -> Path:
    return train_adapter(sharp_model, tmp_path_factory.mktemp("adapter") / "a", steps=6, lr=0.003)


@pytest.fixture(scope="module")
def sequences(sharp_model: Path):
    from forgetscale.config import ModelConfig
    from forgetscale.data.encode import encode_example
    from forgetscale.data.synthetic import generate
    from forgetscale.models import load_model

    tok = load_model(ModelConfig(name=str(sharp_model))).tokenizer
    return [s for s in (encode_example(e, tok, 64) for e in generate("news", 12, seed=5)) if s]


def _load(model_dir: Path, adapter: Path | None = None):
    from peft import PeftModel

    from forgetscale.config import ModelConfig
    from forgetscale.models import load_model

    base = load_model(ModelConfig(name=str(model_dir))).model
    return base if adapter is None else PeftModel.from_pretrained(base, str(adapter))


def _cluster_se(sums: np.ndarray, counts: np.ndarray) -> float:
    """The ratio estimator's standard error written out: sqrt(n/(n-1) sum (S_i - R c_i)^2) / sum c."""
    r = sums.sum() / counts.sum()
    n = len(sums)
    return math.sqrt(n / (n - 1) * sum((s - r * c) ** 2 for s, c in zip(sums, counts, strict=True))) / counts.sum()


@pytest.mark.parametrize("mode", ["hidden", "logits"])
def test_summary_matches_an_independent_computation(tmp_path, sharp_model, adapter, sequences, mode):
    from forgetscale.forgetting import DP_PERCENTILES, PERCENTILES, evaluate
    from forgetscale.forward import target_logprobs
    from forgetscale.reference import compute_reference

    base = _load(sharp_model)
    ref = compute_reference(base, sequences, 4, tmp_path / "r", mode=mode)
    assert ref.mode == mode
    tuned = _load(sharp_model, adapter)
    ev = evaluate(tuned, ref, 4)
    row, s = ev.row(), ev.summary()

    # independently: both models' float64 log-probs at every target position, in corpus order
    n = ref.n_tokens
    logp, logq = np.zeros((n, base.config.vocab_size)), np.zeros((n, base.config.vocab_size))
    nxt = np.zeros(n, int)
    for rows, lp, t in target_logprobs(_load(sharp_model), sequences, 3):  # another batch size: other batches
        logp[rows], nxt[rows] = lp.numpy(), t.numpy()
    for rows, lq, _ in target_logprobs(tuned, sequences, 5):
        logq[rows] = lq.numpy()
    p, q = np.exp(logp), np.exp(logq)
    kl = (p * (logp - logq)).sum(-1)
    rkl = (q * (logq - logp)).sum(-1)
    top = logp.argmax(-1)
    agree = (logq.argmax(-1) == top).astype(float)
    dp_top = q[np.arange(n), top] - p[np.arange(n), top]
    dp = q[np.arange(n), nxt] - p[np.arange(n), nxt]  # llama.cpp's: at the corpus' own next token
    counts = np.array([x.n_targets for x in sequences], float)
    seq = np.repeat(np.arange(len(sequences)), counts.astype(int))

    assert kl.mean() > 0.1 and 0.05 < agree.mean() < 0.98 and np.abs(dp).max() > 0.05  # nothing trivial
    assert abs(dp.mean() - dp_top.mean()) > 0.01  # the two definitions differ here, so the test tells them apart
    # the same positions: per position, KL to the reference's fp32 rounding of log-probs (|log p| <~ 30, 6e-8
    # relative: ~2e-6 absolute); top-1 agreement exactly, position by position and per sequence
    assert np.allclose(ev.kl, kl, rtol=0, atol=2e-5)
    assert row["top1_agree"] * n == pytest.approx(agree.sum(), abs=1e-9)
    assert np.array_equal(ev.sums["top1_agree"], np.bincount(seq, agree, len(sequences)))
    # percentiles: the same interpolation (llama.cpp's = numpy's linear) over the same positions
    want = np.percentile(kl, [q for _, q in PERCENTILES])
    for (name, _), w in zip(PERCENTILES, want, strict=True):
        assert s["kl_percentiles"][name] == pytest.approx(w, abs=2e-5), name
    assert list(s["kl_percentiles"]) == [name for name, _ in PERCENTILES]
    assert (row["kl_p50"], row["kl_p99"]) == (s["kl_percentiles"]["median"], s["kl_percentiles"]["99%"])
    # means to 1e-4, standard errors over sequences too
    assert s["forget_kl"] == pytest.approx(kl.mean(), abs=1e-4)
    assert s["top1_agree"] == pytest.approx(agree.mean(), abs=1e-12)
    assert s["top1_agree_se"] == pytest.approx(_cluster_se(np.bincount(seq, agree), counts), rel=1e-9)
    # Δp: probabilities from fp32-rounded log-probs (relative 6e-8 of |log p| <~ 30: 2e-6 of p), per position too
    assert np.allclose(ev.dp, dp, rtol=0, atol=1e-5)
    assert s["dp_mean"] == pytest.approx(dp.mean(), abs=1e-5)
    assert s["dp_mean_se"] == pytest.approx(_cluster_se(np.bincount(seq, dp), counts), abs=1e-5)
    rms = math.sqrt((dp**2).mean())
    assert s["dp_rms"] == pytest.approx(rms, abs=1e-5)
    assert s["dp_rms_se"] == pytest.approx(_cluster_se(np.bincount(seq, dp**2), counts) / (2 * rms), abs=1e-5)
    want = np.sort(dp)  # llama.cpp's percentile by hand: sorted values, linear between ranks at q (n - 1)
    for name, q_ in DP_PERCENTILES:
        r = q_ / 100 * (n - 1)
        i = int(r)
        w = want[i] + (r - i) * (want[min(i + 1, n - 1)] - want[i])
        assert s["dp_percentiles"][name] == pytest.approx(w, abs=1e-5), name
    assert list(s["dp_percentiles"]) == [name for name, _ in DP_PERCENTILES]
    assert s["dp_top1_mean"] == pytest.approx(dp_top.mean(), abs=1e-5)
    assert s["dp_top1_mean_se"] == pytest.approx(_cluster_se(np.bincount(seq, dp_top), counts), abs=1e-5)
    assert s["dp_top1_rms"] == pytest.approx(math.sqrt((dp_top**2).mean()), abs=1e-5)
    assert ev.sequence_kl() == pytest.approx(list(np.bincount(seq, kl) / counts), abs=1e-4)
    if mode == "logits":
        assert rkl.mean() > 0.1
        assert s["forget_rkl"] == pytest.approx(rkl.mean(), abs=1e-4) and row["forget_rkl"] == s["forget_rkl"]
        assert s["forget_rkl_se"] == pytest.approx(_cluster_se(np.bincount(seq, rkl), counts), abs=1e-4)
    else:  # the hidden reference holds no base distribution to weigh by p_ft
        assert s["forget_rkl"] is None and row["forget_rkl"] is None


@pytest.mark.parametrize("mode", ["hidden", "logits", "top16"])
def test_identity_has_full_agreement_and_zero_dp(tmp_path, sharp_model, sequences, mode):
    from forgetscale.forgetting import evaluate
    from forgetscale.reference import compute_reference

    base = _load(sharp_model)
    top_k = 16 if mode == "top16" else None
    ref = compute_reference(base, sequences, 4, tmp_path / "r", top_k=top_k, mode="logits" if top_k else mode)
    s = evaluate(base, ref, 4).summary()
    # the same forward, chunks and formulas as the reference: exactly, not merely nearly
    assert s["top1_agree"] == 1.0 and s["top1_agree_se"] == 0.0
    assert s["dp_mean"] == 0.0 and s["dp_rms"] == 0.0 and s["dp_rms_se"] == 0.0
    assert set(s["dp_percentiles"].values()) == {0.0}
    # at the base's top token the hidden reference's p_base rounds differently from p_ft: 1e-18 seen, not 0
    assert abs(s["dp_top1_mean"]) < 1e-15 and s["dp_top1_rms"] < 1e-15
    assert s["kl_percentiles"]["max"] == 0.0
    assert s["forget_rkl"] == (0.0 if mode == "logits" else None)


@pytest.mark.parametrize("missing", [("top1_p", "target_p"), ("target_p",)])
def test_references_cached_before_top1_p_or_target_p_are_read_or_rebuilt(tmp_path, sharp_model, sequences, missing):
    from forgetscale.reference import cached_reference, compute_reference

    base = _load(sharp_model)
    for mode, top_k in (("logits", None), ("hidden", None), ("logits", 16)):
        d = tmp_path / f"{mode}{top_k}"
        new = compute_reference(base, sequences, 4, d, top_k=top_k, mode=mode)
        meta = dict(np.load(d / "meta.npz"))
        for name in missing:  # as an older forgetscale wrote it
            del meta[name]
        np.savez(d / "meta.npz", **meta)
        old = cached_reference(d, sequences)
        if mode == "logits" and top_k is None:  # derived from the stored log-probs: the same numbers
            assert np.allclose(old.top1_p, new.top1_p, rtol=1e-15, atol=0)
            assert np.allclose(old.target_p, new.target_p, rtol=1e-15, atol=0)
        else:  # a hidden or top-K reference cannot give the next token's probability: discarded, to be computed again
            assert old is None and not d.exists()


# ---------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(TEXT)
    return path


def _forgetting(capsys, *args: str) -> dict:
    assert main(["forgetting", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_forgetting_prints_the_summary_and_the_top_texts(sharp_model, adapter, corpus, capsys):
    base = ["--base", str(sharp_model), "--adapter", str(adapter), "--data", str(corpus), "--seq-len", "24"]
    assert main(["forgetting", *base, "--top", "3"]) == 0
    text = capsys.readouterr().out
    for needle in ("Mean    KLD:", "Maximum KLD:", "99.9%   KLD:", "Median  KLD:", " 0.1%   KLD:", "Minimum KLD:",
                   "Same top p:", "Mean    Δp:", "Maximum Δp:", "75.0%   Δp:", "Median  Δp:", "25.0%   Δp:",
                   "Minimum Δp:", "RMS Δp    :", "At the base's top token:"):  # fmt: skip
        assert needle in text, needle
    top = text.split("largest mean KL per token ======\n")[1].splitlines()
    assert len(top) == 4 and top[0].split() == ["#", "seq", "tokens", "kl", "text"]
    kls = [float(line.split()[3]) for line in top[1:]]
    assert kls == sorted(kls, reverse=True)
    shown = top[1].split(None, 4)[4]  # the block's text, its line breaks escaped
    assert len(shown) > 10 and "\n" not in shown and shown.replace("\\n", "\n") in TEXT

    got = _forgetting(capsys, *base, "--top", "2")
    pct = got["dp_percentiles"]  # --json carries llama.cpp's Δp figures; the text prints the same numbers
    assert list(pct) == ["max", "99.9%", "99%", "95%", "90%", "75%", "median", "25%", "10%", "5%", "1%", "0.1%", "min"]
    assert list(pct.values()) == sorted(pct.values(), reverse=True) and pct["min"] < 0 < pct["max"]
    assert f"Maximum Δp: {100 * pct['max']:6.3f}%" in text and f"Mean    Δp: {100 * got['dp_mean']:6.3f} ± " in text
    assert got["dp_rms_se"] > 0 and got["dp_top1_mean"] is not None and got["dp_top1_rms"] > 0
    assert got["reference"] == "hidden" and got["forget_rkl"] is None
    assert got["kl_p50"] == got["kl_percentiles"]["median"] and got["kl_p99"] == got["kl_percentiles"]["99%"]
    assert got["kl_percentiles"]["min"] <= got["kl_p50"] <= got["kl_p99"] <= got["kl_percentiles"]["max"]
    assert [f"{r['kl']:.5f}" for r in got["top"]] == [line.split()[3] for line in top[1:3]]  # the same texts
    assert got["top"][0]["tokens"] == 23  # a block of 24 tokens scores 23
    # with the full logits, the reverse direction too; the forward numbers do not depend on the storage
    full = _forgetting(capsys, *base, "--reference", "logits", "--reverse")
    assert full["reference"] == "logits" and full["forget_rkl"] > 0 and full["forget_rkl_se"] > 0
    assert full["forget_kl"] == pytest.approx(got["forget_kl"], rel=1e-5)
    assert full["top1_agree"] == got["top1_agree"]


@pytest.mark.parametrize("extra, needle", [([], "--reference logits"), (["--top-k", "16"], "without --top-k"),
                                           (["--reference", "hidden"], "forgetting.reference=logits")])
def test_reverse_without_full_logits_is_one_line(sharp_model, adapter, corpus, capsys, extra, needle):
    rc = main(["forgetting", "--base", str(sharp_model), "--adapter", str(adapter), "--data", str(corpus),
               "--reverse", *extra])  # fmt: skip
    one_error_line(capsys, rc, "--reverse", "reverse KL", needle)


def test_top_texts_are_escaped_snippets():
    from forgetscale.texts import snippet, top_sequences

    text = "line one\nline\ttwo \\ 'q' \"dq\" \x1b[31m" + "x" * 200
    s = snippet(text, 60)
    assert "\n" not in s and "\t" not in s and "\x1b" not in s and len(s) == 60 and s.endswith("…")
    assert s.startswith("line one\\nline\\ttwo \\\\ 'q' \"dq\" \\x1b[31m")
    rows = top_sequences([0.2, float("nan"), 0.9], ["a", "b", "c"], 5)
    assert [r["text"] for r in rows] == ["c", "a", "b"]


# ---------------------------------------------------------------------------- a study: rows, texts, --like

ONE_RUN = [*TINY_STUDY, "sweep.data.dataset=[instruct]", "sweep.lora.rank=[4]", "probes.enabled=false"]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    out = tmp_path_factory.mktemp("study")
    sets = [a for o in [f"model.name={tiny_model}", *ONE_RUN] for a in ("--set", o)]
    assert main(["run", "--out", str(out), *sets]) == 0
    return out


def _rows(out: Path) -> list[dict]:
    return store_rows(out, "SELECT * FROM measurements ORDER BY step")


def test_every_row_carries_the_summary_and_its_sequence_kl(study):
    from forgetscale.store import open_study

    rows = _rows(study)
    assert len(rows) >= 3
    with open_study(study) as store:
        (run,) = store.runs()
        by_step = store.sequence_kl(run["run_id"])
        texts = store.corpus_texts(run["provenance"]["corpus_fingerprint"])
    assert "corpus_texts" not in run["provenance"]  # kept once per corpus, not in each run's provenance
    assert sorted(by_step) == [r["step"] for r in rows]
    assert texts is not None and len(texts) == len(by_step[0]) and all(isinstance(t, str) for t in texts)
    first, last = rows[0], rows[-1]
    assert first["top1_agree"] == 1.0 and first["kl_p99"] == 0.0 and max(by_step[0]) == 0.0
    assert 0 <= last["top1_agree"] < 1.0 and 0 <= last["kl_p50"] <= last["kl_p99"]
    assert last["top1_agree_se"] > 0 and last["forget_rkl"] is None  # the default hidden reference
    assert min(by_step[last["step"]]) <= last["forget_kl"] <= max(by_step[last["step"]])


def test_like_reproduces_a_stored_row(study, capsys):
    rows = _rows(study)
    (adapter,) = (study / "adapters").iterdir()
    got = _forgetting(capsys, "--like", str(study), "--adapter", str(adapter))
    last = rows[-1]
    for k in ("forget_kl", "forget_ce", "base_entropy", "data_loss", "top1_agree", "kl_p50", "kl_p99"):
        assert got[k] == pytest.approx(last[k], rel=1e-4, abs=1e-9), k
    assert got["n_tokens"] == last["n_eval_tokens"]
    rc = main(["forgetting", "--like", str(study), "--adapter", str(adapter), "--base", "x", "--seq-len", "9"])
    one_error_line(capsys, rc, "--like", "--base, --seq-len")
    rc = main(["forgetting", "--like", str(study), "--adapter", str(adapter), "--reverse"])
    one_error_line(capsys, rc, "--reverse", "forgetting.reference=logits")


def test_forgotten_texts_and_the_report_section(study, tmp_path):
    import shutil

    from forgetscale.store import open_study
    from forgetscale.texts import forgotten_texts

    t = forgotten_texts(study, n=3)
    with open_study(study) as store:
        by_step = store.sequence_kl(t["run_id"])
    last = by_step[t["step"]]
    assert [r["kl"] for r in t["top"]] == sorted(last, reverse=True)[:3]
    a, b = t["growth"]["from"], t["growth"]["to"]
    assert 0 < a < b == t["step"]
    grew = sorted((y - x for x, y in zip(by_step[a], by_step[b], strict=True)), reverse=True)[:3]
    assert [r["growth"] for r in t["growth"]["rows"]] == pytest.approx(grew, abs=1e-15)
    assert all(r["text"] is not None for r in t["top"])
    with pytest.raises(Exception, match="no per-sequence KL at step 5"):
        forgotten_texts(study, steps=(0, 5))

    copy = tmp_path / "study"  # a text that is markup must reach the page as text
    shutil.copytree(study, copy)
    con = sqlite3.connect(copy / "study.sqlite")
    with con:
        n = len(json.loads(con.execute("SELECT texts FROM corpus_texts").fetchone()[0]))
        con.execute("UPDATE corpus_texts SET texts = ?", (json.dumps([f"{SCRIPT} | *x*\n"] * n),))
    con.close()
    assert main(["report", str(copy)]) == 0
    html = (copy / "report.html").read_text(encoding="utf-8")
    assert 'id="texts"' in html and "Most-forgotten texts" in html and SCRIPT not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; | *x*\\n" in html
    assert main(["report", str(copy), "--format", "md"]) == 0
    md = (copy / "report.md").read_text(encoding="utf-8")
    assert "## Most-forgotten texts" in md and SCRIPT not in md and "&lt;script&gt;" in md


def test_the_reports_runs_table_shows_agreement_tail_and_task_kl(study, tmp_path):
    """Each run's last row in the runs table: same top 1, KL p99 and task_kl, from the store."""
    from forgetscale.report.data import fmt
    from forgetscale.store import open_study

    out = tmp_path / "report.md"
    assert main(["report", str(study), "--format", "md", "--out", str(out)]) == 0
    md = out.read_text(encoding="utf-8")
    header = next(line for line in md.splitlines() if line.startswith("| run |"))
    assert "| same top 1 | KL p99 | task_kl |" in header
    with open_study(study) as store:
        last = {}
        for r in store.measurements():
            last[r["run_id"]] = r
    for rid, r in last.items():
        line = next(x for x in md.splitlines() if rid in x and x.startswith("|"))
        assert f"| {fmt(r['top1_agree'])} | {fmt(r['kl_p99'])} | {fmt(r['task_kl'])} |" in line
