"""The default executor: one run after another, in this process, sharing its loaded inputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from forgetscale.config import RunConfig
from forgetscale.console import Progress, run_label
from forgetscale.run import execute_run
from forgetscale.store import Store
from forgetscale.workspace import Workspace


class LocalExecutor:
    """Runs ``todo`` in order in this process; the first failure stops the study (it is recorded)."""

    def run(self, todo: Sequence[RunConfig], ws: Workspace, store: Store, out: Path) -> None:
        progress = Progress(sum(r.train.steps for r in todo))
        for i, r in enumerate(todo, 1):
            progress.label = f"run {i}/{len(todo)} {r.run_id} {run_label(r)}"
            try:
                execute_run(r, ws, store, out / "adapters" / r.run_id, progress)
            except KeyboardInterrupt:  # a Ctrl-C is not the run's failure: back to pending, as the other executors do
                if store.run_status(r.run_id) != "done":  # it may land after the run finished (while detaching)
                    store.clear_run(r.run_id, "interrupted; rerun to resume")
                raise
