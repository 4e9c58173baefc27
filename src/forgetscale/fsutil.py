"""Files that readers never see half-written: one atomic file write, one atomic directory publish.

A reader (another process, a resumed study, a browser on ``report.html``) sees either the old
content or the new, never a mixture: everything is written under a temporary name in the same
folder and renamed into place, which POSIX and Windows both do atomically within one file system.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from forgetscale.errors import UserError


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary sibling and an atomic rename.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> atomic_write(d / "a" / "x.txt", "hello")
    >>> (d / "a" / "x.txt").read_text(), sorted(p.name for p in (d / "a").iterdir())
    ('hello', ['x.txt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish_dir(out: Path, fill: Callable[[Path], Any], *, replace: bool = True) -> None:
    """Have ``fill`` write a directory's files, then give the directory the name ``out``.

    ``fill`` writes into a temporary sibling that is renamed only once complete, so a killed
    process never leaves a half-written directory under the final name.

    Args:
        out: the final directory.
        fill: writes the files into the (existing, empty) directory it is given.
        replace: an existing ``out`` is replaced (an adapter trained again); False keeps it and
            discards the new one (a cache entry another process finished first: theirs is as good).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".tmp-"))
    try:
        fill(tmp)
        if out.exists():
            if not replace:
                shutil.rmtree(tmp, ignore_errors=True)
                return
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def jsonl_records(lines: Iterable[str], source: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for each non-blank line of a JSON-lines text, in order.

    Raises:
        UserError: ``source:LINE: not valid JSON (why)`` for the first line that does not parse.
    """
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{source}:{lineno}: not valid JSON ({e.msg})") from None
        yield lineno, value
