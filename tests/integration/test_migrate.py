"""``python -m common.migrate``, the migration Job's command: every database to head, idempotently."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from common import migrate

DATABASES = ("ingestion", "transcription", "notegen", "query", "gateway")


def _heads(data_dir: Path) -> dict[str, str]:
    heads = {}
    for name in DATABASES:
        path = data_dir / f"{name}.db"
        if path.exists():
            with sqlite3.connect(path) as db:
                heads[name] = db.execute("select version_num from alembic_version").fetchone()[0]
    return heads


def test_every_database_is_migrated_and_a_second_run_changes_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SCRIBE_DATA_DIR", str(tmp_path))
    assert migrate.main([]) == 0
    first = _heads(tmp_path)
    assert set(first) == set(DATABASES)
    assert migrate.main([]) == 0
    assert _heads(tmp_path) == first


def test_the_databases_are_those_the_services_open(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SCRIBE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SCRIBE_QUERY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'elsewhere' / 'q.db'}")
    assert migrate.main(["query", "gateway"]) == 0
    assert set(_heads(tmp_path)) == {"gateway"}
    assert (tmp_path / "elsewhere" / "q.db").is_file()


def test_one_failure_fails_the_job_without_stopping_the_others_or_leaking_the_password(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("SCRIBE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SCRIBE_NOTEGEN_DATABASE_URL", "postgresql+asyncpg://scribe:hunter2-secret@127.0.0.1:1/notegen")
    assert migrate.main([]) == 1
    assert set(_heads(tmp_path)) == set(DATABASES) - {"notegen"}
    assert "hunter2-secret" not in capsys.readouterr().out


def test_an_unknown_database_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        migrate.main(["billing"])
    assert exit_info.value.code == 2
