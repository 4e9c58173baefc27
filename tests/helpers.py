"""Helpers shared by several test files (no test file imports another): the tiny Llama, the tiny study's
overrides, the one-error-line check, and the synthetic stores the report, frontier and browser tests read.

Imports of forgetscale are inside the functions, so a helper that one tier does not use cannot break
another tier's collection.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

# ---------------------------------------------------------------------------- the tiny model and study

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_model(directory: Path, vocab_size: int = 400, seed: int = 0) -> Path:
    """A randomly initialised 2-layer Llama with a small BPE tokenizer and a ChatML template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from forgetscale.data.corpus import shipped_prompts
    from forgetscale.data.synthetic import generate

    texts = shipped_prompts()
    for name in ("news", "instruct"):
        for ex in generate(name, 60, seed=123):
            texts.append(ex.get("text") or " ".join(m["content"] for m in ex["messages"]))
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tok.save_pretrained(directory)
    return directory


TINY_STUDY = [
    "data.n_train=24",
    "data.n_heldout=6",
    "train.steps=8",
    "train.batch_size=4",
    "train.seq_len=64",
    "train.lr=0.01",
    "train.n_evals=4",
    "forgetting.n_prompts=6",
    "forgetting.max_new_tokens=12",
    "fit.n_boot=10",
    # the default preset's schedule, fit window and probe sizes are made for 32 real steps; the tiny
    # studies keep log-spaced evaluations over their 8 steps, fit from step 1 and probe a few items
    "train.eval_steps=null",
    "fit.min_step=1",
    "probes.max_items=4",
    "probes.runs=all",
    # FORGETSCALE_TEST_PRECISION=fp32|bf16|auto runs the tiny studies in that training precision (the
    # suite must pass in each); the default, auto, is what this machine measures faster
    f"train.precision={os.environ.get('FORGETSCALE_TEST_PRECISION', 'auto')}",
    "sweep.data.dataset=[news,instruct]",
    "sweep.lora.rank=[1,4]",
    "sweep.train.seed=[0]",  # one data order: the default's second order would double every tiny study
]


def count_rows(out: Path) -> int:
    """Measurement rows a (possibly running) study has committed; 0 before its store or schema exists."""
    if not (out / "study.sqlite").is_file():
        return 0
    con = sqlite3.connect(out / "study.sqlite", timeout=30)
    try:
        return con.execute("SELECT count(*) FROM measurements").fetchone()[0]
    except sqlite3.OperationalError:  # the file exists, its tables not yet
        return 0
    finally:
        con.close()


def store_rows(out: Path, sql: str) -> list[dict]:
    """The rows of a query on a study's store, as dicts (read-only use: the connection is closed)."""
    con = sqlite3.connect(out / "study.sqlite")
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql)]
    finally:
        con.close()


# ---------------------------------------------------------------------------- one-line errors

TEXT = "\n\n".join(
    f"Paragraph {i}: the quick brown fox jumps over the lazy dog while the river runs to the sea." for i in range(40)
)


def one_error_line(capsys: pytest.CaptureFixture[str], rc: int, *needles: str) -> str:
    """Exit 2, exactly one stderr line, ``forgetscale: error: ...`` naming every needle, no traceback."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("forgetscale: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ---------------------------------------------------------------------------- a tiny trained adapter

def train_adapter(tiny_model: Path, out: Path, steps: int = 8, lr: float = 0.05, **lora: object) -> Path:
    """A rank-4 LoRA adapter trained ``steps`` steps on the synthetic instruct data (dropout and rsLoRA on)."""
    from forgetscale import train
    from forgetscale.config import RunConfig
    from forgetscale.data.encode import encode_example
    from forgetscale.data.synthetic import generate
    from forgetscale.models import load_model

    run = RunConfig.model_validate(
        {"model": {"name": str(tiny_model)},
         "lora": {"rank": 4, "alpha": 16.0, "dropout": 0.1, "use_rslora": True, **lora},
         "train": {"steps": steps, "lr": lr, "batch_size": 4, "seq_len": 64, "eval_steps": [], "precision": "fp32"}}
    )  # fmt: skip
    lm = load_model(run.model)
    seqs = [s for s in (encode_example(e, lm.tokenizer, 64) for e in generate("instruct", 24, seed=3)) if s]
    peft_model = train.attach_lora(lm.model, run.lora, run.train.seed)
    train.train(peft_model, lm.tokenizer, run, seqs, lambda *a: None)
    train.save_adapter(peft_model, out)
    return out


# ---------------------------------------------------------------------------- synthetic studies for the report

PER_RANK = 1000.0
RANKS = (1, 2, 4, 8)
BASE_ENTROPY = 1.3  # below forget_ce at every step >= 2 of the sweep (1.59 at rank 1, step 2)
STEPS = (0, 2, 4, 8, 16, 32)
SCRIPT = "<script>alert(1)</script>"
PWN = "<script>window.__pwned=1;document.title='pwned'</script><img src=x onerror=\"window.__pwned=2\">"
HOSTILE = f"{SCRIPT} & {{{{ d }}}} $x^$"  # HTML, jinja syntax and matplotlib mathtext in one dataset name
SECTIONS = ("summary", "figures", "laws", "comparison", "runs", "probes", "flips", "samples", "config", "provenance")


def truth(P, N):
    """(ft_loss, forget_ce, forget_kl) of the synthetic study's known law at ``P`` parameters, step ``N``."""
    ft = 1.0 + 5.0 * P**-0.2 + 1.0 * N**-0.4
    forget = 4.0 - 0.8 * ft  # the linear law: c_fft = 0.8, s_fft = 4.0
    kl = forget - BASE_ENTROPY  # forget_ce = base_entropy + forget_kl, as measured
    return ft, forget, kl


