"""The hub code paths (hub model ids, ``hf:NAME[:CONFIG]`` datasets, the ``wikitext`` corpus), offline.

Every fixture is built here, in the layout the hub and ``datasets`` leave on disk:
a model as the huggingface_hub cache stores it (``models--org--name/{blobs,snapshots/<rev>,refs/main}``),
a dataset repository directory (README configs + parquet files) and the ``datasets`` cache that
loading such a repository from the hub leaves (``org___name/<config>/<version>/<hash>/*.arrow``).
The suite runs with HF_HUB_OFFLINE/HF_DATASETS_OFFLINE set (the root conftest.py): nothing is fetched.
When the hub cannot serve a name (offline, unreachable, no such repo), the user gets one line and exit 2,
and an unreachable hub is not retried: the last tests run the CLI against a local endpoint that accepts
each connection and closes it, and count the connections.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from forgetscale import hub
from forgetscale.cli import main
from forgetscale.errors import UserError
from tests.helpers import TEXT, one_error_line

REV = "0123456789abcdef0123456789abcdef01234567"  # a commit hash, as the hub cache names snapshots


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh forgetscale cache, hub cache and datasets cache for this test; cwd in a scratch dir."""
    import datasets.config
    from huggingface_hub import constants

    for name in ("fs_cache", "hub", "datasets", "cwd"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("FORGETSCALE_CACHE", str(tmp_path / "fs_cache"))
    # the libraries read these once, at import: point both the variables and their constants here
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", Path(tmp_path / "datasets"))
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path


def hub_cache_model(model_dir: Path, hub_cache: Path, repo_id: str, rev: str = REV) -> Path:
    """Lay ``model_dir`` out as huggingface_hub caches ``repo_id`` at commit ``rev``: content-addressed blobs, a
    snapshot of symlinks into them named by the commit, and ``refs/main`` holding that commit (a second call
    for the same repository adds a commit and moves ``main`` to it, as a pull after an update does)."""
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo / "snapshots" / rev
    snapshot.mkdir(parents=True)
    for f in sorted(model_dir.iterdir()):
        data = f.read_bytes()
        if f.suffix == ".safetensors":  # LFS files: blob named by sha256
            etag = hashlib.sha256(data).hexdigest()
        else:  # git files: blob named by the git blob sha1
            etag = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        (repo / "blobs" / etag).write_bytes(data)
        (snapshot / f.name).symlink_to(Path("..", "..", "blobs", etag))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    return repo


def dataset_repo(directory: Path, configs: dict[str, dict[str, list[dict]]], fmt: str = "parquet") -> Path:
    """A hub dataset repository as it is cloned: README.md with YAML ``configs`` and data files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = ["---", "configs:"]
    for config, splits in configs.items():
        lines += [f"- config_name: {config}", "  data_files:"]
        for split, rows in splits.items():
            (directory / config).mkdir(parents=True, exist_ok=True)
            if fmt == "parquet":
                pq.write_table(pa.Table.from_pylist(rows), directory / config / f"{split}-00000-of-00001.parquet")
            else:
                with open(directory / config / f"{split}-00000-of-00001.json", "w", encoding="utf-8") as f:
                    f.writelines(json.dumps(r) + "\n" for r in rows)
            lines += [f"  - split: {split}", f"    path: {config}/{split}-*"]
    lines += ["---", f"# {directory.name}", ""]
    (directory / "README.md").write_text("\n".join(lines), encoding="utf-8")
    return directory


def datasets_cache(repo_dir: Path, config: str, cache: Path, repo_id: str) -> Path:
    """What ``load_dataset(repo_id, config)`` leaves in the ``datasets`` cache after one online load:
    the prepared arrow files under ``namespace___name/<config>/<version>/<hash>/``. Prepared here
    from the local copy of the repository, then placed under the hub name."""
    import datasets

    builder = datasets.load_dataset_builder(str(repo_dir), config, cache_dir=str(cache))
    builder.download_and_prepare()
    prepared = cache / repo_dir.name
    target = cache / repo_id.replace("/", "___")
    shutil.move(prepared, target)
    return target


def chat_rows(n: int) -> list[dict]:
    return [{"question": f"What is {i} plus {i}?", "response": f"It is {2 * i}.", "system_prompt": ""}
            for i in range(n)]  # fmt: skip


# ----------------------------------------------------------------------------- hub model ids


def test_hub_model_id_resolves_from_the_hub_cache_offline(isolated: Path, tiny_model: Path, capsys) -> None:
    from forgetscale.config import ModelConfig
    from forgetscale.models import load_model, resolve

    hub_cache_model(tiny_model, isolated / "hub", "org/tiny-llama")
    assert resolve(ModelConfig(name="org/tiny-llama")) == ("hub", None)
    lm = load_model(ModelConfig(name="org/tiny-llama"))
    assert lm.fingerprint == f"hub:org/tiny-llama@{REV}"  # the commit loaded, never the moving "main"
    local = load_model(ModelConfig(name=str(tiny_model)))
    for (k, a), (_, b) in zip(lm.model.state_dict().items(), local.model.state_dict().items(), strict=True):
        assert (a == b).all(), k
    assert lm.tokenizer("hello world")["input_ids"] == local.tokenizer("hello world")["input_ids"]

    # the CLI end to end: the hub base against the same weights from a directory forgets nothing
    corpus = isolated / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    rc = main(["forgetting", "--base", "org/tiny-llama", "--model", str(tiny_model), "--data", str(corpus),
               "--seq-len", "32", "--json"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    metrics = json.loads(out)
    assert abs(metrics["forget_kl"]) < 1e-5 and metrics["n_tokens"] > 0


def test_hub_model_not_in_the_cache_offline_is_one_line(isolated: Path, tiny_model: Path, capsys) -> None:
    corpus = isolated / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    rc = main(["forgetting", "--base", "org/absent", "--model", str(tiny_model), "--data", str(corpus)])
    one_error_line(capsys, rc, "'org/absent'", "--base", "offline", "hf download org/absent")
    assert not any((isolated / "fs_cache").iterdir())  # nothing written

    out = isolated / "study"
    rc = main(["run", "--out", str(out), "--set", "model.name=org/absent", "--set", "train.precision=fp32"])
    one_error_line(capsys, rc, "'org/absent'", "model.name", "offline")
    assert not out.exists()


def _http_error(cls: type[Exception], message: str) -> Exception:
    """A huggingface_hub HTTP error without an HTTP response (its constructor wants one)."""
    e = cls.__new__(cls)
    Exception.__init__(e, message)
    return e


@pytest.mark.parametrize(
    ("error", "needles"),
    [
        ("unreachable", ["cannot reach the Hugging Face Hub", "connection"]),
        ("not_found", ["does not exist on the Hugging Face Hub", "check the name"]),
        ("gated", ["gated", "hf auth login"]),
        ("revision", ["no revision"]),
        ("connection", ["cannot reach the Hugging Face Hub"]),
    ],
)
def test_hub_model_failures_online_are_one_line(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, capsys, error: str, needles: list[str]
) -> None:
    """What the hub answers when it is reachable (or not), emulated at huggingface_hub's download call."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    def fail(*_a, **_k):
        if error == "unreachable":
            raise LocalEntryNotFoundError("cannot find the requested files in the disk cache") from ConnectionError()
        if error == "connection":
            raise ConnectionError("[Errno 111] Connection refused")
        cls = {"not_found": RepositoryNotFoundError, "gated": GatedRepoError, "revision": RevisionNotFoundError}
        raise _http_error(cls[error], "404 Client Error")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "unreachable", lambda: None)  # the hub answers (and no request leaves this machine)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)
    out = isolated / "study"
    rc = main(["run", "--out", str(out), "--set", "model.name=org/some-model", "--set", "train.precision=fp32"])
    one_error_line(capsys, rc, "'org/some-model'", "model.name", *needles)
    assert not out.exists()


