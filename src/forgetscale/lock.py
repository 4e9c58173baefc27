"""One runner per study directory: an advisory lock the operating system releases when its holder dies.

Two ``forgetscale run`` on one directory would both write measurement rows (the
second died on a UNIQUE constraint) or, a moment later, delete the first one's
rows as an "unfinished run". The lock is ``flock`` on ``DIR/run.lock`` (a lock
on the open file, not the file's existence), so ``kill -9`` leaves nothing
stale: the file stays, the lock goes with the process. The file's text names
the holder for the error message. Readers (``fit``, ``predict``, ``report``...)
do not take it: SQLite's WAL mode lets them read while a run writes.
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
        yield
    finally:
        f.close()  # closing the descriptor releases the lock


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
