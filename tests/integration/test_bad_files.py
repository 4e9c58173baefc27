"""Files that exist but are not what they claim to be: one line and exit 2, nothing written.

Stores, adapters, model directories, GGUF files, study files, corpora, datasets and CSVs.
Cache entries (converted GGUF models, base references, sampled ``self`` corpora) are the
exception: a damaged one is discarded and computed again, since it is only a cache.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from forgetscale.cli import main
from tests.helpers import TEXT, one_error_line

GARBAGE = bytes(range(256)) * 40  # not UTF-8, not JSON, not SQLite, not safetensors, not GGUF


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    path.mkdir()
    monkeypatch.setenv("FORGETSCALE_CACHE", str(path))
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- study stores


def _truncated_store(path: Path) -> None:
    from forgetscale.store import open_store

    with open_store(path.parent) as store:
        store.set_meta("study", {"name": "x", "blob": "y" * 20000})
        for i in range(50):
            store.register_run(f"run{i:03d}", {"pad": "z" * 2000}, "news", 1)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _other_schema(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO runs (name) VALUES ('not ours')")
    conn.commit()
    conn.close()


def _bad_json(path: Path) -> None:
    from forgetscale.store import open_store

    with open_store(path.parent) as store:
        store.set_meta("run_ids", [])
        with store.conn:
            store.conn.execute("INSERT OR REPLACE INTO meta VALUES ('study', '{not json')")


STORES = {
    "garbage": (lambda p: p.write_bytes(GARBAGE), "not an SQLite database"),
    "other_schema": (_other_schema, "not a forgetscale study store"),
    "truncated": (_truncated_store, "damaged"),
    "empty": (lambda p: p.write_bytes(b""), "empty"),
    "directory": (lambda p: p.mkdir(), "not a file"),
}
COMMANDS = {
    "fit": lambda d: ["fit", str(d)],
    "predict": lambda d: ["predict", str(d), "--rank", "4", "--steps", "100"],
    "plan": lambda d: ["plan", str(d), "--max-forgetting", "2.0"],
    "report": lambda d: ["report", str(d)],
    "probe": lambda d: ["probe", str(d)],
}


@pytest.mark.parametrize("damage", list(STORES))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_store_that_is_not_a_store_is_one_line(tmp_path: Path, capsys, damage: str, command: str) -> None:
    study = tmp_path / "study"
    study.mkdir()
    make, needle = STORES[damage]
    make(study / "study.sqlite")
    before = snapshot(study)
    rc = main(COMMANDS[command](study))
    line = one_error_line(capsys, rc, "study.sqlite")
    assert needle in line or (damage == "directory" and "no study.sqlite" in line), line
    assert snapshot(study) == before and sorted(p.name for p in study.iterdir()) == ["study.sqlite"]


def test_a_store_with_damaged_json_is_one_line(tmp_path: Path, capsys) -> None:
    study = tmp_path / "study"
    _bad_json(study / "study.sqlite")
    rc = main(["fit", str(study)])
    one_error_line(capsys, rc, "study.sqlite", "meta 'study'", "not valid JSON")


@pytest.mark.parametrize("damage", ["garbage", "other_schema", "truncated"])
def test_run_refuses_a_damaged_store_before_loading_anything(
    tmp_path: Path, tiny_model: Path, cache: Path, capsys, damage: str
) -> None:
    study = tmp_path / "study"
    study.mkdir()
    STORES[damage][0](study / "study.sqlite")
    before = snapshot(study)
    rc = main(["run", "--out", str(study), "--set", f"model.name={tiny_model}", "--set", "train.precision=fp32"])
    one_error_line(capsys, rc, "study.sqlite")
    assert snapshot(study) == before and [p.name for p in study.iterdir()] == ["study.sqlite"]
    assert not any(cache.iterdir())  # refused before any model, corpus or reference


# ----------------------------------------------------------------------------- adapters


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    out = tmp_path_factory.mktemp("adapter") / "a"
    peft.save_pretrained(out)
    return out


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])


ADAPTER_DAMAGE = {
    "config_not_json": (lambda a: (a / "adapter_config.json").write_text("{peft_type: LORA"), "not valid JSON"),
    "config_not_utf8": (lambda a: (a / "adapter_config.json").write_bytes(GARBAGE), "not text"),
    "config_not_peft": (lambda a: (a / "adapter_config.json").write_text('{"r": 2}'), "peft_type"),
    "config_a_list": (lambda a: (a / "adapter_config.json").write_text("[1, 2]"), "peft_type"),
    "weights_garbage": (lambda a: (a / "adapter_model.safetensors").write_bytes(GARBAGE), "not a safetensors file"),
    "weights_truncated": (lambda a: _truncate(a / "adapter_model.safetensors"), "truncated"),
    "weights_missing": (lambda a: (a / "adapter_model.safetensors").unlink(), "no adapter weights"),
    "weights_empty": (lambda a: (a / "adapter_model.safetensors").write_bytes(b""), "not a safetensors file"),
}


@pytest.mark.parametrize("damage", list(ADAPTER_DAMAGE))
def test_a_damaged_adapter_is_one_line(
    tmp_path: Path, tiny_model: Path, adapter: Path, cache: Path, corpus: Path, capsys, damage: str
) -> None:
    bad = tmp_path / "adapter"
    shutil.copytree(adapter, bad)
    make, needle = ADAPTER_DAMAGE[damage]
    make(bad)
    rc = main(["forgetting", "--base", str(tiny_model), "--adapter", str(bad), "--data", str(corpus)])
    one_error_line(capsys, rc, str(bad), "--adapter", needle)
    assert not any(cache.iterdir())  # checked before the base model loads


def test_an_adapter_for_another_model_is_one_error_line(
    tmp_path: Path, tiny_model: Path, adapter: Path, cache: Path, corpus: Path, capsys
) -> None:
    """Found only when PEFT attaches it (after the base loaded and logged): the last line, no traceback."""
    bad = tmp_path / "adapter"
    shutil.copytree(adapter, bad)
    config = json.loads((bad / "adapter_config.json").read_text())
    config["target_modules"] = ["no_such_module"]
    (bad / "adapter_config.json").write_text(json.dumps(config))
    rc = main(["forgetting", "--base", str(tiny_model), "--adapter", str(bad), "--data", str(corpus),
               "--seq-len", "32"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("forgetscale: error: cannot load adapter"), err


# ----------------------------------------------------------------------------- model directories and GGUF files


MODEL_DAMAGE = {
    "config_not_json": (lambda m: (m / "config.json").write_text('{"model_type": "llama",'), "is not valid JSON"),
    "config_not_utf8": (lambda m: (m / "config.json").write_bytes(GARBAGE), "config.json is not text"),
    "config_a_list": (lambda m: (m / "config.json").write_text("[]"), "not a model config"),
    "weights_garbage": (lambda m: (m / "model.safetensors").write_bytes(GARBAGE), "is not a safetensors file"),
    "weights_truncated": (lambda m: _truncate(m / "model.safetensors"), "model.safetensors is truncated"),
    "tokenizer_garbage": (lambda m: (m / "tokenizer.json").write_bytes(GARBAGE), "tokenizer.json is not text"),
    "tokenizer_not_json": (lambda m: (m / "tokenizer.json").write_text("{"), "tokenizer.json is not valid JSON"),
}  # fmt: skip


@pytest.mark.parametrize("damage", list(MODEL_DAMAGE))
@pytest.mark.parametrize("role", ["--base", "--model", "model.name"])
def test_a_damaged_model_directory_is_one_line(
    tmp_path: Path, tiny_model: Path, cache: Path, corpus: Path, capsys, damage: str, role: str
) -> None:
    bad = tmp_path / "model"
    shutil.copytree(tiny_model, bad)
    make, needle = MODEL_DAMAGE[damage]
    make(bad)
    if role == "--base":
        argv = ["forgetting", "--base", str(bad), "--model", str(tiny_model), "--data", str(corpus)]
    elif role == "--model":
        argv = ["forgetting", "--base", str(tiny_model), "--model", str(bad), "--data", str(corpus)]
    else:
        argv = ["run", "--out", str(tmp_path / "study"), "--set", f"model.name={bad}", "--set", "train.precision=fp32"]
    rc = main(argv)
    one_error_line(capsys, rc, str(bad), role, needle)
    assert not any(cache.iterdir()) and not (tmp_path / "study").exists()


@pytest.mark.parametrize("content", [GARBAGE, b"", b"GGU", json.dumps({"a": 1}).encode()])
def test_a_gguf_that_is_not_gguf_is_one_line(
    tmp_path: Path, tiny_model: Path, cache: Path, corpus: Path, capsys, content: bytes
) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(content)
    rc = main(["forgetting", "--base", str(fake), "--model", str(tiny_model), "--data", str(corpus)])
    one_error_line(capsys, rc, str(fake), "--base", "not a GGUF file")
    assert not any(cache.iterdir())


def test_a_damaged_gguf_conversion_in_the_cache_is_discarded(tmp_path: Path, tiny_model: Path, cache: Path) -> None:
    """A converted GGUF model lives in the cache; a damaged conversion is thrown away and redone (here
    the redo fails, as this GGUF is a stand-in with only the magic, so the user gets one line)."""
    from forgetscale.config import ModelConfig
    from forgetscale.errors import UserError
    from forgetscale.models import file_digest, load_model

    fake = tmp_path / "tiny.gguf"
    fake.write_bytes(b"GGUF" + b"\0" * 60)
    converted = cache / "models" / f"tiny-{file_digest(fake)[:16]}"
    shutil.copytree(tiny_model, converted)
    (converted / "forgetscale.json").write_text(json.dumps({"source": str(fake)}))
    assert load_model(ModelConfig(name=str(fake))).model.config.vocab_size > 0  # served from the cache

    _truncate(converted / "model.safetensors")
    with pytest.raises(UserError, match="cannot read GGUF model"):
        load_model(ModelConfig(name=str(fake)))
    assert not converted.exists() and not list((cache / "models").iterdir())  # discarded, nothing half-made


# ----------------------------------------------------------------------------- caches: recomputed, not fatal


def _forgetting(tiny_model: Path, corpus: Path, capsys) -> tuple[dict, str]:
    rc = main(["forgetting", "--base", str(tiny_model), "--model", str(tiny_model), "--data", str(corpus),
               "--seq-len", "32", "--json"])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out), captured.err


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "delete_one"])
def test_a_damaged_base_reference_is_recomputed(
    tiny_model: Path, cache: Path, corpus: Path, capsys, damage: str
) -> None:
    first, _ = _forgetting(tiny_model, corpus, capsys)
    (ref,) = (cache / "refs").iterdir()
    files = sorted(p for p in ref.iterdir() if p.is_file())
    assert files
    for i, f in enumerate(files):  # every file of the reference, in turn
        if damage == "truncate":
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        elif damage == "garbage":
            f.write_bytes(GARBAGE[: max(64, f.stat().st_size)])
        elif damage == "empty":
            f.write_bytes(b"")
        else:
            f.unlink()
        again, err = _forgetting(tiny_model, corpus, capsys)
        assert "damaged" in err and "computing it again" in err, (f.name, err)
        assert again == first, f.name
        (ref,) = (cache / "refs").iterdir()  # one entry, intact again; no debris beside it
        files = sorted(p for p in ref.iterdir() if p.is_file())
        f = files[i]


def test_a_reference_whose_rows_do_not_fit_is_recomputed(
    tiny_model: Path, cache: Path, corpus: Path, capsys
) -> None:
    import numpy as np

    first, _ = _forgetting(tiny_model, corpus, capsys)
    (ref,) = (cache / "refs").iterdir()
    meta = dict(np.load(ref / "meta.npz"))
    meta["entropy"] = meta["entropy"][:-3]  # a valid file with the wrong number of rows
    np.savez(ref / "meta.npz", **meta)
    again, err = _forgetting(tiny_model, corpus, capsys)
    assert "computing it again" in err and again == first


@pytest.mark.parametrize(
    "content",
    [GARBAGE, b"", b'{"prompt": "x", "response": 1}\n', b'{"prompt": "only one"', b'{"prompt":"p","response":"r"}\n'],
)
def test_a_damaged_self_corpus_sample_is_resampled(tiny_model: Path, tmp_path: Path, content: bytes) -> None:
    from forgetscale.config import ForgettingConfig, ModelConfig
    from forgetscale.data.corpus import sample_self
    from forgetscale.models import load_model

    lm = load_model(ModelConfig(name=str(tiny_model)))
    cfg = ForgettingConfig(n_prompts=3, max_new_tokens=6)
    first = sample_self(cfg, lm.tokenizer, lm.model, lm.fingerprint, tmp_path)
    (path,) = (tmp_path / "corpora").iterdir()
    path.write_bytes(content)
    assert sample_self(cfg, lm.tokenizer, lm.model, lm.fingerprint, tmp_path) == first  # same seed, same sample
    assert path.read_text(encoding="utf-8").count("\n") == 3
    with pytest.raises(RuntimeError):  # a damaged cache without the model to resample: not a silent pass
        path.write_bytes(content)
        sample_self(cfg, lm.tokenizer, None, lm.fingerprint, tmp_path)


# ----------------------------------------------------------------------------- text inputs that are not text


def test_a_binary_study_file_is_one_line(tmp_path: Path, capsys) -> None:
    for content in (GARBAGE, b"name: x\n\x00\x01\x02: [", b"\xef\xbb\xbfname: \xff\xfe"):
        study_file = tmp_path / "study.yaml"
        study_file.write_bytes(content)
        rc = main(["run", str(study_file), "--out", str(tmp_path / "out")])
        one_error_line(capsys, rc, str(study_file))
        assert not (tmp_path / "out").exists()


def test_text_inputs_that_are_not_utf8_are_one_line(tmp_path: Path, tiny_model: Path, cache: Path, capsys) -> None:
    latin = tmp_path / "latin1.txt"
    latin.write_bytes(("caf\xe9 " * 400).encode("latin-1"))
    rc = main(["forgetting", "--base", str(tiny_model), "--model", str(tiny_model), "--data", str(latin)])
    one_error_line(capsys, rc, str(latin), "--data", "not UTF-8")
    out = tmp_path / "study"
    for key, value in (("forgetting.corpus", latin), ("data.dataset", latin)):
        rc = main(["run", "--out", str(out), "--set", f"model.name={tiny_model}", "--set", f"{key}={value}",
                   "--set", "train.precision=fp32"])  # fmt: skip
        one_error_line(capsys, rc, str(latin))
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_bytes(b'{"text": "caf\xe9"}\n' * 10)
    rc = main(["run", "--out", str(out), "--set", f"model.name={tiny_model}", "--set", f"data.dataset={jsonl}",
               "--set", "train.precision=fp32"])  # fmt: skip
    one_error_line(capsys, rc, str(jsonl))
    assert not out.exists() and not any(cache.iterdir())

    csv_file = tmp_path / "points.csv"
    csv_file.write_bytes(b"P,N,loss\n1,2,\xff\xfe\n")
    rc = main(["fit", "--from-csv", str(csv_file), "--x", "P,N", "--y", "loss", "--law", "additive"])
    one_error_line(capsys, rc, str(csv_file), "not a UTF-8 CSV")
