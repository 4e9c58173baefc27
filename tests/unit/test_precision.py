"""precision auto: chosen by timing both precisions, cached per machine, never by CPU flags."""

from __future__ import annotations

import json
import math

import pytest
import torch

from forgetscale import precision


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize(("fp32_s", "bf16_s", "want"), [(1.0, 0.4, "bf16"), (1.0, 1.4, "fp32"), (1.0, 0.95, "fp32")])
def test_auto_takes_the_measured_faster_precision(cpu_only, monkeypatch, tmp_path, fp32_s, bf16_s, want):
    # a Xeon seen with the AVX512-BF16 flag and bf16 slower is the (1.0, 1.4) case: flags say bf16, timing says fp32
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(precision, "time_kernels", lambda: (fp32_s, bf16_s))
    assert precision.resolve("auto", tmp_path) == want
    assert precision.resolve("fp32", tmp_path) == "fp32" and precision.resolve("bf16", tmp_path) == "bf16"


def test_the_choice_is_cached_per_machine(cpu_only, monkeypatch, tmp_path):
    calls = []

    def timed():
        calls.append(1)
        return 1.0, 0.3

    monkeypatch.setattr(precision, "time_kernels", timed)
    assert precision.resolve("auto", tmp_path) == "bf16"
    assert precision.resolve("auto", tmp_path) == "bf16"
    assert len(calls) == 1  # the second answer came from the cache
    cached = json.loads((tmp_path / "precision.json").read_text())
    assert cached[precision.machine_key()]["choice"] == "bf16"
    monkeypatch.setattr(precision, "machine_key", lambda: "another machine")
    monkeypatch.setattr(precision, "time_kernels", lambda: (1.0, 2.0))
    assert precision.resolve("auto", tmp_path) == "fp32"  # another machine measures for itself
    assert set(json.loads((tmp_path / "precision.json").read_text())) == {"another machine", *cached}


def test_a_damaged_cache_is_measured_again(cpu_only, monkeypatch, tmp_path):
    (tmp_path / "precision.json").write_bytes(b"\x00\xffnot json")
    monkeypatch.setattr(precision, "time_kernels", lambda: (1.0, 2.0))
    assert precision.resolve("auto", tmp_path) == "fp32"
    assert json.loads((tmp_path / "precision.json").read_text())


def test_the_micro_benchmark_times_both_precisions(cpu_only):
    fp32_s, bf16_s = precision.time_kernels(m=64, k=32, n=48, reps=1, rounds=1)
    # a positive, finite time for each (how long is the machine's business, not the test's)
    assert all(isinstance(t, float) and math.isfinite(t) and t > 0 for t in (fp32_s, bf16_s))