# ----------------------------------------------------------------------------- hf:NAME datasets


def test_hf_dataset_from_a_local_repository_directory(isolated: Path) -> None:
    from forgetscale.data.sources import load_splits

    repo = dataset_repo(isolated / "orca", {"default": {"train": chat_rows(30), "test": chat_rows(5)}})
    train, held = load_splits(f"hf:{repo}", 20, 4, seed=0)  # streams the first 24 of 30 rows
    assert len(train) == 20 and len(held) == 4
    assert train[0]["messages"][-1]["role"] == "assistant"
    _, held_test = load_splits(f"hf:{repo}:default", 3, 1, seed=0, split="test")
    assert len(held_test) == 1

    jrepo = dataset_repo(isolated / "jsonrepo", {"main": {"train": [{"text": f"line {i}"} for i in range(9)]}}, "json")
    train, held = load_splits(f"hf:{jrepo}:main", 5, 2, seed=0)
    assert {e["text"] for e in train + held} <= {f"line {i}" for i in range(9)}


def test_hf_dataset_by_hub_name_from_the_datasets_cache_offline(isolated: Path) -> None:
    from forgetscale.data.sources import load_splits

    repo = dataset_repo(isolated / "orca", {"default": {"train": chat_rows(30)}})
    datasets_cache(repo, "default", isolated / "datasets", "some-org/orca")
    train, held = load_splits("hf:some-org/orca", 12, 3, seed=1)
    assert len(train) == 12 and len(held) == 3
    # the same examples as from the repository itself: the cache is the same data
    assert (train, held) == load_splits(f"hf:{repo}", 12, 3, seed=1)


