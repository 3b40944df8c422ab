"""API keys at the gateway: the bootstrap key, 401 for every bad key, roles; SQLite and PostgreSQL.

No note is read or written here, so the backends are health-only stand-ins; a request that gets
past authentication is recognised by its 400 INVALID_NOTE_ID (the id is checked after the key).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from gateway.config import GatewaySettings
from gateway.keys import DEFAULT_TENANT_ID, Role
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