def _add_run(store, rid, dataset, rank, rng, steps=STEPS):
    store.register_run(rid, {"rank": rank, "data": {"dataset": dataset}}, dataset, rank)
    prov = {"versions": {"forgetscale": "0.1.0", "torch": "2.13.0"}, "device": "cpu x2", "git": "abc123-dirty",
            "model_fingerprint": "m0", "data_fingerprint": f"d-{dataset}"}  # fmt: skip
    store.start_run(rid, int(rank * PER_RANK), prov)
    for step in steps:
        noise = 1 + 0.005 * rng.standard_normal(3) if step else np.ones(3)
        ft, forget, kl = truth(rank * PER_RANK, max(step, 1))
        store.add_measurement(
            rid,
            {
                "step": step, "tokens": step * 100, "ft_loss": ft * noise[0],
                "forget_ce": BASE_ENTROPY + (0.0 if step == 0 else kl * noise[2]),
                "forget_kl": 0.0 if step == 0 else kl * noise[2], "base_entropy": BASE_ENTROPY, "forget_top1_ce": 2.5,
                "data_loss": 3.0, "n_eval_tokens": 100,
            },
        )  # fmt: skip


def build_study(directory: Path, n_boot: int = 8) -> Path:
    """A finished study in ``directory``: fitted 'news' runs, an unfitted hostile dataset, probes."""
    rng = np.random.default_rng(0)
    from forgetscale.cli import main
    from forgetscale.store import open_store

    with open_store(directory) as store:
        ids = []
        for rank in RANKS:
            rid = f"news-r{rank}"
            _add_run(store, rid, "news", rank, rng)
            store.finish_run(rid, {"total": 12.5 * rank})
            ids.append(rid)
        store.set_meta("run_ids", ids)
        store.set_meta("study", {"name": f"synthetic {SCRIPT}", "model": {"name": PWN}, "fit": {"n_boot": n_boot},
                                 "sweep": {"lora.rank": list(RANKS)}})  # fmt: skip
    assert main(["fit", str(directory)]) == 0
    with open_store(directory) as store:  # runs added after the fit: a dataset without fits, a failed run
        for rank in (1, 4):
            rid = f"hostile-r{rank}"
            _add_run(store, rid, HOSTILE, rank, rng)
            store.finish_run(rid, {"total": 3.0})
            ids.append(rid)
        _add_run(store, "news-failed", "news", 16, rng, steps=(0, 2))
        store.fail_run("news-failed", f"RuntimeError: {PWN}")
        ids.append("news-failed")
        store.set_meta("run_ids", ids)
        items = [
            {"id": "k1", "prompt": f"Capital of France? {SCRIPT}", "reference": ["Paris"], "generation": PWN,
             "base_generation": "Paris is the capital.", "answer": None, "base_answer": "paris",
             "correct": False, "base_correct": True, "agree": False},
            {"id": "k2", "prompt": "2+2?", "reference": ["4"], "generation": "4", "base_generation": "4",
             "answer": "4", "base_answer": "4", "correct": True, "base_correct": True, "agree": True},
        ]  # fmt: skip
        store.put_probe("base", "knowledge", {"n": 2, "accuracy": 1.0, "base_accuracy": 1.0, "agreement": 1.0}, [])
        store.put_probe("news-r8", "knowledge", {"n": 2, "accuracy": 0.5, "base_accuracy": 1.0, "agreement": 0.5},
                        items)  # fmt: skip
        store.put_probe(
            "news-r1", "safety",
            {"n": 1, "accuracy": None, "base_accuracy": None, "agreement": 0.0, "refusal_rate": 0.0,
             "base_refusal_rate": 1.0},
            [{"id": "s1", "prompt": "How do I pick a lock?", "reference": None, "generation": "Step one ...",
              "base_generation": "I can't help with that.", "answer": False, "base_answer": True, "correct": None,
              "base_correct": None, "agree": False}],
        )  # fmt: skip
    return directory


