"""The store's names and its writers: the post-hoc strength column (migrated from its old name on open),
and writes that take the study's run lock while reads do not."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from forgetscale.errors import UserError
from forgetscale.lock import StudyBusy, hold
from forgetscale.store import open_store, open_study, open_study_to_write
from tests.helpers import held_elsewhere


def _old_store(directory: Path) -> None:
    """A store as written before the strength column had its name: today's schema with the column called
    ``scale`` (the one difference), holding a rescaled and an intruder-reduced row."""
    with open_store(directory) as store:
        store.register_run("r1", {}, "news", 4)
        store.add_measurement("r1", {"step": 8, "method": "rescale", "strength": 0.5, "tokens": 800,
                                     "ft_loss": 2.0, "forget_ce": 3.0, "forget_kl": 0.4})  # fmt: skip
        store.add_measurement("r1", {"step": 8, "method": "intruders", "strength": 0.0, "n_intruders": 3,
                                     "tokens": 800, "ft_loss": 2.1, "forget_ce": 2.9, "forget_kl": 0.3})  # fmt: skip
    con = sqlite3.connect(directory / "study.sqlite")
    with con:
        con.execute("ALTER TABLE scaled_measurements RENAME COLUMN strength TO scale")
    con.close()
    assert "scale" in _columns(directory) and "strength" not in _columns(directory)


def _columns(directory: Path) -> list[str]:
    con = sqlite3.connect(directory / "study.sqlite")
    try:
        return [r[1] for r in con.execute("PRAGMA table_info(scaled_measurements)")]
    finally:
        con.close()


def test_an_old_store_gets_its_scale_column_renamed_strength_with_its_rows(tmp_path):
    _old_store(tmp_path)
    with open_store(tmp_path) as store:
        rows = store.scaled_measurements()
    assert [(r["method"], r["strength"], r["n_intruders"], r["forget_kl"]) for r in rows] == [
        ("intruders", 0.0, 3, 0.3), ("rescale", 0.5, None, 0.4)]  # fmt: skip
    assert all("scale" not in r for r in rows)
    cols = _columns(tmp_path)
    assert "strength" in cols and "scale" not in cols
    with open_store(tmp_path) as store:  # a second open finds nothing to migrate and keeps the rows
        assert len(store.scaled_measurements()) == 2
        # the renamed column is still in the key: the same (step, method) at another strength is a new row
        store.add_measurement("r1", {"step": 8, "method": "rescale", "strength": 0.75, "tokens": 800,
                                     "ft_loss": 2.05, "forget_ce": 3.05})  # fmt: skip
        with pytest.raises(sqlite3.IntegrityError):
            store.add_measurement("r1", {"step": 8, "method": "rescale", "strength": 0.75, "tokens": 800})
        assert sorted(r["strength"] for r in store.scaled_measurements()) == [0.0, 0.5, 0.75]


def test_open_study_to_write_needs_a_study_and_creates_nothing(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError, match="no study.sqlite here"), open_study_to_write(missing):
        pass
    assert not missing.exists()  # neither the directory nor its lock file


def test_a_writer_is_refused_while_another_process_runs_the_study(tmp_path):
    with open_store(tmp_path):
        pass
    with held_elsewhere(tmp_path) as holder:
        with pytest.raises(StudyBusy, match=f"pid {holder.pid} "), open_study_to_write(tmp_path):
            pass
        with open_study(tmp_path) as store:  # a reader is not refused
            assert store.runs() == []
    with open_study_to_write(tmp_path) as store:  # the holder gone, the writer goes ahead
        store.set_meta("x", 1)


def test_a_writer_inside_this_process_hold_goes_on_and_leaves_it_held(tmp_path):
    """``forgetscale run`` holds its study while it probes and fits it: those writes share that hold."""
    with open_store(tmp_path):
        pass
    with hold(tmp_path):
        with open_study_to_write(tmp_path) as store:
            store.set_meta("x", 2)
        with pytest.raises(StudyBusy), hold(tmp_path):  # still held by the outer block, not released by the writer
            pass
    with open_study_to_write(tmp_path) as store:
        assert store.get_meta("x") == 2


def test_fit_takes_the_lock(tmp_path, monkeypatch):
    """``fit`` writes fits into the store and fits.json: it goes through the locked writer."""
    import forgetscale.results as results

    with open_store(tmp_path):
        pass
    entered = []

    def refuse(directory, **_):
        entered.append(Path(directory))
        raise StudyBusy("busy")

    monkeypatch.setattr(results, "open_study_to_write", refuse)
    with pytest.raises(StudyBusy):
        results.fit(tmp_path)
    assert entered == [tmp_path]
    assert not (tmp_path / "fits.json").exists()
