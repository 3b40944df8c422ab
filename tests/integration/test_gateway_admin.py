"""``scribe-admin`` run as a real subprocess against the gateway's database; SQLite and PostgreSQL.

The tool finds the database as the gateway does (``SCRIBE_DATA_DIR`` for SQLite,
``SCRIBE_GATEWAY_DATABASE_URL`` for PostgreSQL); what it prints is checked against
``ApiKeyStore.authenticate`` on the same database, with the cache off.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import insert

from common.db import alembic_config, create_engine, migrate, session_factory
from gateway.app import MIGRATIONS
from gateway.config import GatewaySettings
from gateway.keys import ApiKeyStore, Principal, Role, hash_api_key
from gateway.models import ApiKeyRow, TenantRow

REPO = Path(__file__).resolve().parents[2]
KEY_PATTERN = re.compile(r"^id:\s+(\S+)\nkey:\s+(sk_(?:live|test)_[A-Za-z0-9_-]{32})\n$")
BACKEND_ADDRESSES = {f"{name}_addr": "127.0.0.1:1" for name in ("ingestion", "query", "notegen", "transcription")}


@dataclass
class Admin:
    """Runs the CLI as the gateway's operator would, and a store (cache off) on the same database."""

    env: dict[str, str]
    url: str
    store: ApiKeyStore

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.admin", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def create_key(self, *args: str) -> tuple[str, str, subprocess.CompletedProcess[str]]:
        done = self.run("key", "create", *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        match = KEY_PATTERN.fullmatch(done.stdout)
        assert match, done.stdout
        return match.group(1), match.group(2), done


@pytest.fixture
async def admin(database_url: str, tmp_path: Path) -> AsyncIterator[Admin]:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIBE_")}
    env["SCRIBE_DATA_DIR"] = str(data_dir)
    if database_url.startswith("sqlite"):
        # Where the gateway itself would look, given only the data folder.
        url = GatewaySettings(data_dir=data_dir, **BACKEND_ADDRESSES).resolved_database_url()
        assert url.endswith("/gateway.db")
    else:
        env["SCRIBE_GATEWAY_DATABASE_URL"] = url = database_url
    engine = create_engine(url)
    try:
        yield Admin(env=env, url=url, store=ApiKeyStore(session_factory(engine), cache_ttl_s=0))
    finally:
        await engine.dispose()


def _assert_no_secret(output: str, *keys: str) -> None:
    for key in keys:
        assert key not in output
        assert hash_api_key(key) not in output


async def test_tenants_and_keys_of_every_role(admin: Admin):
    assert admin.ok("tenant", "create", "clinic-a", "--name", "Clinic A") == "created tenant clinic-a\n"
    admin.ok("tenant", "create", "Clinic_B")
    assert [t["id"] for t in json.loads(admin.ok("tenant", "list", "--json"))] == ["Clinic_B", "clinic-a"]
    listing = admin.ok("tenant", "list")
    assert "Clinic A" in listing and "Clinic_B" in listing

    created: dict[Role, tuple[str, str]] = {}
    for role in Role:
        key_id, key, done = admin.create_key("--tenant", "clinic-a", "--role", role.value, "--name", f"{role} key")
        assert done.stdout.count(key) == 1 and key not in done.stderr  # shown once, on stdout only
        assert key.startswith("sk_live_")
        created[role] = (key_id, key)
        assert await admin.store.authenticate(key) == Principal("clinic-a", role, key_id)
    limited_id, limited, _ = admin.create_key(
        "--tenant", "Clinic_B", "--role", "viewer", "--test", "--per-minute", "30", "--per-hour", "600"
    )
    assert limited.startswith("sk_test_")
    assert await admin.store.authenticate(limited) == Principal(
        "Clinic_B", Role.VIEWER, limited_id, limit_per_minute=30, limit_per_hour=600
    )

    keys = [key for _, key in created.values()] + [limited]
    text_listing = admin.ok("key", "list")
    json_listing = admin.ok("key", "list", "--json")
    for output in (text_listing, json_listing):
        _assert_no_secret(output, *keys)
        for key in keys:
            assert key[:12] in output
    rows = json.loads(json_listing)
    assert {row["id"] for row in rows} == {limited_id, *(key_id for key_id, _ in created.values())}
    assert all("hash" not in field for row in rows for field in row)
    by_id = {row["id"]: row for row in rows}
    assert by_id[limited_id] | {"created_at": None} == {
        "id": limited_id,
        "tenant_id": "Clinic_B",
        "prefix": limited[:12],
        "name": "",
        "role": "viewer",
        "status": "active",
        "created_at": None,
        "expires_at": None,
        "revoked_at": None,
        "limit_per_minute": 30,
        "limit_per_hour": 600,
    }
    only_b = json.loads(admin.ok("key", "list", "--tenant", "Clinic_B", "--json"))
    assert [row["id"] for row in only_b] == [limited_id]

    # The JSON form of create gives the same, plus the key, once.
    done = admin.run("key", "create", "--tenant", "clinic-a", "--role", "editor", "--json")
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    assert done.stdout.count(made["key"]) == 1
    assert (await admin.store.authenticate(made["key"])).key_id == made["id"]


async def test_revoke_and_limits(admin: Admin):
    admin.ok("tenant", "create", "t1")
    key_id, key, _ = admin.create_key("--tenant", "t1", "--role", "editor", "--per-minute", "10")
    assert (await admin.store.authenticate(key)).limit_per_minute == 10

    assert admin.ok("key", "limits", key_id, "--per-hour", "100") == f"key {key_id}: 10 per minute, 100 per hour\n"
    assert await admin.store.authenticate(key) == Principal("t1", Role.EDITOR, key_id, 10, 100)
    admin.ok("key", "limits", key_id, "--per-minute", "none", "--per-hour", "50")
    assert await admin.store.authenticate(key) == Principal("t1", Role.EDITOR, key_id, None, 50)

    other_id, other, _ = admin.create_key("--tenant", "t1", "--role", "viewer")
    assert admin.ok("key", "revoke", key_id) == f"revoked key {key_id}\n"
    assert await admin.store.authenticate(key) is None
    assert await admin.store.authenticate(other) is not None  # only that key
    assert "already revoked" in admin.ok("key", "revoke", key_id)
    status = {row["id"]: row["status"] for row in json.loads(admin.ok("key", "list", "--json"))}
    assert status == {key_id: "revoked", other_id: "active"}


async def test_expiry(admin: Admin, monkeypatch):
    admin.ok("tenant", "create", "t1")
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    refused = admin.run("key", "create", "--tenant", "t1", "--role", "admin", "--expires-at", past)
    assert refused.returncode == 2 and "in the past" in refused.stderr
    assert await admin.store.list_keys() == []

    at = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).replace(microsecond=0)
    at_id, at_key, _ = admin.create_key("--tenant", "t1", "--role", "admin", "--expires-at", at.isoformat())
    days_id, days_key, _ = admin.create_key("--tenant", "t1", "--role", "viewer", "--expires-in-days", "1")
    expiries = {row["id"]: row["expires_at"] for row in json.loads(admin.ok("key", "list", "--json"))}
    assert dt.datetime.fromisoformat(expiries[at_id]) == at
    assert dt.timedelta(hours=23) < dt.datetime.fromisoformat(expiries[days_id]) - dt.datetime.now(dt.UTC)
    assert (await admin.store.authenticate(at_key)).key_id == at_id
    assert (await admin.store.authenticate(days_key)).key_id == days_id

    # Three hours on, the first has expired; two days on, both.
    real_now = dt.datetime.now(dt.UTC)
    monkeypatch.setattr("gateway.keys.utcnow", lambda: real_now + dt.timedelta(hours=3))
    assert await admin.store.authenticate(at_key) is None
    assert (await admin.store.authenticate(days_key)).key_id == days_id
    monkeypatch.setattr("gateway.keys.utcnow", lambda: real_now + dt.timedelta(days=2))
    assert await admin.store.authenticate(days_key) is None


