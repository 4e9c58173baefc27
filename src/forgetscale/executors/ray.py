"""The Ray executor: every unfinished run a Ray Core task (one GPU each), the store written here alone.

How a run travels. The driver (this process, holding the study's run lock)
submits one task per run: a *streaming generator* task (``num_returns="streaming"``)
that yields the run's events as they happen (:func:`forgetscale.executors.events.run_events`:
the base reference's log line, the run's start with its P and provenance, one
measurement row per scheduled evaluation, and last the timings with the adapter's
files), and the driver applies them to the store in order
(:class:`forgetscale.executors.events.Recorder`). So rows reach SQLite as each evaluation
finishes, progress lines and resume behave as with the local executor, and
the adapter travels through Ray's object store: no shared filesystem is needed,
the driver writes ``DIR/adapters/<run_id>/``. A run is marked done only when
its task has ended and its adapter is written.

A generator task, rather than a queue actor beside plain tasks, ties each
event to the attempt that produced it: when a worker dies, its stream ends
with the error, so no late row of a lost attempt can reach the store.

Failures:

* a worker lost (killed process, out of memory, node gone): the run's partial
  rows are deleted and the run is submitted again, up to ``executor.max_retries``
  times. Ray's own task retries are off (``max_retries=0``): a retried stream
  would replay rows from a training run that is not bit-for-bit repeatable.
* the task raised: a bad-input error (:class:`forgetscale.errors.UserError`, e.g.
  a diverged run) is recorded and reported as the local executor reports it,
  never retried; anything else is a bug, recorded and raised. Either way, no
  new run starts and the runs already training finish first.
* Ctrl-C (or any error in the driver): every task is cancelled and the runs in
  flight go back to pending without rows, so rerunning the command resumes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from forgetscale.config import ExecutorConfig, RunConfig
from forgetscale.console import Progress, hms
from forgetscale.errors import UserError
from forgetscale.executors.events import Attempt as _Attempt
from forgetscale.executors.events import Recorder, read_files, run_events, seed_files
from forgetscale.executors.events import RunEvents as _Events  # noqa: F401  (the tests wrap its methods)
from forgetscale.models import cache_dir
from forgetscale.store import Store
from forgetscale.workspace import Workspace

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
"""The only address a cluster forgetscale starts for itself listens on: Ray's services are
unauthenticated (its jobs API was exploited in the wild as ShadowRay, CVE-2023-48022)."""

_POLL_S = 1.0
"""How long the driver waits for any task's next event before checking again (Ctrl-C is seen then)."""
_GET_TIMEOUT_S = 300.0
"""An event is fetched only once Ray reports it ready; this bounds the transfer (an adapter's bytes)."""


class RayExecutor:
    """Runs each unfinished run as a Ray task; see the module docstring."""

    def __init__(self, cfg: ExecutorConfig):
        self.cfg = cfg
        self._started_here = False

    def connect(self) -> None:
        """Join ``executor.address`` (or this process's Ray session), or start a local cluster on loopback only.

        Raises:
            UserError: the cluster cannot be reached.
        """
        import ray

        if ray.is_initialized():
            log.info(f"ray {ray.__version__}: using this process's Ray session")
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine unasked
        t = time.perf_counter()
        try:
            if self.cfg.address and on_loopback(self.cfg.address):  # a cluster on 127.0.0.1 alone (ours, a test's)
                with _single_machine():
                    ray.init(address=self.cfg.address, _node_ip_address=LOOPBACK, log_to_driver=False,
                             logging_level="WARNING")  # fmt: skip
            elif self.cfg.address:
                ray.init(address=self.cfg.address, log_to_driver=False, logging_level="WARNING")
            else:
                init_on_loopback()
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"executor.address={self.cfg.address}" if self.cfg.address else "a local Ray cluster"
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{where}: cannot start or join Ray ({first}); start one with `ray start --head`"
                            " and pass --ray-address auto, or leave the address out") from None  # fmt: skip
        self._started_here = True
        how = f"joined {self.cfg.address}" if self.cfg.address else f"started a local cluster on {LOOPBACK}"
        res = _resources(ray.cluster_resources())
        log.info(f"ray {ray.__version__}: {how} in {time.perf_counter() - t:.1f}s; {res}")

    def run(self, todo: Sequence[RunConfig], ws: Workspace, store: Store, out: Path) -> None:
        import ray

        try:
            if todo:
                if not ray.is_initialized():
                    self.connect()
                _Driver(self.cfg, ws, store, out).run(todo)
        finally:  # a cluster started (or joined) for this study is not kept through probes and fit
            if self._started_here:
                ray.shutdown()
                self._started_here = False