@pytest.mark.parametrize(
    ("spec", "split", "needles"),
    [
        ("hf:some-org/absent", "train", ["'hf:some-org/absent'", "data.dataset", "offline"]),
        ("hf:some-org/orca:nope", "train", ["data.dataset", "config 'nope'"]),
        ("hf:some-org/orca", "validation", ["data.dataset", "data.split", "validation"]),
        ("hf:LOCAL:nope", "train", ["data.dataset", "config 'nope'"]),
    ],
)
def test_hf_dataset_failures_are_one_line_and_write_nothing(
    isolated: Path, tiny_model: Path, capsys, spec: str, split: str, needles: list[str]
) -> None:
    repo = dataset_repo(isolated / "orca", {"default": {"train": chat_rows(30)}})
    datasets_cache(repo, "default", isolated / "datasets", "some-org/orca")
    out = isolated / "study"
    spec = spec.replace("LOCAL", str(repo))
    capsys.readouterr()  # the fixture's own progress output
    rc = main(["run", "--out", str(out), "--set", f"model.name={tiny_model}", "--set", f"data.dataset={spec}",
               "--set", f"data.split={split}", "--set", "train.precision=fp32"])  # fmt: skip
    one_error_line(capsys, rc, *needles)
    assert not out.exists()


def test_hf_dataset_with_files_that_are_not_utf8_is_one_line(isolated: Path, tiny_model: Path, capsys) -> None:
    repo = dataset_repo(isolated / "broken", {"default": {"train": chat_rows(10)}}, "json")
    (repo / "default" / "train-00000-of-00001.json").write_bytes(b'{"text": "caf\xe9 \xff\xfe"}\n' * 10)
    out = isolated / "study"
    rc = main(["run", "--out", str(out), "--set", f"model.name={tiny_model}", "--set", f"data.dataset=hf:{repo}",
               "--set", "train.precision=fp32"])  # fmt: skip
    one_error_line(capsys, rc, "data.dataset", "cannot read its data files")
    assert not out.exists()


@pytest.mark.parametrize(
    ("exc", "needles"),
    [
        ("not_found", ["no such dataset", "hf auth login"]),
        ("unreachable", ["cannot reach the Hugging Face Hub"]),
    ],
)
def test_hf_dataset_failures_online_are_one_line(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, exc: str, needles: list[str]
) -> None:
    """What ``datasets.load_dataset`` raises online for a missing repository or an unreachable hub."""
    import datasets
    import datasets.config
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub import constants

    from forgetscale.data.sources import load_splits

    def fail(*_a, **_k):
        if exc == "not_found":
            raise DatasetNotFoundError("Dataset 'org/x' doesn't exist on the Hub or cannot be accessed.")
        raise ConnectionError("Couldn't reach 'org/x' on the Hub (ConnectError)")

    monkeypatch.setattr(datasets, "load_dataset", fail)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "unreachable", lambda: None)  # the hub answers (and no request leaves this machine)
    with pytest.raises(UserError) as info:
        load_splits("hf:org/x", 4, 1, seed=0)
    msg = str(info.value)
    assert "\n" not in msg and "'hf:org/x' (data.dataset)" in msg
    for needle in needles:
        assert needle in msg


# ----------------------------------------------------------------------------- the wikitext corpus


def _wikitext_rows() -> list[dict]:
    paras = [f" = Section {i} = \n" if i % 5 == 0 else f" {TEXT[i * 40 : i * 40 + 200]} \n" for i in range(30)]
    return [{"text": p} for p in paras]


def test_wikitext_from_the_datasets_cache_offline(isolated: Path, tiny_model: Path, capsys) -> None:
    from forgetscale.data import corpus

    corpus._wikitext.cache_clear()
    repo = dataset_repo(isolated / "wikitext", {"wikitext-103-raw-v1": {"test": _wikitext_rows()}})
    datasets_cache(repo, "wikitext-103-raw-v1", isolated / "datasets", "Salesforce/wikitext")
    capsys.readouterr()
    try:
        assert corpus._wikitext() == "".join(r["text"] for r in _wikitext_rows())
        rc = main(["forgetting", "--base", str(tiny_model), "--model", str(tiny_model), "--data", "wikitext",
                   "--seq-len", "32", "--json"])  # fmt: skip
        out = capsys.readouterr().out
        assert rc == 0
        metrics = json.loads(out)
        assert metrics["n_tokens"] > 0 and abs(metrics["forget_kl"]) < 1e-5
    finally:
        corpus._wikitext.cache_clear()


