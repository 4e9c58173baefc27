"""The GPU check script itself, run on the CPU on the tiny model: its assertions hold where they must (step 0
exactly 0 in fp32 and bf16, references made where the model runs, forget_kl equal to stock PEFT's float64)."""

from __future__ import annotations

import json

from bench import gpu_check


def test_the_gpu_check_passes_on_the_cpu(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FORGETSCALE_CACHE", str(tmp_path / "cache"))  # the script points it elsewhere; restored
    monkeypatch.setattr(gpu_check, "CPU_FIGURES", tmp_path / "cpu.json")
    small = ["--set", "forgetting.n_prompts=3", "--set", "forgetting.max_new_tokens=8", "--set",
             "sweep.data.dataset=[news]"]  # fmt: skip
    args = ["--device", "cpu", "--model", str(tiny_model), "--no-callback", *small]
    assert gpu_check.main([*args, "--write-reference"]) == 0
    written = json.loads((tmp_path / "cpu.json").read_text())
    assert written["model"] == str(tiny_model) and written["step0"]["forget_ce"] > 0
    capsys.readouterr()
    assert gpu_check.main(args) == 0  # compared with the figures just written: the same machine agrees
    out = capsys.readouterr().out
    assert "step 0 exactly 0" in out and "step 0 base_entropy" in out and "passed" in out