async def test_refusals(admin: Admin):
    admin.ok("tenant", "create", "t1")
    key_id, _, _ = admin.create_key("--tenant", "t1", "--role", "viewer")
    for args, status, message in (
        (("tenant", "create", "t1"), 1, "tenant 't1' already exists"),
        (("key", "create", "--tenant", "nope", "--role", "admin"), 1, "unknown tenant 'nope'"),
        (("key", "list", "--tenant", "nope"), 1, "unknown tenant 'nope'"),
        (("key", "revoke", "no-such-key"), 1, "unknown key 'no-such-key'"),
        (("key", "limits", "no-such-key", "--per-minute", "5"), 1, "unknown key 'no-such-key'"),
        (("key", "create", "--tenant", "t1", "--role", "owner"), 2, "invalid choice"),
        (("key", "create", "--tenant", "t1"), 2, "--role"),
        (("key", "create", "--tenant", "t1", "--role", "viewer", "--per-minute", "0"), 2, "--per-minute"),
        (("key", "create", "--tenant", "t1", "--role", "viewer", "--per-hour", "many"), 2, "--per-hour"),
        (("key", "limits", key_id), 2, "--per-minute and/or --per-hour"),
        (("tenant", "create", "bad id!"), 2, "invalid tenant id"),
        (("tenant", "create", "x" * 65), 2, "invalid tenant id"),
        (("frobnicate",), 2, "invalid choice"),
    ):
        done = admin.run(*args)
        assert done.returncode == status, (args, done.stdout, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert done.stdout == ""
        if status == 1:
            assert done.stderr.count("\n") == 1, done.stderr  # one line
            assert "Traceback" not in done.stderr
    assert [key.id for key in await admin.store.list_keys()] == [key_id]
    assert [tenant.id for tenant in await admin.store.list_tenants()] == ["t1"]


async def test_migration_0002_keeps_existing_keys(database_url: str):
    """A database made before per-key limits gets the columns; its keys keep working, at the defaults."""
    key = "sk_live_" + "k" * 32
    await _upgrade(database_url, "0001")
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            now = dt.datetime.now(dt.UTC)
            await connection.execute(insert(TenantRow.__table__).values(id="old", name="Old", created_at=now))
            # Only the columns 0001 made: the row the older gateway would have written.
            await connection.execute(
                insert(ApiKeyRow.__table__).values(
                    id="k1",
                    tenant_id="old",
                    key_hash=hashlib.sha256(key.encode()).hexdigest(),
                    prefix=key[:12],
                    name="",
                    role="editor",
                    created_at=now,
                )
            )
        await migrate(database_url, MIGRATIONS)
        store = ApiKeyStore(session_factory(engine), cache_ttl_s=0)
        assert await store.authenticate(key) == Principal("old", Role.EDITOR, "k1", None, None)
        await store.set_key_limits("k1", 5, None)
        assert await store.authenticate(key) == Principal("old", Role.EDITOR, "k1", 5, None)
        assert ApiKeyRow.__table__.c.rate_limit_per_minute.nullable
    finally:
        await engine.dispose()
    await _upgrade(database_url, "0001", down=True)  # and the downgrade runs on both backends
    await migrate(database_url, MIGRATIONS)


async def _upgrade(url: str, revision: str, *, down: bool = False) -> None:
    config = alembic_config(url, MIGRATIONS)
    await asyncio.to_thread(command.downgrade if down else command.upgrade, config, revision)