def _resources(res: dict[str, float]) -> str:
    gib = 2**30
    return (f"{res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs, {res.get('memory', 0) / gib:.1f} GiB memory, "
            f"{sum(1 for k in res if k.startswith('node:') and not k.startswith('node:__'))} node(s)")  # fmt: skip


class _Driver:
    def __init__(self, cfg: ExecutorConfig, ws: Workspace, store: Store, out: Path):
        self.cfg, self.ws, self.store, self.out = cfg, ws, store, out

    def run(self, todo: Sequence[RunConfig]) -> None:
        import ray

        cfg = self.cfg
        gpus = cfg.gpus_per_run
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        options: dict[str, Any] = {"num_cpus": cfg.cpus_per_run, "num_gpus": gpus}
        if cfg.memory_per_run is not None:
            options["memory"] = int(cfg.memory_per_run * 2**30)
        # max_retries=0: lost workers are retried by this loop, after their partial rows are deleted
        self.options = {"num_returns": "streaming", "max_retries": 0, **options}
        self.task = ray.remote(_run_task)
        self.corpora = ray.put(read_files(self.ws.cache / "corpora"))  # small; the same sample on every node
        self.progress = Progress(sum(r.train.steps for r in todo))
        self.n = len(todo)
        self.recorder = Recorder(self.store, self.out, self.progress, self.n, log)
        log.info(f"{self.n} runs as Ray tasks, each with {cfg.cpus_per_run:g} CPU and {gpus:g} GPU"
                 + (f" and {cfg.memory_per_run:g} GiB" if cfg.memory_per_run else ""))  # fmt: skip
        self.pending: dict[Any, _Attempt] = {}
        self.lost_seconds = 0.0  # run time lost attempts had trained for
        self.restart_seconds = 0.0  # from a loss to the retry's start
        self.n_lost = 0
        self.failure: BaseException | None = None
        t0 = time.perf_counter()
        try:
            for i, r in enumerate(todo, 1):
                self._submit(_Attempt(r, 0, i))
            while self.pending:
                ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=_POLL_S)
                for gen in ready:
                    self._next_event(gen)
        except BaseException:
            self._cancel_all()
            raise
        if self.n_lost:
            total = hms(time.perf_counter() - t0)
            log.info(f"{self.n_lost} lost worker(s) cost {self.lost_seconds:.1f}s of run time and "
                     f"{self.restart_seconds:.1f}s to restart, of {total} on Ray in all")  # fmt: skip
        if self.failure is not None:
            raise self.failure

    def _submit(self, a: _Attempt) -> None:
        rid = a.run.run_id
        name = f"forgetscale-{rid}" + (f"-retry{a.number}" if a.number else "")
        a.submitted = time.perf_counter()
        gen = self.task.options(name=name, **self.options).remote(a.run.model_dump_json(), self.corpora)
        self.pending[gen] = a

    def _next_event(self, gen: Any) -> None:
        import ray

        a = self.pending[gen]
        try:
            ref = next(gen)
        except StopIteration:  # the task has ended
            del self.pending[gen]
            self._ended(a)
            return
        try:
            event = ray.get(ref, timeout=_GET_TIMEOUT_S)
        except ray.exceptions.TaskCancelledError:
            del self.pending[gen]
        except ray.exceptions.RayTaskError as e:  # the run's own code raised
            del self.pending[gen]
            self._failed(a, e)
        except ray.exceptions.RayError as e:  # the worker, its node or the event's object is gone
            del self.pending[gen]
            self._lost(a, e)
        else:
            self._apply(a, event)

    def _apply(self, a: _Attempt, event: tuple[Any, ...]) -> None:
        if event[0] == "start" and a.number:  # a retry: a fresh worker was found, started and loaded the inputs
            self.restart_seconds += time.perf_counter() - a.submitted
        self.recorder.apply(a, event)

    def _ended(self, a: _Attempt) -> None:
        error = self.recorder.ended(a, "the Ray task")
        if error is not None:
            self._stop(error)

    def _failed(self, a: _Attempt, e: Exception) -> None:
        cause = getattr(e, "cause", None)
        cause = cause if isinstance(cause, BaseException) else None
        message = f"{type(cause).__name__}: {cause}" if cause is not None else str(e)
        self.store.fail_run(a.run.run_id, message)
        if isinstance(cause, UserError):  # reported as the local executor reports it: one line, exit 2
            self._stop(cause)
        else:
            self._stop(RuntimeError(f"run {a.run.run_id} failed on its Ray worker:\n{e}"))

    def _lost(self, a: _Attempt, e: Exception) -> None:
        rid = a.run.run_id
        self.n_lost += 1
        if a.started is not None:
            self.lost_seconds += time.perf_counter() - a.started
        self.progress.discard(a.last_step)  # those steps will be trained again
        what = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        label = a.label or f"run {a.index}/{self.n} {rid}"
        if a.number < self.cfg.max_retries and self.failure is None:
            self.store.clear_run(rid, f"attempt {a.number + 1} lost its worker ({what}); retried")
            log.info(f"[{label}] worker lost ({what}); {a.n_rows} partial rows deleted; "
                     f"starting the run again (retry {a.number + 1} of {self.cfg.max_retries})")  # fmt: skip
            self._submit(_Attempt(a.run, a.number + 1, a.index))
        elif self.failure is not None:  # stopping anyway: leave it resumable
            self.store.clear_run(rid, f"attempt {a.number + 1} lost its worker ({what})")
        else:
            self.store.fail_run(rid, f"worker lost {a.number + 1} times (last: {what})")
            self._stop(RuntimeError(f"run {rid}: its worker was lost {a.number + 1} times (last: {what}); "
                                    "see the Ray logs, then rerun to resume"))  # fmt: skip

    def _stop(self, failure: BaseException) -> None:
        """The first failure: no new run starts; runs already training finish, then it is raised."""
        import ray

        if self.failure is not None:
            return
        self.failure = failure
        waiting = [gen for gen, a in self.pending.items() if a.started is None]
        for gen in waiting:
            ray.cancel(gen, force=True)
            del self.pending[gen]
        log.info(f"a run failed ({str(failure).splitlines()[0]}); {len(waiting)} runs not started are cancelled, "
                 f"{len(self.pending)} in flight finish first")  # fmt: skip

    def _cancel_all(self) -> None:
        import ray

        for gen, a in list(self.pending.items()):
            with contextlib.suppress(Exception):  # already finished, or its worker already gone
                ray.cancel(gen, force=True)
            if a.started is not None:
                self.store.clear_run(a.run.run_id, "interrupted; rerun to resume")
        self.pending.clear()


