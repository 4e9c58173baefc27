"""Fixtures for the integration tier: the tiny Llama and its sharpened copy (each built once per test run),
the tiny study's overrides, and one local Ray cluster for the whole test run."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import TINY_STUDY, build_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def sharp_model(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """The tiny model with its final norm scaled 8x: logits 8x larger, so peaked distributions, KLs of a few
    tenths after a few steps, top tokens a fine-tune can change and Δp away from 0. The random tiny model
    stays near uniform (KL ~0.01), where the full-logit reference's own fp32 rounding (~2e-6 of it) is
    what a 1e-6 comparison would test."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("sharp") / "model"
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        model.model.norm.weight.mul_(8.0)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out


@pytest.fixture
def tiny_overrides(tiny_model: Path) -> list[str]:
    """``--set`` overrides for a seconds-long study on the tiny model."""
    return [f"model.name={tiny_model}", *TINY_STUDY]


@dataclass(frozen=True)
class RayCluster:
    address: str
    """The GCS address: child processes join with ``--ray-address``."""
    startup_s: float


@pytest.fixture(scope="session")
def ray_cluster(_isolated_cache: None) -> Iterator[RayCluster]:
    """A local cluster started once, on 127.0.0.1 alone as one forgetscale starts itself (Ray's services are
    unauthenticated); the CLI's drivers join it at that address (``RayExecutor.connect``). Its workers
    inherit this process's isolated cache and offline settings: 2 CPUs, 2 fake GPUs (so tasks are placed
    on GPUs, which torch here ignores), a small object store, no dashboard, no usage report."""
    ray = pytest.importorskip("ray")
    from forgetscale.executors.ray import init_on_loopback

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    t = time.perf_counter()
    with warnings.catch_warnings():  # Ray's own start-up deprecations are not this suite's to fail on
        warnings.simplefilter("ignore")
        ctx = init_on_loopback(num_cpus=2, num_gpus=2, object_store_memory=80 * 2**20)
    cluster = RayCluster(ctx.address_info["gcs_address"], time.perf_counter() - t)
    print(f"\nray {ray.__version__}: local test cluster started in {cluster.startup_s:.1f}s")
    try:
        yield cluster
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ray.shutdown()
