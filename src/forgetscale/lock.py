"""One runner per study directory: an advisory lock the operating system releases when its holder dies.

Two ``forgetscale run`` on one directory would both write measurement rows (the
second died on a UNIQUE constraint) or, a moment later, delete the first one's
rows as an "unfinished run". The lock is ``flock`` on ``DIR/run.lock`` (a lock
on the open file, not the file's existence), so ``kill -9`` leaves nothing
stale: the file stays, the lock goes with the process. The file's text names
the holder for the error message. Every writer of a study's store takes it
(``run``, ``fit``, ``probe``, a callback's ``store=``: through
:func:`forgetscale.store.open_study_to_write`, which goes on under the hold
``run`` already has when ``run`` fits and probes its own study); readers
(``predict``, ``report``...) do not: SQLite's WAL mode lets them read while a
run writes.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from forgetscale.errors import UserError

LOCK_NAME = "run.lock"

_HELD: set[Path] = set()
"""Study directories this process holds (inside a :func:`hold` block)."""


class StudyBusy(UserError):
    """Another process holds the study directory."""


@contextmanager
def hold(directory: Path) -> Iterator[None]:
    """Hold ``directory``'s run lock for the block; raise :class:`StudyBusy` at once if it is taken.

    Raises:
        StudyBusy: another live process holds it (the message names its pid and start time).
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the whole block
    try:
        if not _try_lock(f):
            raise _busy(directory, path)
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
        f.flush()
        _HELD.add(key := directory.resolve())
        try:
            yield
        finally:
            _HELD.discard(key)
    finally:
        f.close()  # closing the descriptor releases the lock


@contextmanager
def hold_or_share(directory: Path) -> Iterator[None]:
    """Like :func:`hold`, but when this process already holds ``directory`` (``forgetscale run`` fitting and
    probing its own study) the block goes on under that hold instead of being refused.

    Raises:
        StudyBusy: another live process holds it.
    """
    if Path(directory).resolve() in _HELD:
        yield
        return
    with hold(Path(directory)):
        yield


def check_free(directory: Path) -> None:
    """Raise :class:`StudyBusy` now if a live process holds ``directory``; writes nothing.

    A second runner on a busy study learns it before it loads anything (and so
    prints nothing else); the lock is still taken with :func:`hold` afterwards.
    """
    path = directory / LOCK_NAME
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as f:
        if not _try_lock(f):
            raise _busy(directory, path)
        # closing the descriptor releases the probe's lock at once


def _try_lock(f: IO[str]) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _busy(directory: Path, path: Path) -> StudyBusy:
    return StudyBusy(f"{directory} is in use by another forgetscale run ({_holder(path)}); "
                     "wait for it to finish or stop it, then rerun to resume")


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"pid {int(info['pid'])} on {info.get('host', '?')}, since {since}"
    except (OSError, ValueError, KeyError, TypeError):  # the holder has not written its name yet
        return "pid unknown"
