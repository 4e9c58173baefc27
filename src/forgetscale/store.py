"""The study store: one SQLite file per study directory.

Rows are committed as soon as they are measured, so a killed study loses at
most the run in progress. A run that did not finish is measured again from
step 0 when the study resumes (its partial rows are replaced in the same
transaction that marks it running), which keeps every run's rows from a single
uninterrupted attempt.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from forgetscale.errors import UserError
from forgetscale.lock import hold_or_share
from forgetscale.schema import MEASUREMENT_COLUMNS, SUMMARY_METRICS

SCHEMA_VERSION = 1

_METRIC_SQL = ",\n    ".join(
    f"{c} {'INTEGER' if c in ('n_eval_tokens', 'metric_version') else 'REAL'}"
    for c in MEASUREMENT_COLUMNS
    if c not in ("step", "tokens")
)
"""Both measurement tables' metric columns, from the row's one list (``schema.MEASUREMENT_COLUMNS``)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    dataset TEXT NOT NULL,
    rank INTEGER NOT NULL,
    method TEXT NOT NULL DEFAULT 'lora',
    P INTEGER,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    error TEXT,
    started_at REAL,
    finished_at REAL,
    timings TEXT,
    provenance TEXT
);
CREATE TABLE IF NOT EXISTS measurements (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    step INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    {metrics},
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS scaled_measurements (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    step INTEGER NOT NULL,
    method TEXT NOT NULL DEFAULT 'rescale',
    strength REAL NOT NULL,
    n_intruders INTEGER,
    tokens INTEGER NOT NULL,
    {metrics},
    PRIMARY KEY (run_id, step, method, strength)
);
CREATE TABLE IF NOT EXISTS fits (
    dataset TEXT NOT NULL,
    law TEXT NOT NULL,
    result TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (dataset, law)
);
CREATE TABLE IF NOT EXISTS probes (
    run_id TEXT NOT NULL,
    probe TEXT NOT NULL,
    summary TEXT NOT NULL,
    items TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, probe)
);
CREATE TABLE IF NOT EXISTS sequence_kl (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    step INTEGER NOT NULL,
    kl TEXT NOT NULL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS corpus_texts (
    corpus TEXT PRIMARY KEY,
    texts TEXT NOT NULL
);
""".replace("{metrics}", _METRIC_SQL)
# sequence_kl.kl: a measurement's mean KL per token of each corpus sequence, in corpus order (JSON list);
# corpus_texts: the corpus' sequences as text (JSON list), keyed by the runs' provenance corpus_fingerprint;
# scaled_measurements.strength: the post-hoc method's strength, rescale's factor on the adapter's update or
# intruder reduction's lambda (0 removes the intruder dimensions), with the method in `method`

_SUMMARY_COLUMNS = (*((name, "REAL") for name in SUMMARY_METRICS), ("eval_loss", "REAL"),
                    ("metric_version", "INTEGER"))  # fmt: skip
_ADDED_COLUMNS = {
    "runs": (("method", "TEXT NOT NULL DEFAULT 'lora'"),),  # runs stored before the method axis were LoRA's
    "measurements": (("forget_ce_se", "REAL"), ("forget_kl_se", "REAL"), ("ft_loss_se", "REAL"), *_SUMMARY_COLUMNS),
    "scaled_measurements": (("ft_loss_se", "REAL"), ("n_intruders", "INTEGER"), *_SUMMARY_COLUMNS),
}
"""Columns added to schema version 1 after stores were written: added on open (NULL in old rows)."""


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a store written by an earlier forgetscale to the current schema, in place (old rows kept)."""
    have = {r[1] for r in conn.execute("PRAGMA table_info(scaled_measurements)")}
    if "method" not in have:
        # a store from before post-hoc methods other than rescale: its rows are rescale's, and the
        # primary key gains the method, which SQLite cannot alter in place: copy into the new table
        old = [c for c in ("run_id", "scale", *MEASUREMENT_COLUMNS) if c in have]
        new = ", ".join("strength" if c == "scale" else c for c in old)
        with conn:
            conn.execute("ALTER TABLE scaled_measurements RENAME TO scaled_measurements_v0")
            conn.executescript(_SCHEMA)
            conn.execute(f"INSERT INTO scaled_measurements ({new}) SELECT {', '.join(old)} FROM scaled_measurements_v0")
            conn.execute("DROP TABLE scaled_measurements_v0")
    elif "scale" in have:  # the strength column's earlier name (it holds intruder reduction's lambda too)
        with conn:
            conn.execute("ALTER TABLE scaled_measurements RENAME COLUMN scale TO strength")
    for table, columns in _ADDED_COLUMNS.items():
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        with conn:
            for name, kind in columns:
                if name not in have:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


class Store:
    """A study's SQLite store. Open with :func:`open_store`; one writer at a time."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn = conn
        self.path = path

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self.conn:  # commits on success, rolls back on any exception
            yield self.conn

    # ------------------------------------------------------------------ runs
    def run_status(self, run_id: str) -> str | None:
        row = self.conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else row[0]

    def register_run(self, run_id: str, config: Mapping[str, Any], dataset: str, rank: int,
                     method: str = "lora") -> None:
        """Record a planned run (idempotent; a finished run is left as it is). ``rank``: the method's size
        (:attr:`forgetscale.config.RunConfig.size`: LoRA's rank, 0 where there is none); ``method``: its
        label (:attr:`forgetscale.config.RunConfig.method_label`). A run is keyed by method and P."""
        with self._tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO runs (run_id, config, dataset, rank, method, status) "
                "VALUES (?, ?, ?, ?, ?, 'pending')",
                (run_id, json.dumps(config, sort_keys=True), dataset, rank, method),
            )

    def start_run(self, run_id: str, P: int, provenance: Mapping[str, Any]) -> None:
        """Mark a run running and drop rows a previous, interrupted attempt left behind."""
        with self._tx() as c:
            c.execute("DELETE FROM measurements WHERE run_id = ?", (run_id,))
            c.execute("DELETE FROM scaled_measurements WHERE run_id = ?", (run_id,))
            c.execute("DELETE FROM sequence_kl WHERE run_id = ?", (run_id,))
            texts = provenance.get("corpus_texts")  # kept once per corpus, not in every run's provenance
            if texts is not None:
                provenance = {k: v for k, v in provenance.items() if k != "corpus_texts"}
                c.execute("INSERT OR IGNORE INTO corpus_texts (corpus, texts) VALUES (?, ?)",
                          (str(provenance.get("corpus_fingerprint")), json.dumps(list(texts))))  # fmt: skip
            c.execute(
                "UPDATE runs SET status='running', P=?, error=NULL, started_at=?, finished_at=NULL,"
                " provenance=? WHERE run_id=?",
                (P, time.time(), json.dumps(provenance, sort_keys=True), run_id),
            )

    def clear_run(self, run_id: str, error: str | None = None) -> None:
        """Back to pending with no rows: an attempt that will not finish (a lost worker, a cancel)."""
        with self._tx() as c:
            c.execute("DELETE FROM measurements WHERE run_id = ?", (run_id,))
            c.execute("DELETE FROM scaled_measurements WHERE run_id = ?", (run_id,))
            c.execute("DELETE FROM sequence_kl WHERE run_id = ?", (run_id,))
            c.execute(
                "UPDATE runs SET status='pending', error=?, finished_at=NULL WHERE run_id=?", (error, run_id)
            )

    def add_measurement(self, run_id: str, row: Mapping[str, Any]) -> None:
        """One row; a post-hoc row (with a ``method``: the final adapter changed after training, at
        ``strength``) goes to ``scaled_measurements``, so that the laws, which read ``measurements``, never
        see it."""
        table, columns = "measurements", MEASUREMENT_COLUMNS
        if row.get("method") is not None:
            table, columns = "scaled_measurements", ("method", "strength", "n_intruders", *MEASUREMENT_COLUMNS)
        cols = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        with self._tx() as c:
            c.execute(
                f"INSERT INTO {table} (run_id, {cols}) VALUES (?, {marks})",
                (run_id, *(row.get(k) for k in columns)),
            )
            if row.get("seq_kl") is not None and table == "measurements":
                c.execute("INSERT OR REPLACE INTO sequence_kl (run_id, step, kl) VALUES (?, ?, ?)",
                          (run_id, row["step"], json.dumps(list(row["seq_kl"]))))  # fmt: skip

    def finish_run(self, run_id: str, timings: Mapping[str, float]) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET status='done', finished_at=?, timings=? WHERE run_id=?",
                (time.time(), json.dumps(timings), run_id),
            )

    def fail_run(self, run_id: str, error: str) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET status='failed', finished_at=?, error=? WHERE run_id=?",
                (time.time(), error, run_id),
            )

    def runs(self) -> list[dict[str, Any]]:
        cur = self.conn.execute("SELECT * FROM runs ORDER BY rowid")
        out = []
        for row in cur.fetchall():
            d = dict(row)
            for k in ("config", "timings", "provenance"):
                d[k] = self._loads(d[k], f"run {d['run_id']} {k}") if d[k] else None
            out.append(d)
        return out

    def measurements(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Measurement rows joined with their run's dataset, rank, method and P (the laws' input)."""
        sql = (
            "SELECT m.*, r.dataset, r.rank, r.method, r.P FROM measurements m JOIN runs r USING (run_id)"
            + (" WHERE m.run_id = ?" if run_id else "")
            + " ORDER BY r.rowid, m.step"
        )
        return [dict(r) for r in self.conn.execute(sql, (run_id,) if run_id else ())]

    def scaled_measurements(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Post-hoc rows (``method`` at ``strength``: the final adapter changed after training), joined like
        :meth:`measurements`."""
        sql = (
            "SELECT m.*, r.dataset, r.rank, r.P FROM scaled_measurements m JOIN runs r USING (run_id)"
            + (" WHERE m.run_id = ?" if run_id else "")
            + " ORDER BY r.rowid, m.step, m.method, m.strength"
        )
        return [dict(r) for r in self.conn.execute(sql, (run_id,) if run_id else ())]

    def sequence_kl(self, run_id: str) -> dict[int, list[float]]:
        """``{step: mean KL per token of each corpus sequence}`` of a run's measurements."""
        rows = self.conn.execute("SELECT step, kl FROM sequence_kl WHERE run_id = ? ORDER BY step", (run_id,))
        return {s: self._loads(k, f"sequence KL of {run_id} at step {s}") for s, k in rows}

    def corpus_texts(self, corpus: str) -> list[str] | None:
        """The texts of a corpus' sequences (by its fingerprint), or None when none were stored."""
        row = self.conn.execute("SELECT texts FROM corpus_texts WHERE corpus = ?", (corpus,)).fetchone()
        return None if row is None else self._loads(row[0], f"texts of corpus {corpus}")

    # ------------------------------------------------------------------ meta, fits, probes
    def set_meta(self, key: str, value: Any) -> None:
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else self._loads(row[0], f"meta {key!r}")

    def replace_fits(self, fits: Mapping[tuple[str, str], Mapping[str, Any]]) -> None:
        """Replace all stored fits at once: a refit never leaves a mix of old and new."""
        now = time.time()
        with self._tx() as c:
            c.execute("DELETE FROM fits")
            c.executemany(
                "INSERT INTO fits (dataset, law, result, created_at) VALUES (?, ?, ?, ?)",
                [(d, law, json.dumps(r), now) for (d, law), r in fits.items()],
            )

    def fits(self) -> dict[tuple[str, str], dict[str, Any]]:
        rows = self.conn.execute("SELECT dataset, law, result FROM fits ORDER BY dataset, law")
        return {(d, law): self._loads(r, f"fit {d}/{law}") for d, law, r in rows}

    def put_probe(self, run_id: str, probe: str, summary: Mapping[str, Any], items: list[Any]) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO probes (run_id, probe, summary, items, created_at) VALUES (?, ?, ?, ?, ?)",
                (run_id, probe, json.dumps(summary), json.dumps(items), time.time()),
            )

    def probes(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT run_id, probe, summary, items FROM probes ORDER BY run_id, probe")
        return [
            {
                "run_id": r,
                "probe": p,
                "summary": self._loads(s, f"probe {r}/{p}"),
                "items": self._loads(i, f"probe {r}/{p}"),
            }
            for r, p, s, i in rows
        ]

    def _loads(self, text: str, what: str) -> Any:
        """A JSON cell; a damaged one is bad input (one line naming it), not a traceback."""
        try:
            return json.loads(text)
        except (TypeError, ValueError):
            raise UserError(f"{self.path}: the stored {what} is not valid JSON; the store is damaged") from None


def open_store(directory: Path, create: bool = True) -> Store:
    """Open (or create) ``directory/study.sqlite``.

    Raises:
        FileNotFoundError: ``create`` is False and there is no store.
        UserError: the file is there but is not a readable forgetscale store (see :func:`check_store`).
    """
    path = Path(directory) / "study.sqlite"
    if not create and not path.is_file():
        raise FileNotFoundError(path)
    check_store(directory, create)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(_SCHEMA)
    _migrate(conn)
    version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if version is None:
        with conn:
            conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (json.dumps(SCHEMA_VERSION),))
    elif json.loads(version[0]) != SCHEMA_VERSION:
        conn.close()
        raise UserError(
            f"{path}: a store of schema version {version[0]}; this forgetscale reads version {SCHEMA_VERSION}"
        )
    return Store(conn, path)


def open_study(directory: Path) -> Store:
    """Open the store of a study that ``forgetscale run`` (or a callback's ``store=``) wrote, to read it.

    It takes no lock: to write, use :func:`open_study_to_write`.

    Raises:
        UserError: there is no ``study.sqlite`` in ``directory`` (one line saying how to make one), or
            it is not a readable forgetscale store.
    """
    try:
        return open_store(Path(directory), create=False)
    except FileNotFoundError:
        raise UserError(f"{directory}: no study.sqlite here; run `forgetscale run --out {directory}` first") from None


@contextmanager
def open_study_to_write(directory: Path, *, create: bool = False) -> Iterator[Store]:
    """A study's store, open to write while this process holds the study's run lock (:mod:`forgetscale.lock`).

    Every writer goes through here (or holds the lock itself, as ``forgetscale run`` does), so that
    ``fit`` or ``probe`` never write a study that another process is running.

    Args:
        directory: the study directory.
        create: create the store when there is none (a callback's first row); else it must exist.

    Raises:
        UserError: no study in ``directory`` (unless ``create``), or not a forgetscale store.
        forgetscale.lock.StudyBusy: another process holds the study.
    """
    directory = Path(directory)
    with open_store(directory) if create else open_study(directory) as store, hold_or_share(directory):
        yield store


def check_store(directory: Path, create: bool = True) -> None:
    """Check that ``directory/study.sqlite``, if present, is an intact forgetscale store; write nothing.

    An absent file passes (``create``), as does an empty one (SQLite's own empty database) or a
    store whose tables exist but hold nothing yet (a first run killed while creating it).

    Raises:
        UserError: garbage bytes, another program's SQLite database, a damaged (malformed) one.
    """
    path = Path(directory) / "study.sqlite"
    what = f"{path} is not a forgetscale study store"
    todo = "move it away or use another directory" if create else "point at a directory `forgetscale run` wrote"
    if not path.exists():
        return
    if not path.is_file():
        raise UserError(f"{what} (not a file); {todo}")
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    if not header:
        if create:
            return
        raise UserError(f"{what} (an empty file); {todo}")
    if header != b"SQLite format 3\x00":
        raise UserError(f"{what} (not an SQLite database); {todo}")
    try:
        conn = sqlite3.connect(path, timeout=30)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            version = None
            if "meta" in tables:
                version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            fresh = (
                version is None
                and tables <= _TABLES
                and not any(conn.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() for t in tables)
            )
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(3)")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        if _busy(e):
            raise
        raise UserError(f"{path} is damaged ({e}); restore it from a copy, or {todo}") from None
    if problems != ["ok"]:
        raise UserError(f"{path} is damaged ({'; '.join(problems)}); restore it from a copy, or {todo}")
    if version is None and not fresh:
        kind = f"tables: {', '.join(sorted(tables))}" if tables else "no tables"
        raise UserError(f"{what} (an SQLite database with {kind}); {todo}")


_TABLES = set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _SCHEMA))
"""Tables a forgetscale store may hold before its schema version is written."""


def _busy(e: sqlite3.DatabaseError) -> bool:
    """A locked or busy database is another process at work, not a damaged file."""
    return getattr(e, "sqlite_errorname", "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(e)