# ----------------------------------------------------------------------------- the worker side

_WS: Workspace | None = None
"""The worker process's workspace: a worker Ray reuses for another run keeps its loaded inputs."""


def _run_task(run_json: str, corpora: dict[str, bytes]) -> Iterator[tuple[Any, ...]]:
    """One run on a Ray worker, as a stream of events (:func:`forgetscale.executors.events.run_events`)."""
    import ray

    global _WS
    run = RunConfig.model_validate_json(run_json)
    if _WS is None:
        _WS = Workspace(cache_dir())
    seed_files(_WS.cache / "corpora", corpora)
    ctx = ray.get_runtime_context()
    where = {"kind": "ray", "host": socket.gethostname(), "node_id": ctx.get_node_id(), "gpu_ids": ray.get_gpu_ids()}
    yield from run_events(run, _WS, where)


def init_on_loopback(**options: Any) -> Any:
    """Start a one-machine Ray cluster whose services listen on 127.0.0.1 alone; return ``ray.init``'s context.

    ``_node_ip_address`` is the address every Ray service binds to, but Ray maps a loopback value
    back to the machine's network address unless it believes no multi-node cluster is possible
    (its own default on macOS and Windows): that belief is held for the duration of the start
    (:func:`_single_machine`). A driver joins such a cluster at ``127.0.0.1:PORT`` the same way
    (:meth:`RayExecutor.connect`).

    Args:
        options: further ``ray.init`` arguments (``num_cpus``, ``object_store_memory``, ...); the
            addresses and the dashboard are this function's.
    """
    import ray

    with _single_machine():
        return ray.init(**{"log_to_driver": False, "logging_level": "WARNING", **options},
                        _node_ip_address=LOOPBACK, include_dashboard=False, dashboard_host=LOOPBACK)  # fmt: skip


def on_loopback(address: str) -> bool:
    """Whether a ``HOST:PORT`` Ray address names this machine's loopback interface.

    >>> on_loopback("127.0.0.1:6379"), on_loopback("localhost:6379"), on_loopback("10.0.0.5:6379"), on_loopback("auto")
    (True, True, False, False)
    """
    return address.rpartition(":")[0].strip("[]") in ("127.0.0.1", "localhost", "::1")


@contextlib.contextmanager
def _single_machine() -> Iterator[None]:
    """Ray believes no multi-node cluster is possible, so it keeps loopback addresses as they are."""
    from ray._private import ray_constants

    enabled = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = enabled
