"""A base reference serves only the model, device, dtype and metric version it was made for.

Every path (a study, ``forgetscale forgetting``, the callback, a Ray worker) finds its reference through one
key that hashes the model's whole identity, and every evaluation checks the reference's recorded device and
dtype against the model in hand. These tests build the cases that used to mix references silently: two hub
models whose names share a long prefix, a hub model updated under the same branch, a bf16 model, a study
resumed under another metric version or on another device.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from forgetscale.cli import main
from tests.helpers import TEXT, build_tiny_model, one_error_line
from tests.integration.test_hub_offline import REV, hub_cache_model, isolated  # noqa: F401 - a fixture

A, B = "org/llama-2-7b-chat-hf", "org/llama-2-13b-chat-hf"  # the same 16 leading characters


def _measure(capsys, base: str, model: Path, corpus: Path) -> dict:
    rc = main(["forgetting", "--base", base, "--model", str(model), "--data", str(corpus), "--seq-len", "32",
               "--json"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    return json.loads(out)


def _identities(cache: Path) -> dict[str, dict]:
    return {d.name: json.loads((d / "identity.json").read_text()) for d in (cache / "refs").iterdir()}


def test_two_hub_models_sharing_a_long_prefix_each_get_their_own_reference(isolated, tmp_path, capsys, monkeypatch):  # noqa: F811
    a = build_tiny_model(tmp_path / "a", seed=0)
    b = build_tiny_model(tmp_path / "b", seed=1)
    hub_cache_model(a, isolated / "hub", A)
    hub_cache_model(b, isolated / "hub", B)
    corpus = isolated / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")

    first = _measure(capsys, A, a, corpus)
    second = _measure(capsys, B, b, corpus)  # the second model, after the first's reference is cached
    # each measured against itself: exactly the identity (the old key gave the second KL 5.5e-4 here)
    assert first["forget_kl"] == 0.0 and second["forget_kl"] == 0.0
    refs = _identities(isolated / "fs_cache")
    assert sorted(r["model"] for r in refs.values()) == sorted([f"hub:{A}@{REV}", f"hub:{B}@{REV}"])
    assert all("/" not in name for name in refs)  # one directory each, no hub id nested in the tree

    # the numbers of a cache that only ever saw the second model
    monkeypatch.setenv("FORGETSCALE_CACHE", str(tmp_path / "fresh"))
    alone = _measure(capsys, B, b, corpus)
    for k in ("forget_ce", "base_entropy", "data_loss", "n_tokens"):
        assert alone[k] == second[k], k


def test_an_updated_hub_model_gets_a_new_reference(isolated, tmp_path, capsys):  # noqa: F811
    """``main`` moves to a new commit with other weights: the reference of the old commit is not reused."""
    old = build_tiny_model(tmp_path / "old", seed=0)
    new = build_tiny_model(tmp_path / "new", seed=1)
    corpus = isolated / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    hub_cache_model(old, isolated / "hub", A)
    assert _measure(capsys, A, old, corpus)["forget_kl"] == 0.0
    rev2 = "f" * 40
    hub_cache_model(new, isolated / "hub", A, rev=rev2)
    assert _measure(capsys, A, new, corpus)["forget_kl"] == 0.0
    assert sorted(r["model"] for r in _identities(isolated / "fs_cache").values()) == \
        sorted([f"hub:{A}@{REV}", f"hub:{A}@{rev2}"])  # fmt: skip


@pytest.fixture
def reference_setup(tiny_model: Path, tmp_path: Path):
    from forgetscale.config import ForgettingConfig, ModelConfig, RunConfig
    from forgetscale.workspace import Workspace

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    ws = Workspace(tmp_path / "cache")
    run = RunConfig(model=ModelConfig(name=str(tiny_model)),
                    forgetting=ForgettingConfig(corpus=str(corpus), seq_len=32))  # fmt: skip
    return ws, run


def test_a_reference_refuses_another_dtype_or_device(reference_setup):
    import torch

    from forgetscale.forgetting import measure
    from forgetscale.reference import ReferenceMismatch

    ws, run = reference_setup
    ref, model = ws.reference(run), ws.model(run).model
    assert ref.identity["device"] == "cpu" and ref.identity["eval_dtype"] == "float32"
    assert measure(model, ref, 8)["forget_kl"] == 0.0
    elsewhere = replace(ref, identity={**ref.identity, "device": "cuda (NVIDIA H100 80GB HBM3)"})
    with pytest.raises(ReferenceMismatch, match="computed on cuda"):
        measure(model, elsewhere, 8)
    with pytest.raises(ReferenceMismatch, match="in bfloat16"):
        measure(model.to(torch.bfloat16), ref, 8)


def test_a_cached_reference_of_another_identity_is_never_served(reference_setup):
    from forgetscale.reference import cached_reference, reference_identity, reference_key

    ws, run = reference_setup
    ref, lm = ws.reference(run), ws.model(run)
    identity = reference_identity(lm.model, lm.fingerprint)
    directory = ws.cache / "refs" / reference_key(identity, lm.tokenizer, list(ref.sequences), None, "hidden")
    assert directory.is_dir() and cached_reference(directory, list(ref.sequences), identity) is not None
    # every part of the identity is in the key: another model, dtype, device or metric version, another entry
    for k, v in (("model", "sha256:0"), ("eval_dtype", "bfloat16"), ("device", "mps"), ("metric_version", 0)):
        other = {**identity, k: v}
        assert reference_key(other, lm.tokenizer, list(ref.sequences), None, "hidden") != directory.name, k
    # an entry whose recorded identity is not the one its key promises is discarded, to be computed again
    assert cached_reference(directory, list(ref.sequences), {**identity, "model": "sha256:0"}) is None
    assert not directory.exists()


def test_a_bf16_model_gets_a_compact_reference_and_exactly_zero_at_identity(reference_setup):
    """bf16 weights: the hidden reference (d floats per position, the head applied in fp32 to the final hidden
    state), not a full-logit fallback; at the identity adapter KL is exactly 0; after an update the hidden
    reference's KL equals a float64 computation from the same fp32-head logits (2e-6: fp32 rounding of mu)."""
    import torch
    import torch.nn.functional as F

    from forgetscale import train
    from forgetscale.fold import folded
    from forgetscale.forgetting import measure

    ws, run = reference_setup
    run = run.model_copy(update={"model": run.model.model_copy(update={"dtype": "bfloat16"})})
    ref, lm = ws.reference(run), ws.model(run)
    assert lm.model.dtype == torch.bfloat16 and ref.mode == "hidden"
    d, vocab = lm.model.config.hidden_size, lm.model.config.vocab_size
    stored = sum(f.stat().st_size for f in Path(ref.mean_emb.filename).parent.iterdir())
    per_position = stored / ref.n_tokens
    assert ref.mean_emb.shape == (ref.n_tokens, d) and per_position < 4 * d + 200 < 4 * vocab
    peft_model = train.attach_lora(lm.model, run.lora, 0)
    try:
        with folded(peft_model):
            assert measure(peft_model, ref, 8)["forget_kl"] == 0.0
        with torch.no_grad():  # move the adapter: a real fine-tune's worth of change
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn_like(p) * 0.5)
        ours = measure(peft_model, ref, 8)["forget_kl"]

        def fp32_head_logprobs(model):
            out = []
            head = model.get_output_embeddings()
            w = head.weight.float()
            hook = head.register_forward_pre_hook(lambda _m, args: out.append(args[0]))
            rows = []
            with torch.no_grad():
                for s in ref.sequences:
                    out.clear()
                    model(input_ids=torch.tensor([s.ids]))
                    h = out[-1][0].float()
                    keep = torch.tensor(s.mask[1:] + (False,))
                    rows.append(F.log_softmax(F.linear(h[keep], w).double(), -1))
            hook.remove()
            return torch.cat(rows)

        tuned = fp32_head_logprobs(peft_model)
        with peft_model.disable_adapter():
            base = fp32_head_logprobs(peft_model)
        expected = float((base.exp() * (base - tuned)).sum(-1).mean())
    finally:
        train.detach_lora(peft_model)
    assert expected > 1e-3
    assert ours == pytest.approx(expected, rel=2e-5, abs=2e-6)


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def test_a_study_resumes_only_under_its_metric_version_and_device(tiny_overrides, tmp_path, monkeypatch, capsys):
    from forgetscale import study
    from forgetscale.schema import METRIC_VERSION

    out = tmp_path / "study"
    sets = _sets([*tiny_overrides, "sweep.data.dataset=[news]", "sweep.lora.rank=[1]", "train.steps=2",
                  "probes.enabled=false"])  # fmt: skip
    assert main(["run", "--out", str(out), *sets]) == 0
    import sqlite3

    con = sqlite3.connect(out / "study.sqlite")
    try:
        versions = {v for (v,) in con.execute("SELECT metric_version FROM measurements")}
        rows_before = con.execute("SELECT count(*) FROM measurements").fetchone()[0]
    finally:
        con.close()
    assert versions == {METRIC_VERSION}
    capsys.readouterr()
    monkeypatch.setattr(study, "METRIC_VERSION", METRIC_VERSION + 1)
    one_error_line(capsys, main(["run", "--out", str(out), *sets]), "metric version", "--out")
    monkeypatch.setattr(study, "METRIC_VERSION", METRIC_VERSION)
    monkeypatch.setattr(study, "device_label", lambda device: "cuda (NVIDIA H100 80GB HBM3)")
    one_error_line(capsys, main(["run", "--out", str(out), *sets]), "measured on cpu", "model.device")
    con = sqlite3.connect(out / "study.sqlite")
    try:
        assert con.execute("SELECT count(*) FROM measurements").fetchone()[0] == rows_before  # nothing lost
    finally:
        con.close()
    assert rows_before == 3  # steps 0, 1, 2


def test_an_fp32_study_still_prints_its_estimated_time(tiny_overrides, tmp_path):
    """With fp32 the default, nothing times the kernels for `auto`: the plan times them itself, so the plan line
    keeps its estimate on a machine that never ran an `auto` study."""
    from forgetscale import study
    from forgetscale.config import load_config
    from forgetscale.workspace import Workspace

    cache = tmp_path / "fresh-cache"
    config = load_config(preset="default", overrides=[*tiny_overrides, "train.precision=fp32",
                                                      "sweep.data.dataset=[news]", "sweep.lora.rank=[1]"])  # fmt: skip
    runs = config.runs()
    line = study._plan(config, runs, runs, Workspace(cache), cache).line()
    assert "estimated" in line and (cache / "precision.json").is_file(), line
