"""A run as a stream of events, for executors whose runs train in another process (Ray tasks, local workers).

Worker side: :func:`run_events` runs :func:`forgetscale.run.execute_run`, the same code as the local
executor, with a stand-in for the store (:class:`RunEvents`, a :class:`forgetscale.run.RunSink`) that
turns each call into an event, and yields the events as they happen:

* ``("log", line)``: a ``forgetscale`` log line of the run (the base reference's, say);
* ``("start", P, provenance)``: the run started, with its trainable parameters and provenance;
* ``("row", row)``: one measurement row per scheduled evaluation;
* ``("done", timings, files)``: last, the timings with the adapter's files (relative path -> bytes).

Study side: :class:`Recorder` applies each event to the study's store, its adapter directory and its
progress line, in order, in the one process that writes the store. A run counts as done only once
its adapter is written (:meth:`Recorder.ended`).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgetscale.config import RunConfig
from forgetscale.console import Progress, run_label
from forgetscale.fsutil import atomic_write, publish_dir
from forgetscale.run import execute_run
from forgetscale.store import Store
from forgetscale.workspace import Workspace

_END = object()


class RunEvents:
    """Stands in for the store inside a worker (a :class:`forgetscale.run.RunSink`): each call becomes an event.

    Args:
        put: where the events go.
        where: what the provenance records of the worker (``provenance["executor"]``).
    """

    def __init__(self, put: Any, where: dict[str, Any]):
        self._put, self._where = put, where
        self.timings: dict[str, float] | None = None

    def start_run(self, run_id: str, P: int, provenance: Mapping[str, Any]) -> None:
        self._put(("start", P, {**provenance, "executor": self._where}))

    def add_measurement(self, run_id: str, row: Mapping[str, Any]) -> None:
        self._put(("row", dict(row)))

    def finish_run(self, run_id: str, timings: Mapping[str, float]) -> None:
        self.timings = dict(timings)  # sent with the adapter, which is saved after this call

    def fail_run(self, run_id: str, error: str) -> None:
        pass  # the study process records the failure from the exception that ends the stream


def run_events(run: RunConfig, ws: Workspace, where: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
    """One run in this (worker) process, as a stream of events (see the module docstring).

    Training runs in a thread so that its callbacks' events can be yielded while it goes on; the
    run's exception, if any, is raised by the generator after the events before it.
    """
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()
    sink = RunEvents(events.put, where)
    with tempfile.TemporaryDirectory(prefix="forgetscale-adapter-") as tmp:
        adapter = Path(tmp) / run.run_id

        def work() -> None:
            try:
                execute_run(run, ws, sink, adapter)  # the study process logs the progress lines
                events.put(("done", sink.timings, read_files(adapter)))
            except BaseException as e:  # re-raised by the generator
                events.put(e)
            events.put(_END)

        thread = threading.Thread(target=work, name=f"forgetscale-{run.run_id}", daemon=True)
        with forwarded_logs(events.put):
            thread.start()
            while (item := events.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
            thread.join()


class _ToStudy(logging.Handler):
    """Sends the run's ``forgetscale`` log lines to the study process as events (it logs them)."""

    def __init__(self, put: Any):
        super().__init__(logging.INFO)
        self.put = put

    def emit(self, record: logging.LogRecord) -> None:
        self.put(("log", record.getMessage()))


@contextlib.contextmanager
def forwarded_logs(put: Any) -> Iterator[None]:
    """While inside, this process's ``forgetscale`` log lines become ``("log", line)`` events."""
    root = logging.getLogger("forgetscale")
    handler, level, propagate = _ToStudy(put), root.level, root.propagate
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False  # not into the worker's own log output as well
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        root.propagate = propagate


def read_files(directory: Path) -> dict[str, bytes]:
    """Every finished file under ``directory`` (relative POSIX path -> bytes); temporary files skipped."""
    if not directory.is_dir():
        return {}
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def seed_files(directory: Path, files: dict[str, bytes]) -> None:
    """Write the files this machine's cache lacks (each atomically; present ones are left alone)."""
    for name, data in files.items():
        path = directory / name
        if not path.exists():
            atomic_write(path, data)


def write_adapter(files: dict[str, bytes], out: Path) -> None:
    """Write an adapter shipped from a worker, atomically: a half-written one never has the final name."""

    def fill(tmp: Path) -> None:
        for name, data in files.items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    publish_dir(out, fill)


# ----------------------------------------------------------------------------- the study side


@dataclass
class Attempt:
    """One submission of one run, as the study process tracks it."""

    run: RunConfig
    number: int  # 0 for the first attempt
    index: int  # the run's place in "run i/n"
    label: str = ""
    submitted: float = 0.0
    started: float | None = None  # when its start event arrived
    last_step: int = 0
    n_rows: int = 0
    timings: dict[str, float] | None = None  # set by the done event, once the adapter is written

    def name(self, n: int) -> str:
        """The run as the progress lines name it."""
        return self.label or f"run {self.index}/{n} {self.run.run_id}"


class Recorder:
    """Applies runs' events to the study's store, adapters and progress: the study process's half.

    Args:
        store: the study's store (only this process writes it).
        out: the study directory (adapters go to ``out/adapters/<run_id>/``).
        progress: one progress line for all runs, interleaved or not.
        n: how many runs the study has to train (for "run i/n").
    """

    def __init__(self, store: Store, out: Path, progress: Progress, n: int, log: logging.Logger):
        self.store, self.out, self.progress, self.n, self.log = store, out, progress, n, log

    def apply(self, a: Attempt, event: tuple[Any, ...]) -> None:
        """Record one event of attempt ``a``.

        Raises:
            RuntimeError: an event this protocol does not have (a bug).
        """
        rid, kind = a.run.run_id, event[0]
        if kind == "log":
            self.log.info(f"[{a.name(self.n)}] {event[1]}")
        elif kind == "start":
            _, P, provenance = event
            provenance["executor"] = {**provenance.get("executor", {}), "attempt": a.number + 1}
            self.store.start_run(rid, P, provenance)  # also drops rows an earlier attempt left behind
            a.started = time.perf_counter()
            r = a.run
            a.label = f"run {a.index}/{self.n} {rid} {run_label(r)}" + (
                f" retry {a.number}" if a.number else ""
            )
        elif kind == "row":
            row = event[1]
            self.store.add_measurement(rid, row)
            a.n_rows += 1
            self.progress.switch(a.label, a.last_step)  # one progress for interleaved runs: each run's own step
            self.progress.step(row["step"], a.run.train.steps, row)
            a.last_step = row["step"]
        elif kind == "done":
            _, timings, files = event
            write_adapter(files, self.out / "adapters" / rid)
            a.timings = timings
        else:
            raise RuntimeError(f"unknown event {kind!r} from run {rid}")

    def ended(self, a: Attempt, how: str) -> BaseException | None:
        """The stream of ``a`` ended without an error: the run is done, or (no adapter came) a bug, returned.

        Args:
            how: what ran it, for the error (``the Ray task``, ``its worker process``).
        """
        if a.timings is None:  # a worker that returns without the adapter is a bug here
            self.store.fail_run(a.run.run_id, f"RuntimeError: {how} ended without its adapter")
            return RuntimeError(f"run {a.run.run_id}: {how} ended without its adapter")
        self.store.finish_run(a.run.run_id, a.timings)
        return None