def test_wikitext_offline_and_not_cached_is_one_line(isolated: Path, tiny_model: Path, capsys) -> None:
    from forgetscale.data import corpus

    corpus._wikitext.cache_clear()
    rc = main(["forgetting", "--base", str(tiny_model), "--model", str(tiny_model), "--data", "wikitext"])
    one_error_line(capsys, rc, "wikitext", "--data", "offline")
    assert not any((isolated / "fs_cache").iterdir())

    out = isolated / "study"
    rc = main(["run", "--out", str(out), "--set", f"model.name={tiny_model}", "--set", "forgetting.corpus=wikitext",
               "--set", "train.precision=fp32"])  # fmt: skip
    one_error_line(capsys, rc, "wikitext", "forgetting.corpus", "offline")
    assert not out.exists()
    assert os.listdir(isolated / "cwd") == []


# ----------------------------------------------------------------------------- an unreachable hub fails fast


@pytest.fixture
def dead_hub() -> Iterator[tuple[str, list[int]]]:
    """A hub endpoint on this machine that accepts each connection and closes it without a word (a
    ``RemoteProtocolError``, which huggingface_hub retries like a refused or timed-out connection), and
    counts the connections: ``(url, [count])``."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    count, stop = [0], threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            count[0] += 1
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", count
    finally:
        stop.set()
        thread.join()
        server.close()


def _online(endpoint: str, cwd: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Python ``code`` in a fresh process with offline mode off and the hub at ``endpoint`` (the libraries
    read both at import); the caches are this test's (``isolated``)."""
    offline = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")  # each one turns offline mode on
    env = {**{k: v for k, v in os.environ.items() if k not in offline}, "HF_ENDPOINT": endpoint}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def _one_line(p: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr  # no "Retrying in 1s [Retry 1/5]" above it
    assert lines[0].startswith("forgetscale: error: ") and "cannot reach the Hugging Face Hub" in lines[0], p.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["forgetting", "--base", "MODEL", "--model", "MODEL", "--data", "wikitext"], ["wikitext", "--data"]),
        (["forgetting", "--base", "some-org/absent", "--model", "MODEL", "--data", "CORPUS"], ["--base"]),
        (["run", "--out", "STUDY", "--set", "model.name=MODEL", "--set", "sweep.data.dataset=[hf:some-org/absent]",
          "--set", "train.precision=fp32", "--set", "probes.enabled=false"], ["'hf:some-org/absent'"]),
    ],
    ids=["wikitext", "hub-model", "run-hf-dataset"],
)
def test_an_unreachable_hub_is_asked_once_and_fails_in_one_line(
    isolated: Path, tiny_model: Path, dead_hub: tuple[str, list[int]], args: list[str], needles: list[str]
) -> None:
    endpoint, count = dead_hub
    (isolated / "corpus.txt").write_text(TEXT, encoding="utf-8")
    subs = {"MODEL": str(tiny_model), "CORPUS": str(isolated / "corpus.txt"), "STUDY": str(isolated / "study")}
    cli = "import sys; from forgetscale.cli import main; sys.exit(main(sys.argv[1:]))"
    p = _online(endpoint, isolated / "cwd", cli, *[subs.get(a, a).replace("MODEL", str(tiny_model)) for a in args])
    _one_line(p, *needles)
    # one reachability request, then the caches only; huggingface_hub alone would have made 7 (a first
    # request, then 1 + 5 retries over 1 + 2 + 4 + 8 + 8 s)
    assert count[0] == 1
    assert not (isolated / "study").exists()


def test_a_cached_dataset_loads_with_the_hub_unreachable(isolated: Path, dead_hub: tuple[str, list[int]]) -> None:
    """No offline mode set, the hub gives no answer: what the datasets cache holds still loads, at once."""
    endpoint, count = dead_hub
    repo = dataset_repo(isolated / "orca", {"default": {"train": chat_rows(30)}})
    datasets_cache(repo, "default", isolated / "datasets", "some-org/orca")
    code = ("from forgetscale.data.sources import load_splits; "
            "train, held = load_splits('hf:some-org/orca', 12, 3, seed=1); print(len(train), len(held))")  # fmt: skip
    p = _online(endpoint, isolated / "cwd", code)
    assert p.returncode == 0 and p.stdout.split() == ["12", "3"], p.stderr
    assert count[0] == 1
