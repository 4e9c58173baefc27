"""The local concurrent executor: ``executor.workers`` runs at once, each in a worker process on this machine.

Why processes. A CPU's cores are not used as well by one run on all of them as by several runs
on a share each: a step's small matmuls and its many element-wise kernels do not scale to many
threads, and the Python between them runs on one. So independent runs train faster side by side,
each with ``torch.get_num_threads() // workers`` threads (at least 1) of this process's threads.
Processes, not threads: the interpreter lock and torch's one intra-op thread pool per process
would serialise threads. Worker processes are started with ``spawn`` (a fork of a process that
has run torch can deadlock in OpenMP), and each keeps its loaded inputs from run to run.

How a run travels. Each worker loads the study's prepared inputs from the same cache directory the
study process prepared them in (the base model, its references, the sampled corpus, replay sets),
as a Ray worker does, and runs :func:`forgetscale.executors.events.run_events`, the same code as the
Ray executor: the events (log lines, the run's start, one row per evaluation, the adapter's files)
come back over the worker's own pipe, and this process alone writes them to the store
(:class:`forgetscale.executors.events.Recorder`). One pipe per worker, so a worker killed in the
middle of a message cannot tear another's.

The step-0 evaluation (the base model itself) is measured once per worker, not once per study as
the local executor measures it: each worker has its own workspace.

Failures:

* a run raised: it is recorded failed; no new run starts, the runs already training finish, then
  the error is raised (a bad-input error, :class:`forgetscale.errors.UserError` such as a diverged
  run, as the local executor raises it: one line).
* a worker process died (killed, out of memory): its run goes back to pending without rows and
  the study stops with one line, after the other runs in flight finish; rerunning resumes.
* Ctrl-C (or any error here): the workers are ended (they ignore SIGINT themselves, so that only
  this process decides), the runs in flight go back to pending without rows, so rerunning resumes.
  A worker whose study process vanished (killed outright) ends itself within a second.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import pickle
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from forgetscale.config import ExecutorConfig, RunConfig
from forgetscale.console import Progress
from forgetscale.errors import UserError
from forgetscale.executors.events import Attempt, Recorder, run_events
from forgetscale.store import Store
from forgetscale.workspace import Workspace

log = logging.getLogger(__name__)

_POLL_S = 1.0
"""How long this process waits for any worker's next event before checking the workers again."""
_JOIN_S = 10.0
"""How long a worker asked to stop may take before it is killed."""


