"""Fixtures shared by every tier: the real broker, SQLite and PostgreSQL databases, speech audio.

PostgreSQL is the one at SCRIBE_TEST_POSTGRES_URL (default 127.0.0.1:5432, trust auth). When it is
absent the PostgreSQL-parametrised tests are skipped and the run says so loudly at the end; with
SCRIBE_REQUIRE_POSTGRES=1 (as CI sets) its absence fails them instead.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from common.broker import free_port, start_broker

POSTGRES_ADMIN_URL = os.environ.get("SCRIBE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
_postgres_skips: list[str] = []


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """A real tansu broker on a free port; yields its bootstrap address."""
    port = free_port()
    process = start_broker(port)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


async def _postgres_admin():
    import asyncpg

    return await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=3)


def postgres_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    async def probe() -> None:
        connection = await _postgres_admin()
        await connection.close()

    try:
        asyncio.run(probe())
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not available"
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture(scope="session")
def postgres_reason() -> str | None:
    return postgres_available()


def _require_postgres(reason: str | None) -> None:
    if reason is None:
        return
    if os.environ.get("SCRIBE_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL required but unavailable at {POSTGRES_ADMIN_URL}: {reason}")
    _postgres_skips.append(reason)
    pytest.skip(f"PostgreSQL unavailable at {POSTGRES_ADMIN_URL}: {reason}")


async def _fresh_postgres_database() -> AsyncIterator[str]:
    name = f"scribe_test_{uuid.uuid4().hex[:12]}"
    admin = await _postgres_admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        admin = await _postgres_admin()
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def postgres_url(postgres_reason) -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards)."""
    _require_postgres(postgres_reason)
    async for url in _fresh_postgres_database():
        yield url


@pytest.fixture(scope="session")
def postgres_admin_url(postgres_reason) -> str:
    """The PostgreSQL server's admin URL, for tests that create databases of their own (the launcher's
    production-like profile); skipped loudly, or failed under SCRIBE_REQUIRE_POSTGRES=1, without one."""
    _require_postgres(postgres_reason)
    return POSTGRES_ADMIN_URL


async def drop_postgres_databases(prefix: str) -> list[str]:
    """Drop every database whose name starts with ``prefix``; returns their names."""
    admin = await _postgres_admin()
    try:
        rows = await admin.fetch("SELECT datname FROM pg_database WHERE starts_with(datname, $1)", prefix)
        for row in rows:
            await admin.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
        return [row["datname"] for row in rows]
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request, tmp_path: Path, postgres_reason) -> AsyncIterator[str]:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
        return
    _require_postgres(postgres_reason)
    async for url in _fresh_postgres_database():
        yield url


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix of its own per test, so tests sharing the broker never see each other's events."""
    return f"t{uuid.uuid4().hex[:10]}"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _postgres_skips:
        terminalreporter.write_sep("!", "PostgreSQL TIER NOT RUN", red=True, bold=True)
        terminalreporter.write_line(
            f"{len(_postgres_skips)} PostgreSQL test(s) skipped: {_postgres_skips[0]}", red=True, bold=True
        )
