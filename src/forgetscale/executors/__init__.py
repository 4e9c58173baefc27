"""Where a study's runs execute: in this process (``local``, the default), in local worker processes
several at once (``processes``), or as Ray tasks (``ray``).

The seam is one method, :meth:`Executor.run`. Whatever the executor, the process
that called :func:`forgetscale.study.run_study` holds the study's run lock and
is the only writer of its store: a run's rows, its status and its adapter all
arrive there, and a run counts as done only once its adapter is in
``DIR/adapters/<run_id>/``. Progress goes to the ``forgetscale`` loggers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from forgetscale.config import ExecutorConfig, RunConfig
from forgetscale.errors import UserError

if TYPE_CHECKING:  # the executors import torch; this seam does not
    from forgetscale.store import Store
    from forgetscale.workspace import Workspace


class Executor(Protocol):
    """Runs a study's unfinished runs, recording them through the caller's store."""

    def run(self, todo: Sequence[RunConfig], ws: Workspace, store: Store, out: Path) -> None:
        """Execute every run of ``todo`` from step 0.

        Args:
            todo: the runs not yet done (registered in ``store``), in study order.
            ws: the caller's workspace, already prepared for every run.
            store: the study's store; only this process writes it.
            out: the study directory (adapters go to ``out/adapters/<run_id>/``).

        Raises:
            UserError: a run failed for a bad-input reason (recorded as failed in the store).
            KeyboardInterrupt: interrupted; the store is left resumable.
        """
        ...


def check(cfg: ExecutorConfig) -> None:
    """Fail early, before anything is loaded or written, when ``cfg`` cannot work here.

    Raises:
        UserError: the Ray executor without Ray installed.
    """
    if cfg.kind == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UserError(
                "executor.kind=ray needs Ray, which is not installed: pip install 'forgetscale[ray]'"
            ) from None


def make_executor(cfg: ExecutorConfig) -> Executor:
    """The executor ``cfg`` names, ready to run (Ray, and torch with it, imported only when asked for).

    Raises:
        UserError: Ray asked for but not installed, or its cluster out of reach.
    """
    check(cfg)
    if cfg.kind == "ray":
        from forgetscale.executors.ray import RayExecutor

        ray_executor = RayExecutor(cfg)
        ray_executor.connect()
        return ray_executor
    if cfg.kind == "processes":
        from forgetscale.executors.processes import ProcessExecutor

        return ProcessExecutor(cfg)
    from forgetscale.executors.local import LocalExecutor

    return LocalExecutor()