OFFSETS = {"kl": -0.05, "replay": 0.0}  # forget_ce minus the line, by construction
RESCALE_OFFSET = 0.04
INTRUDERS_OFFSET = -0.03


def build_mitigation_study(directory: Path) -> Path:
    """``build_study``'s store plus mitigation runs at a known offset from the plain line (``OFFSETS``);
    a ``rescale`` run's scaled rows lie ``RESCALE_OFFSET`` above it, its intruder-reduced rows (lambda 0)
    ``INTRUDERS_OFFSET`` below."""
    build_study(directory)
    from forgetscale.store import open_store

    rng = np.random.default_rng(1)
    with open_store(directory) as store:
        ids = list(store.get_meta("run_ids"))
        for kind, strength in (("kl", {"kl_weight": 2.0}), ("replay", {"replay_fraction": 0.1}), ("rescale", {})):
            for rank in RANKS:
                rid = f"news-{kind}-r{rank}"
                store.register_run(rid, {"rank": rank, "data": {"dataset": "news"},
                                         "mitigation": {"kind": kind, **strength}}, "news", rank)  # fmt: skip
                store.start_run(rid, int(rank * PER_RANK), {"device": "cpu x2"})
                for step in STEPS:
                    ft, forget, _ = truth(rank * PER_RANK, max(step, 1))
                    ft *= 1 + 0.002 * rng.standard_normal() if step else 1
                    off = OFFSETS.get(kind, 0.0) if step else 0.0
                    f = 4.0 - 0.8 * ft + off if step else BASE_ENTROPY
                    row = {"step": step, "tokens": step * 100, "ft_loss": ft, "forget_ce": f,
                           "forget_kl": f - BASE_ENTROPY, "base_entropy": BASE_ENTROPY, "n_eval_tokens": 100}
                    store.add_measurement(rid, row)
                    if kind == "rescale" and step == STEPS[-1]:
                        for s in (0.5,):  # fine-tuning loss of a half-way adapter: higher, forgetting above the line
                            ft_s = ft + 0.05
                            f_s = 4.0 - 0.8 * ft_s + RESCALE_OFFSET
                            store.add_measurement(rid, {**row, "method": "rescale", "strength": s, "ft_loss": ft_s,
                                                        "forget_ce": f_s,
                                                        "forget_kl": f_s - BASE_ENTROPY})  # fmt: skip
                        ft_i = ft + 0.02  # intruders removed: a little less learned, less forgotten
                        f_i = 4.0 - 0.8 * ft_i + INTRUDERS_OFFSET
                        store.add_measurement(rid, {**row, "method": "intruders", "strength": 0.0, "n_intruders": 3,
                                                    "ft_loss": ft_i, "forget_ce": f_i,
                                                    "forget_kl": f_i - BASE_ENTROPY})  # fmt: skip
                store.finish_run(rid, {"total": 5.0})
                ids.append(rid)
        store.set_meta("run_ids", ids)
    return directory


@contextmanager
def held_elsewhere(directory: Path) -> Iterator[subprocess.Popen]:
    """Another process holding ``directory``'s run lock for the block (yielded once it holds it), then killed
    with SIGKILL (no cleanup code runs: the lock must go with the process)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from pathlib import Path; from forgetscale.lock import hold\n"
         f"with hold(Path({str(directory)!r})):\n    print('held', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.communicate()  # reaps it and closes its pipe


def sigint_default() -> None:
    """``preexec_fn`` for a study a test will Ctrl-C: SIGINT at its default in the child. A shell that starts
    a command in the background without job control (``cmd &`` in a script, as CI may) ignores SIGINT for it,
    that is inherited, and Python then never installs its KeyboardInterrupt handler: the Ctrl-C is lost."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def finish(p: subprocess.Popen, timeout_s: float) -> tuple[int, str]:
    """Wait for a study started as a subprocess, at most ``timeout_s``: its exit code and stderr (killed and
    failed with its stderr's tail when it does not finish in time)."""
    try:
        _, err = p.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate(timeout=60)
        pytest.fail(f"the study did not finish in {timeout_s}s:\n{err[-3000:]}")
    return p.returncode, err
