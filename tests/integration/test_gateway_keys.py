"""API keys at the gateway: the bootstrap key, 401 for every bad key, roles; SQLite and PostgreSQL.

No note is read or written here, so the backends are health-only stand-ins; a request that gets
past authentication is recognised by its 400 INVALID_NOTE_ID (the id is checked after the key).
The tests at the end exercise ApiKeyStore alone: its authentication cache (queries counted on the
engine), per-key limits and the administration methods scribe-admin uses.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import event, select

from common.db import create_engine, migrate, session_factory
from gateway.app import MIGRATIONS
from gateway.config import GatewaySettings
from gateway.keys import DEFAULT_TENANT_ID, ApiKeyStore, Principal, Role, TenantExists, UnknownKey, UnknownTenant
from gateway.models import ApiKeyRow
from tests.support.gateway import TEST_API_KEY, gateway_settings, running_gateway
from tests.support.grpc_health import health_only_server

UNAUTHORIZED = {"error": "unauthorized", "message": "Invalid or missing API key", "code": "UNAUTHORIZED", "details": {}}
PAST_AUTH = "/notes/v1/notes/not-a-uuid"


@pytest.fixture
async def backends() -> AsyncIterator[dict[str, str]]:
    async with AsyncExitStack() as stack:
        yield {
            name: await stack.enter_async_context(health_only_server())
            for name in ("ingestion", "query", "notegen", "transcription")
        }


async def _authenticated(client, key: str) -> bool:
    response = await client.get(PAST_AUTH, headers={"X-API-KEY": key})
    assert response.status_code in (400, 401), response.text
    return response.status_code == 400


async def test_generated_bootstrap_key_is_printed_once_and_works(tmp_path: Path, backends, capsys, database_url):
    settings = gateway_settings(tmp_path / "gw", backends, bootstrap_api_key=None, database_url=database_url)
    async with running_gateway(settings) as (_, client):
        printed = re.findall(r"^SCRIBE_BOOTSTRAP_API_KEY=(\S+)$", capsys.readouterr().out, re.MULTILINE)
        assert len(printed) == 1
        key = printed[0]
        assert re.fullmatch(r"sk_live_[A-Za-z0-9_-]{32}", key)
        assert await _authenticated(client, key)

    # A restart neither prints nor makes another key; the first one still works.
    async with running_gateway(settings) as (app, client):
        assert "SCRIBE_BOOTSTRAP_API_KEY" not in capsys.readouterr().out
        assert await _authenticated(client, key)
        async with app.state.key_store.session_maker() as session:
            rows = (await session.scalars(select(ApiKeyRow))).all()
    assert len(rows) == 1
    assert rows[0].key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert rows[0].prefix == key[:12] and rows[0].role == "admin" and rows[0].tenant_id == DEFAULT_TENANT_ID


async def test_configured_bootstrap_key_is_stored_hashed_once(tmp_path: Path, backends, capsys):
    settings = gateway_settings(tmp_path / "gw", backends)
    for _ in range(2):
        async with running_gateway(settings) as (app, client):
            assert await _authenticated(client, TEST_API_KEY)
            async with app.state.key_store.session_maker() as session:
                rows = (await session.scalars(select(ApiKeyRow))).all()
            digest = hashlib.sha256(TEST_API_KEY.encode()).hexdigest()
            assert [(row.key_hash, row.role) for row in rows] == [(digest, "admin")]
    assert "SCRIBE_BOOTSTRAP_API_KEY" not in capsys.readouterr().out


async def test_missing_bad_revoked_and_expired_keys_are_401(tmp_path: Path, backends):
    async with running_gateway(gateway_settings(tmp_path / "gw", backends)) as (app, client):
        store = app.state.key_store
        revoked, revoked_row = await store.create_key(DEFAULT_TENANT_ID, Role.ADMIN)
        assert await _authenticated(client, revoked)
        assert await store.revoke_key(revoked_row.id)
        expired, _ = await store.create_key(
            DEFAULT_TENANT_ID, Role.ADMIN, expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        )
        for headers in (
            {},
            {"X-API-KEY": ""},
            {"X-API-KEY": "sk_live_" + "x" * 32},
            {"X-API-KEY": TEST_API_KEY[:-1]},
            {"X-API-KEY": revoked},
            {"X-API-KEY": expired},
        ):
            for response in (
                await client.get("/notes/v1/notes", headers=headers),
                await client.get(f"/notes/v1/notes/{uuid.uuid4()}", headers=headers),
                await client.get(f"{PAST_AUTH}/status", headers=headers),
                await client.get("/notes/v1/notes?limit=101", headers=headers),
                await client.post("/notes/v1/notes", headers=headers, files={"audio": ("a.wav", b"RIFF", "audio/wav")}),
            ):
                assert response.status_code == 401, (headers, response.text)
                assert response.json() == UNAUTHORIZED


async def test_viewer_may_read_but_not_upload(tmp_path: Path, backends):
    async with running_gateway(gateway_settings(tmp_path / "gw", backends)) as (app, client):
        viewer, _ = await app.state.key_store.create_key(DEFAULT_TENANT_ID, Role.VIEWER)
        response = await client.post(
            "/notes/v1/notes", headers={"X-API-KEY": viewer}, files={"audio": ("a.wav", b"RIFF", "audio/wav")}
        )
        assert response.status_code == 403, response.text
        assert response.json() == {
            "error": "forbidden",
            "message": "This API key's role (viewer) may not do this",
            "code": "INSUFFICIENT_ROLE",
            "details": {"required_role": "editor", "role": "viewer"},
        }
        assert await _authenticated(client, viewer)


def test_settings_refuse_a_placeholder_bootstrap_key_outside_development(tmp_path: Path):
    addresses = {f"{name}_addr": "127.0.0.1:1" for name in ("ingestion", "query", "notegen", "transcription")}
    with pytest.raises(ValidationError) as refused:
        GatewaySettings(environment="production", bootstrap_api_key="changeme", data_dir=tmp_path, **addresses)
    assert "changeme" not in str(refused.value.errors(include_input=False))
    assert GatewaySettings(environment="production", bootstrap_api_key="", **addresses).bootstrap_api_key is None
    with pytest.raises(ValidationError):
        GatewaySettings(**{**addresses, "query_addr": "no-port"})
    with pytest.raises(ValidationError):
        GatewaySettings(**{k: v for k, v in addresses.items() if k != "notegen_addr"})


# ---- the store itself: authentication cache, per-key limits, administration (no gateway) ----


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store_db(database_url: str) -> AsyncIterator[tuple[Any, list[str]]]:
    """A migrated gateway database: its engine, and the api_keys statements run on it."""
    await migrate(database_url, MIGRATIONS)
    engine = create_engine(database_url)
    statements: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _count(_conn, _cursor, statement, _params, _context, _many) -> None:
        if "api_keys" in statement:
            statements.append(statement)

    try:
        yield engine, statements
    finally:
        await engine.dispose()


def _store(engine, **kwargs: Any) -> ApiKeyStore:
    return ApiKeyStore(session_factory(engine), **kwargs)


async def test_cached_key_is_not_looked_up_again_within_ttl(store_db):
    engine, statements = store_db
    clock = FakeClock()
    store = _store(engine, cache_ttl_s=5.0, clock=clock)
    await store.create_tenant("t1", "T1")
    key, row = await store.create_key("t1", Role.EDITOR, limit_per_minute=60, limit_per_hour=1000)
    expected = Principal("t1", Role.EDITOR, row.id, limit_per_minute=60, limit_per_hour=1000)

    statements.clear()
    assert await store.authenticate(key) == expected
    assert len(statements) == 1
    for _ in range(50):
        assert await store.authenticate(key) == expected
    clock.now += 4.9
    assert await store.authenticate(key) == expected
    assert len(statements) == 1
    clock.now += 0.2  # past the TTL: looked up once more, then cached again
    assert await store.authenticate(key) == expected
    assert await store.authenticate(key) == expected
    assert len(statements) == 2

    # Concurrent requests with a key not yet cached share one query.
    other, _ = await store.create_key("t1", Role.VIEWER)
    statements.clear()
    answers = await asyncio.gather(*(store.authenticate(other) for _ in range(20)))
    assert len({answer.key_id for answer in answers}) == 1 and len(statements) == 1


async def test_bad_keys_are_cached_briefly_and_cannot_evict_good_ones(store_db):
    engine, statements = store_db
    clock = FakeClock()
    store = _store(engine, cache_ttl_s=5.0, negative_cache_ttl_s=1.0, cache_max_entries=3, clock=clock)
    await store.create_tenant("t1", "T1")
    good, _ = await store.create_key("t1", Role.VIEWER)
    assert await store.authenticate(good) is not None

    statements.clear()
    bad = "sk_live_" + "x" * 32
    for _ in range(20):
        assert await store.authenticate(bad) is None
    assert len(statements) == 1
    clock.now += 1.01  # the refusal is remembered for a second only
    assert await store.authenticate(bad) is None
    assert len(statements) == 2

    # A flood of distinct bad keys fills only the refusal cache (bounded), not the valid one.
    for i in range(10):
        assert await store.authenticate(f"sk_live_{i:032d}") is None
    assert len(store._invalid) == 3
    statements.clear()
    assert await store.authenticate(good) is not None
    assert statements == []

    # The valid cache is bounded too: the oldest entry goes first.
    keys = [(await store.create_key("t1", Role.VIEWER))[0] for _ in range(3)]
    for key in keys:
        assert await store.authenticate(key) is not None
    assert len(store._valid) == 3
    statements.clear()
    assert await store.authenticate(keys[-1]) is not None
    assert statements == []
    assert await store.authenticate(good) is not None  # dropped as the oldest: looked up again
    assert len(statements) == 1


async def test_changes_through_the_same_store_apply_at_once(store_db):
    engine, _ = store_db
    clock = FakeClock()
    store = _store(engine, cache_ttl_s=60.0, clock=clock)
    replica = _store(engine, cache_ttl_s=60.0, clock=clock)  # another gateway on the same database
    await store.create_tenant("t1", "T1")

    # A key refused (and that refusal cached) before it exists works as soon as it is created.
    key = "sk_live_" + "n" * 32
    assert await store.authenticate(key) is None
    _, row = await store.create_key("t1", Role.ADMIN, key=key)
    assert await store.authenticate(key) == Principal("t1", Role.ADMIN, row.id)
    assert await replica.authenticate(key) == Principal("t1", Role.ADMIN, row.id)

    await store.set_key_limits(row.id, 10, None)
    assert (await store.authenticate(key)).limit_per_minute == 10
    assert (await replica.authenticate(key)).limit_per_minute is None  # stale until its TTL passes

    assert await store.revoke_key(row.id)
    assert await store.authenticate(key) is None
    assert await replica.authenticate(key) is not None  # revoked elsewhere: works until the TTL passes
    clock.now += 60.01
    assert await replica.authenticate(key) is None


async def test_cache_respects_expiry_and_ttl_zero_disables_it(store_db, monkeypatch):
    engine, statements = store_db
    store = _store(engine, cache_ttl_s=3600.0)
    await store.create_tenant("t1", "T1")
    now = dt.datetime.now(dt.UTC)
    key, row = await store.create_key("t1", Role.VIEWER, expires_at=now + dt.timedelta(minutes=1))
    assert (await store.authenticate(key)).key_id == row.id
    assert (await store.authenticate(key)).key_id == row.id
    monkeypatch.setattr("gateway.keys.utcnow", lambda: now + dt.timedelta(minutes=1, seconds=1))
    assert await store.authenticate(key) is None  # cached for an hour, but the key expired
    monkeypatch.undo()

    uncached = _store(engine, cache_ttl_s=0)
    other, _ = await uncached.create_key("t1", Role.VIEWER)
    statements.clear()
    for _ in range(3):
        assert await uncached.authenticate(other) is not None
        assert await uncached.authenticate("sk_live_" + "z" * 32) is None
    assert len(statements) == 6


async def test_store_administration(store_db):
    engine, _ = store_db
    store = _store(engine)
    tenant = await store.create_tenant("clinic_1", "Clinic 1")
    assert (tenant.id, tenant.name) == ("clinic_1", "Clinic 1")
    with pytest.raises(TenantExists):
        await store.create_tenant("clinic_1", "again")
    for bad in ("", "x" * 65, "has space", "dot.ted", "ümlaut", "new\nline"):
        with pytest.raises(ValueError):
            await store.create_tenant(bad, "name")
    await store.create_tenant("x" * 64, "Longest")
    assert [t.id for t in await store.list_tenants()] == ["clinic_1", "x" * 64]

    with pytest.raises(UnknownTenant):
        await store.create_key("nope", Role.ADMIN)
    for bad_limit in (0, -1, 2**31, 1.5, True):
        with pytest.raises(ValueError):
            await store.create_key("clinic_1", Role.ADMIN, limit_per_minute=bad_limit)
    test_key, test_row = await store.create_key("clinic_1", Role.EDITOR, live=False, name="ci", limit_per_hour=7)
    assert re.fullmatch(r"sk_test_[A-Za-z0-9_-]{32}", test_key)

    keys = await store.list_keys("clinic_1")
    assert [k.id for k in keys] == [test_row.id]
    info = keys[0]
    assert (info.prefix, info.name, info.role, info.limit_per_minute, info.limit_per_hour) == (
        test_key[:12], "ci", Role.EDITOR, None, 7
    )
    assert not any("hash" in name for name in info.as_dict())
    assert test_row.key_hash not in repr(info) and test_key not in repr(info.as_dict())
    assert await store.list_keys("x" * 64) == []
    with pytest.raises(UnknownTenant):
        await store.list_keys("nope")

    with pytest.raises(UnknownKey):
        await store.set_key_limits("no-such-key", 1, 1)
    with pytest.raises(ValueError):
        await store.set_key_limits(test_row.id, 0, None)
    assert (await store.set_key_limits(test_row.id, 3, None)).limit_per_minute == 3
    assert (await store.get_key(test_row.id)).limit_per_hour is None
    assert await store.revoke_key(test_row.id)
    assert not await store.revoke_key(test_row.id)
    assert not await store.revoke_key("no-such-key")
    assert (await store.get_key(test_row.id)).status() == "revoked"


async def test_a_lookup_racing_a_revoke_does_not_cache_the_stale_answer(store_db):
    engine, _ = store_db
    store = _store(engine, cache_ttl_s=60.0)
    await store.create_tenant("t1", "T1")
    key, row = await store.create_key("t1", Role.EDITOR)
    fetched, release = asyncio.Event(), asyncio.Event()
    fetch = store._fetch

    async def slow_fetch(digest: str):
        answer = await fetch(digest)  # read before the revoke commits
        fetched.set()
        await release.wait()
        return answer

    store._fetch = slow_fetch
    lookup = asyncio.create_task(store.authenticate(key))
    await fetched.wait()
    assert await store.revoke_key(row.id)
    release.set()
    assert (await lookup).key_id == row.id  # that request was already under way
    store._fetch = fetch
    assert await store.authenticate(key) is None  # but its answer was not cached


async def test_bearer_token_is_the_same_key_as_x_api_key(tmp_path: Path, backends):
    async with running_gateway(gateway_settings(tmp_path / "gw", backends)) as (_, client):
        response = await client.get(PAST_AUTH, headers={"Authorization": f"Bearer {TEST_API_KEY}"})
        assert response.status_code == 400, response.text  # past authentication
        for headers in (
            {"Authorization": "Bearer sk_live_" + "x" * 32},
            {"Authorization": f"Basic {TEST_API_KEY}"},
            {"Authorization": "Bearer "},
            {"Authorization": TEST_API_KEY},
        ):
            response = await client.get(PAST_AUTH, headers=headers)
            assert response.status_code == 401, (headers, response.text)
            assert response.json() == UNAUTHORIZED
        schemes = (await client.get("/openapi.json")).json()["components"]["securitySchemes"]
        assert schemes["Bearer"] == {
            "type": "http",
            "scheme": "bearer",
            "description": "The same API key as a bearer token: `Authorization: Bearer sk_live_...`.",
        }