def threads_per_worker(workers: int, threads: int) -> int:
    """Each worker's share of ``threads`` (this process's torch threads), at least 1.

    >>> threads_per_worker(2, 2), threads_per_worker(2, 8), threads_per_worker(4, 2)
    (1, 4, 1)
    """
    return max(1, threads // workers)


class ProcessExecutor:
    """Runs ``todo`` on ``min(cfg.workers, len(todo))`` worker processes; see the module docstring.

    With one worker (one run left, or ``workers: 1``) the run trains in this process, as the local
    executor trains it: a worker process would only add its start-up.
    """

    def __init__(self, cfg: ExecutorConfig):
        self.cfg = cfg

    def run(self, todo: Sequence[RunConfig], ws: Workspace, store: Store, out: Path) -> None:
        import torch

        workers = min(self.cfg.workers, len(todo))
        if workers <= 1:
            from forgetscale.executors.local import LocalExecutor

            LocalExecutor().run(todo, ws, store, out)
            return
        threads = threads_per_worker(workers, torch.get_num_threads())
        log.info(f"{len(todo)} runs on {workers} worker processes, {threads} thread(s) each")
        _Pool(ws, store, out, workers, threads).run(todo)


class _Worker:
    """One worker process as this process sees it: its pipe and the attempt it is running."""

    def __init__(self, number: int, proc: Any, conn: Connection):
        self.number, self.proc, self.conn = number, proc, conn
        self.attempt: Attempt | None = None


class _Pool:
    def __init__(self, ws: Workspace, store: Store, out: Path, workers: int, threads: int):
        self.ws, self.store, self.out, self.n_workers, self.threads = ws, store, out, workers, threads
        self.workers: list[_Worker] = []
        self.failure: BaseException | None = None

    def run(self, todo: Sequence[RunConfig]) -> None:
        self.n = len(todo)
        self.recorder = Recorder(self.store, self.out, Progress(sum(r.train.steps for r in todo)), self.n, log)
        waiting = deque(Attempt(r, 0, i) for i, r in enumerate(todo, 1))
        try:
            self._start_workers()
            while True:
                for w in self.workers:
                    if w.attempt is None and waiting and self.failure is None:
                        self._submit(w, waiting.popleft())
                busy = [w for w in self.workers if w.attempt is not None]
                if not busy:
                    break
                for conn in wait([w.conn for w in busy], timeout=_POLL_S):
                    self._receive(next(w for w in busy if w.conn is conn))
        except BaseException:
            self._end_workers(at_once=True)
            for w in self.workers:
                if w.attempt is not None and w.attempt.started is not None:
                    self.store.clear_run(w.attempt.run.run_id, "interrupted; rerun to resume")
            raise
        self._end_workers(at_once=False)
        if self.failure is not None:
            raise self.failure

    def _start_workers(self) -> None:
        ctx = mp.get_context("spawn")  # a fork of a process that has run torch's OpenMP pool can hang
        with _sigint_ignored():  # inherited through exec: a Ctrl-C reaches this process alone
            for i in range(self.n_workers):
                here, there = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, args=(i + 1, str(self.ws.cache), self.threads, there),
                                   name=f"forgetscale-worker-{i + 1}", daemon=True)  # fmt: skip
                proc.start()
                there.close()  # this end belongs to the worker: its exit closes the pipe (EOF here)
                self.workers.append(_Worker(i + 1, proc, here))

    def _submit(self, w: _Worker, a: Attempt) -> None:
        a.submitted = time.perf_counter()
        w.attempt = a
        w.conn.send(a.run.model_dump_json())

    def _receive(self, w: _Worker) -> None:
        a = w.attempt
        assert a is not None
        try:
            event = w.conn.recv()
        except (EOFError, OSError):  # the worker is gone
            w.attempt = None
            self._lost(w, a)
            return
        kind = event[0]
        if kind == "end":
            w.attempt = None
            error = self.recorder.ended(a, "its worker process")
            if error is not None:
                self._stop(error)
        elif kind == "error":
            w.attempt = None
            self._failed(a, event)
        else:
            self.recorder.apply(a, event)

    def _failed(self, a: Attempt, event: tuple[Any, ...]) -> None:
        _, name, message, pickled, trace = event
        self.store.fail_run(a.run.run_id, f"{name}: {message}")
        cause = None
        if pickled is not None:
            with contextlib.suppress(Exception):
                cause = pickle.loads(pickled)
        if isinstance(cause, UserError):  # reported as the local executor reports it: one line, exit 2
            self._stop(cause)
        else:
            self._stop(RuntimeError(f"run {a.run.run_id} failed in its worker process:\n{trace}"))

    def _lost(self, w: _Worker, a: Attempt) -> None:
        w.proc.join(timeout=_JOIN_S)
        code = w.proc.exitcode
        self.recorder.progress.discard(a.last_step)  # those steps will be trained again
        self.store.clear_run(a.run.run_id, f"its worker process died (exit code {code}); rerun to resume")
        why = " (killed: out of memory?)" if code == -signal.SIGKILL else ""
        self._stop(UserError(f"run {a.run.run_id}: its worker process died with exit code {code}{why}; the run "
                             "is left to resume: rerun the same command (with fewer executor.workers if memory "
                             "ran out)"))  # fmt: skip

    def _stop(self, failure: BaseException) -> None:
        """The first failure: no new run starts; runs already training finish, then it is raised."""
        if self.failure is not None:
            return
        self.failure = failure
        busy = sum(w.attempt is not None for w in self.workers)
        log.info(f"a run failed ({str(failure).splitlines()[0]}); no new run starts, {busy} in flight finish first")

    def _end_workers(self, at_once: bool) -> None:
        """Ask every worker to return (between runs), or ``at_once`` end it (SIGTERM, mid-run); kill the late."""
        for w in self.workers:
            if at_once:
                w.proc.terminate()  # the worker exits through Python: its semaphores (tqdm's lock) are released
            else:
                with contextlib.suppress(OSError):
                    w.conn.send(None)
        deadline = time.monotonic() + _JOIN_S
        for w in self.workers:
            w.proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(timeout=_JOIN_S)
            w.conn.close()


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # only the main thread handles signals
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# ----------------------------------------------------------------------------- the worker side


def _worker_main(number: int, cache: str, threads: int, conn: Connection) -> None:
    """A worker process: run each run sent, send back its events, then ``("end",)`` or ``("error", ...)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the study process decides what a Ctrl-C ends
    signal.signal(signal.SIGTERM, _exit_now)
    import torch

    torch.set_num_threads(threads)
    _exit_with_parent()
    ws = Workspace(Path(cache))
    where = {"kind": "processes", "worker": number, "pid": os.getpid(), "threads": threads}
    while (run_json := conn.recv()) is not None:
        run = RunConfig.model_validate_json(run_json)
        try:
            for event in run_events(run, ws, where):
                conn.send(event)
        except SystemExit:  # told to end (SIGTERM): leave now
            raise
        except BaseException as e:  # sent whole when it pickles (a UserError does), and as text in any case
            try:
                pickled: bytes | None = pickle.dumps(e)
            except Exception:
                pickled = None
            conn.send(("error", type(e).__name__, str(e), pickled, traceback.format_exc()))
        else:
            conn.send(("end",))


def _exit_now(signum: int, frame: Any) -> None:
    """SIGTERM from the study process: leave through Python's exit (a plain SIGTERM death skips its clean-up,
    and the semaphores the worker's libraries created would be reported leaked after the study's last line)."""
    raise SystemExit(128 + signum)


def _exit_with_parent() -> None:
    """End this worker within a second of its study process vanishing (killed outright, say)."""
    parent = mp.parent_process()

    def watch() -> None:
        while parent is None or parent.is_alive():
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="forgetscale-parent-watch", daemon=True).start()
