"""The executor seam without a cluster: config, run ids, CLI flags, Ray missing."""

from __future__ import annotations

import argparse
import sys

import pytest

from forgetscale.cli import _executor_sets
from forgetscale.config import load_config
from forgetscale.errors import UserError
from forgetscale.executors import check, make_executor
from forgetscale.executors.local import LocalExecutor
from forgetscale.executors.processes import ProcessExecutor


def test_executor_settings_never_change_run_ids():
    plain = [r.run_id for r in load_config(preset="smoke").runs()]
    on_ray = load_config(preset="smoke", overrides=[
        "executor.kind=ray", "executor.address=auto", "executor.gpus_per_run=1", "executor.cpus_per_run=4",
        "executor.memory_per_run=40", "executor.max_retries=5",
    ])  # fmt: skip
    assert on_ray.executor.kind == "ray" and on_ray.executor.max_retries == 5
    assert [r.run_id for r in on_ray.runs()] == plain


def test_executor_defaults_to_local():
    cfg = load_config(preset="smoke").executor
    assert cfg.kind == "local" and cfg.address is None and cfg.gpus_per_run is None
    assert isinstance(make_executor(cfg), LocalExecutor)


def test_processes_executor_is_made_with_its_workers():
    cfg = load_config(preset="smoke", overrides=["executor.kind=processes", "executor.workers=3"]).executor
    executor = make_executor(cfg)
    assert isinstance(executor, ProcessExecutor) and executor.cfg.workers == 3
    assert load_config(preset="smoke").executor.workers == 2  # the default when processes is chosen
    check(cfg)  # nothing to install


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [(["executor.kind=slurm"], "executor.kind"), (["executor.max_retries=-1"], "executor.max_retries"),
     (["executor.cpus_per_run=0"], "executor.cpus_per_run"), (["executor.gpu=1"], "unknown key 'executor.gpu'"),
     (["executor.kind=processes", "executor.workers=0"], "executor.workers")],
)  # fmt: skip
def test_bad_executor_settings_name_the_key(overrides, needle):
    with pytest.raises(UserError, match=needle):
        load_config(preset="smoke", overrides=overrides)


@pytest.mark.parametrize(
    ("executor", "address", "sets"),
    [
        (None, None, []),
        ("local", None, ["executor.kind=local"]),
        ("ray", None, ["executor.kind=ray"]),
        (None, "auto", ["executor.kind=ray", "executor.address=auto"]),
        ("ray", "10.0.0.5:6379", ["executor.kind=ray", "executor.address=10.0.0.5:6379"]),
    ],
)
def test_cli_flags_become_overrides(executor, address, sets):
    assert _executor_sets(argparse.Namespace(executor=executor, ray_address=address)) == sets
    study = load_config(preset="smoke", overrides=sets)  # the address survives YAML parsing as text
    assert study.executor.address == address


def test_ray_address_with_the_local_executor_is_refused():
    with pytest.raises(UserError, match="--ray-address"):
        _executor_sets(argparse.Namespace(executor="local", ray_address="auto"))


def test_ray_missing_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    cfg = load_config(preset="smoke", overrides=["executor.kind=ray"]).executor
    with pytest.raises(UserError, match=r"pip install 'forgetscale\[ray\]'"):
        check(cfg)
    check(load_config(preset="smoke").executor)  # the local executor does not need it
