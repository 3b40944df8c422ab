"""Rate limits per API key, through the real gateway app over the real ingestion and query services.

The in-process limiter always runs. The Redis tests use the Redis at SCRIBE_TEST_REDIS_URL
(default redis://127.0.0.1:6379/0), each with a key prefix of its own that it deletes afterwards.
When that Redis does not answer they are skipped, loudly; with SCRIBE_REQUIRE_REDIS=1 (as CI
sets) they fail instead.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import types
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import limits.aio.storage.memory
import pytest
import pytest_asyncio
import redis
import redis.asyncio

import gateway.ratelimit
from common.broker import free_port
from gateway.config import GatewaySettings
from gateway.keys import Principal, Role
from gateway.ratelimit import RateLimiter
from tests.support.audio import write_tone
from tests.support.gateway import gateway_backends, TEST_API_KEY, gateway_settings, running_gateway

AUTH = {"X-API-KEY": TEST_API_KEY}
LIST = "/notes/v1/notes"
REDIS_URL = os.environ.get("SCRIBE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LIMIT_HEADERS = tuple(
    f"X-RateLimit-{what}-{window}" for window in ("Minute", "Hour") for what in ("Limit", "Remaining", "Reset")
)
ENVELOPE_KEYS = {"error", "message", "code", "details"}

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backends(tmp_path_factory: pytest.TempPathFactory, broker: str) -> AsyncIterator[dict[str, str]]:
    """Real ingestion and query, health-only notegen and transcription (as in test_gateway)."""
    async with gateway_backends(tmp_path_factory.mktemp("backends"), broker) as addresses:
        yield addresses


def _redis_unavailable() -> str | None:
    """None when the test Redis answers PING, else why not."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not available"
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()


@pytest.fixture
def redis_url() -> str:
    """The test Redis; skips loudly without one, or fails with SCRIBE_REQUIRE_REDIS=1."""
    reason = _redis_unavailable()
    if reason is not None:
        if os.environ.get("SCRIBE_REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis required (SCRIBE_REQUIRE_REDIS=1) but unavailable at {REDIS_URL}: {reason}")
        pytest.skip(
            f"!!! REDIS RATE-LIMIT TESTS NOT RUN: Redis unavailable at {REDIS_URL}: {reason} "
            "(set SCRIBE_REQUIRE_REDIS=1 to make this a failure)"
        )
    return REDIS_URL


@pytest_asyncio.fixture(loop_scope="module")
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of this test's own in the shared Redis; its keys are deleted afterwards."""
    prefix = f"scribe-test:ratelimit:{uuid.uuid4().hex}"
    yield prefix
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def tone(tmp_path: Path) -> bytes:
    return write_tone(tmp_path / "tone.wav", seconds=1).read_bytes()


def _has_no_limit_headers(response: httpx.Response) -> bool:
    return not any(name.lower().startswith("x-ratelimit") for name in response.headers)


def _int(response: httpx.Response, name: str) -> int:
    return int(response.headers[name])


def _assert_refused(response: httpx.Response, window: str, limit: int, max_wait: int) -> int:
    """A 429 in the envelope, with Retry-After; returns Retry-After."""
    assert response.status_code == 429, response.text
    retry_after = _int(response, "Retry-After")
    assert 1 <= retry_after <= max_wait, retry_after
    assert response.json() == {
        "error": "too_many_requests",
        "message": "Rate limit exceeded",
        "code": "RATE_LIMIT_EXCEEDED",
        "details": {"window": window, "limit": limit, "retry_after_s": retry_after},
    }
    assert _int(response, f"X-RateLimit-Remaining-{window.capitalize()}") == 0
    return retry_after


def _assert_burst(responses: list[httpx.Response], started: float, *, exact_remaining: bool) -> None:
    """150 requests of one key in a minute: exactly 100 served, 50 refused, headers on all."""
    assert Counter(response.status_code for response in responses) == {200: 100, 429: 50}, [
        (response.status_code, response.text) for response in responses if response.status_code not in (200, 429)
    ]
    for response in responses:
        for name in LIMIT_HEADERS:
            assert name in response.headers, (name, response.status_code, response.headers)
        assert _int(response, "X-RateLimit-Limit-Minute") == 100
        assert _int(response, "X-RateLimit-Limit-Hour") == 1000
    served = [response for response in responses if response.status_code == 200]
    refused = [response for response in responses if response.status_code == 429]
    minute_left = [_int(response, "X-RateLimit-Remaining-Minute") for response in served]
    hour_left = [_int(response, "X-RateLimit-Remaining-Hour") for response in served]
    if exact_remaining:
        # In process each success reads its window right after its own hit.
        assert sorted(minute_left) == list(range(100))
        assert sorted(hour_left) == list(range(900, 1000))
    else:
        # In Redis the read is a second round trip: values may repeat, but the last hit reads 0.
        assert all(0 <= left <= 99 for left in minute_left) and min(minute_left) == 0
        assert all(900 <= left <= 999 for left in hour_left) and min(hour_left) == 900
    for response in refused:
        retry_after = _assert_refused(response, "minute", 100, 60)
        now = time.time()
        reset = _int(response, "X-RateLimit-Reset-Minute")
        # The oldest request counted leaves the window 60 s after it was made, during this test.
        assert started + 60 <= reset <= now + 61, (started, reset, now)
        assert abs(reset - (now + retry_after)) <= 2
        hour_left_then = _int(response, "X-RateLimit-Remaining-Hour")
        # In Redis a refused request may read the hour before the served ones have all hit it.
        assert hour_left_then == 900 if exact_remaining else 900 <= hour_left_then <= 1000


# -- in process ------------------------------------------------------------------------------


async def test_in_process_limit_serves_exactly_100_of_150_in_a_minute(tmp_path, backends):
    settings = gateway_settings(tmp_path / "gw", backends)
    async with running_gateway(settings) as (_, client):
        started = time.time()
        responses = await asyncio.gather(*(client.get(LIST, headers=AUTH) for _ in range(150)))
        # Refused requests consumed nothing of the hour: the next one says 900 left.
        after = await client.get(LIST, headers=AUTH)
    _assert_burst(list(responses), started, exact_remaining=True)
    _assert_refused(after, "minute", 100, 60)
    assert _int(after, "X-RateLimit-Remaining-Hour") == 900


async def test_moving_window_ignores_the_clocks_minute(monkeypatch):
    """Three allowed a minute: three at hh:mm:59.5 leave none at hh:(mm+1):00.5 (a fixed window would)."""
    clock = types.SimpleNamespace(now=60 * 28_333_333 + 59.5)
    fake_time = types.SimpleNamespace(time=lambda: clock.now, monotonic=time.monotonic)
    monkeypatch.setattr(limits.aio.storage.memory, "time", fake_time)
    monkeypatch.setattr(gateway.ratelimit, "time", fake_time)
    limiter = RateLimiter(per_minute=3, per_hour=10)
    principal = Principal(tenant_id="t", role=Role.VIEWER, key_id=str(uuid.uuid4()))
    try:
        decisions = [await limiter.check(principal) for _ in range(3)]
        assert all(decision.allowed for decision in decisions)
        assert [decision.headers["X-RateLimit-Remaining-Minute"] for decision in decisions] == ["2", "1", "0"]
        clock.now += 1.0  # the clock's next minute
        refused = await limiter.check(principal)
        assert not refused.allowed and refused.window == "minute" and refused.retry_after == 59
        assert refused.headers["X-RateLimit-Remaining-Hour"] == "7"
        assert int(refused.headers["X-RateLimit-Reset-Minute"]) == math.ceil(clock.now - 1.0 + 60)
        clock.now += 59.1  # the first three left the window
        again = await limiter.check(principal)
        assert again.allowed and again.headers["X-RateLimit-Remaining-Minute"] == "2"
        assert again.headers["X-RateLimit-Remaining-Hour"] == "6"
    finally:
        await limiter.close()


async def test_errors_after_the_check_carry_the_headers_and_401_does_not(tmp_path, backends):
    settings = gateway_settings(tmp_path / "gw", backends)
    async with running_gateway(settings) as (_, client):
        missing = await client.get(f"{LIST}/{uuid.uuid4()}", headers=AUTH)
        no_transcript = await client.get(f"{LIST}/{uuid.uuid4()}/transcript.txt", headers=AUTH)
        invalid = await client.get(f"{LIST}?limit=0", headers=AUTH)
        unauthenticated = await client.get(LIST, headers={"X-API-KEY": "sk_live_nope"})
        anonymous = await client.get(LIST)
        served = await client.get(LIST, headers=AUTH)
    assert (missing.status_code, no_transcript.status_code, invalid.status_code) == (404, 404, 400)
    for number, response in enumerate((missing, no_transcript, invalid, served), start=1):
        assert set(response.json()) <= ENVELOPE_KEYS | {"data", "meta"}
        assert _int(response, "X-RateLimit-Remaining-Minute") == 100 - number, response.headers
        assert _int(response, "X-RateLimit-Remaining-Hour") == 1000 - number
    for response in (unauthenticated, anonymous):
        assert response.status_code == 401
        assert _has_no_limit_headers(response)


async def test_status_is_never_limited(tmp_path, backends, tone):
    settings = gateway_settings(tmp_path / "gw", backends, rate_limit_per_minute=5)
    async with running_gateway(settings) as (_, client):
        created = await client.post(LIST, headers=AUTH, files={"audio": ("consulta.wav", tone, "audio/wav")})
        assert created.status_code == 201, created.text
        assert _int(created, "X-RateLimit-Remaining-Minute") == 4
        note_id = created.json()["data"]["id"]
        statuses = await asyncio.gather(
            *(client.get(f"{LIST}/{note_id}/status", headers=AUTH) for _ in range(150))
        )
        listed = await client.get(LIST, headers=AUTH)
    assert [response.status_code for response in statuses] == [200] * 150
    assert all(_has_no_limit_headers(response) for response in statuses)
    # The 150 polls counted nothing.
    assert listed.status_code == 200 and _int(listed, "X-RateLimit-Remaining-Minute") == 3


async def test_a_key_with_its_own_limits(tmp_path, backends):
    settings = gateway_settings(tmp_path / "gw", backends)
    async with running_gateway(settings) as (app, client):
        store = app.state.key_store
        tenant = f"clinic-{uuid.uuid4().hex[:8]}"
        await store.ensure_tenant(tenant, "Clinic")
        viewer, _ = await store.create_key(tenant, Role.VIEWER, limit_per_minute=3, limit_per_hour=5)
        hourly, _ = await store.create_key(tenant, Role.VIEWER, limit_per_minute=10, limit_per_hour=2)
        auth = {"X-API-KEY": viewer}

        # Refused before the limit (403: a viewer may not upload; 401: no such key): not counted.
        forbidden = [await client.post(LIST, headers=auth, files={"audio": ("a.wav", b"RIFF", "audio/wav")})
                     for _ in range(5)]
        unknown = [await client.get(LIST, headers={"X-API-KEY": "sk_live_notakey"}) for _ in range(5)]
        served = [await client.get(LIST, headers=auth) for _ in range(3)]
        refused = [await client.get(LIST, headers=auth) for _ in range(2)]
        # The bootstrap key's budget is its own, at the defaults.
        other = await client.get(LIST, headers=AUTH)
        by_hour = [await client.get(LIST, headers={"X-API-KEY": hourly}) for _ in range(3)]

    assert [response.status_code for response in forbidden] == [403] * 5
    assert [response.status_code for response in unknown] == [401] * 5
    assert all(_has_no_limit_headers(response) for response in forbidden + unknown)
    assert [response.status_code for response in served] == [200] * 3
    assert all(_int(r, "X-RateLimit-Limit-Minute") == 3 and _int(r, "X-RateLimit-Limit-Hour") == 5 for r in served)
    assert [_int(r, "X-RateLimit-Remaining-Minute") for r in served] == [2, 1, 0]
    assert [_int(r, "X-RateLimit-Remaining-Hour") for r in served] == [4, 3, 2]
    for response in refused:
        _assert_refused(response, "minute", 3, 60)
        assert _int(response, "X-RateLimit-Remaining-Hour") == 2  # a refused request consumes no hour
    assert other.status_code == 200
    assert (_int(other, "X-RateLimit-Limit-Minute"), _int(other, "X-RateLimit-Remaining-Minute")) == (100, 99)

    assert [response.status_code for response in by_hour] == [200, 200, 429]
    retry_after = _assert_refused(by_hour[2], "hour", 2, 3600)
    assert retry_after > 60
    assert _int(by_hour[2], "X-RateLimit-Remaining-Minute") == 8  # refused by the hour: no minute used
    assert time.time() < _int(by_hour[2], "X-RateLimit-Reset-Hour") <= time.time() + 3601


async def test_openapi_documents_limits_and_headers(tmp_path, backends):
    settings = gateway_settings(tmp_path / "gw", backends)
    async with running_gateway(settings) as (_, client):
        spec = (await client.get("/openapi.json")).json()
    limited = [
        ("/notes/v1/notes", "post", "201"),
        ("/notes/v1/notes", "get", "200"),
        ("/notes/v1/notes/{note_id}", "get", "200"),
        ("/notes/v1/notes/{note_id}/transcript.txt", "get", "200"),
    ]
    for path, method, success in limited:
        responses = spec["paths"][path][method]["responses"]
        assert set(LIMIT_HEADERS) <= set(responses[success]["headers"]), (path, method)
        assert set(LIMIT_HEADERS) | {"Retry-After"} <= set(responses["429"]["headers"]), (path, method)
        assert responses["429"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorResponse"
        }
        assert "RATE_LIMIT_EXCEEDED" in responses["429"]["description"]
    status = spec["paths"]["/notes/v1/notes/{note_id}/status"]["get"]["responses"]
    assert "429" not in status and "headers" not in status["200"]


async def test_settings_read_the_environment(monkeypatch, backends):
    monkeypatch.setenv("SCRIBE_REDIS_URL", "redis://cache.internal:6379/2")
    monkeypatch.setenv("SCRIBE_GATEWAY_RATE_LIMIT_PER_MINUTE", "7")
    monkeypatch.setenv("SCRIBE_GATEWAY_RATE_LIMIT_PER_HOUR", "70")
    monkeypatch.setenv("SCRIBE_GATEWAY_RATE_LIMIT_KEY_PREFIX", "clinic-a:ratelimit")
    settings = GatewaySettings(**{f"{name}_addr": address for name, address in backends.items()})
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == "redis://cache.internal:6379/2"
    assert (settings.rate_limit_per_minute, settings.rate_limit_per_hour) == (7, 70)
    assert settings.rate_limit_key_prefix == "clinic-a:ratelimit"
    limiter = RateLimiter.from_settings(settings)
    try:
        assert limiter.backend == "redis"
    finally:
        await limiter.close()


# -- Redis -----------------------------------------------------------------------------------


async def test_redis_counts_exactly_in_order(tmp_path, backends, redis_url, redis_prefix):
    settings = gateway_settings(
        tmp_path / "gw", backends, redis_url=redis_url, rate_limit_key_prefix=redis_prefix, rate_limit_per_minute=5
    )
    async with running_gateway(settings) as (_, client):
        responses = [await client.get(LIST, headers=AUTH) for _ in range(7)]
    assert [response.status_code for response in responses] == [200] * 5 + [429] * 2
    assert [_int(response, "X-RateLimit-Remaining-Minute") for response in responses] == [4, 3, 2, 1, 0, 0, 0]
    assert [_int(response, "X-RateLimit-Remaining-Hour") for response in responses] == [
        999, 998, 997, 996, 995, 995, 995
    ]
    for response in responses[5:]:
        _assert_refused(response, "minute", 5, 60)


async def test_two_gateways_share_one_budget_in_redis(tmp_path, backends, redis_url, redis_prefix):
    # Two replicas: one database (so one key id) and one Redis.
    settings = gateway_settings(tmp_path / "gw", backends, redis_url=redis_url, rate_limit_key_prefix=redis_prefix)
    async with running_gateway(settings) as (_, first), running_gateway(settings) as (_, second):
        clients = (first, second)
        started = time.time()
        responses = await asyncio.gather(*(clients[i % 2].get(LIST, headers=AUTH) for i in range(150)))
        after = [await client.get(LIST, headers=AUTH) for client in clients]
    _assert_burst(list(responses), started, exact_remaining=False)
    per_replica = Counter((i % 2, response.status_code) for i, response in enumerate(responses))
    assert per_replica[(0, 200)] + per_replica[(1, 200)] == 100
    assert per_replica[(0, 200)] > 0 and per_replica[(1, 200)] > 0
    for response in after:
        _assert_refused(response, "minute", 100, 60)
        # Exactly 100 counted in the hour: the refused requests consumed none.
        assert _int(response, "X-RateLimit-Remaining-Hour") == 900


async def test_unreachable_redis_fails_open(tmp_path, backends, caplog):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = gateway_settings(tmp_path / "gw", backends, redis_url=dead, rate_limit_per_minute=2)
    caplog.set_level(logging.WARNING, logger="gateway.ratelimit")
    async with running_gateway(settings) as (_, client):
        started = time.monotonic()
        burst = await asyncio.gather(*(client.get(LIST, headers=AUTH) for _ in range(20)))
        one_by_one = [await client.get(LIST, headers=AUTH) for _ in range(10)]
        elapsed = time.monotonic() - started
    responses = [*burst, *one_by_one]
    assert [response.status_code for response in responses] == [200] * 30, [r.text for r in responses]
    assert all(_has_no_limit_headers(response) for response in responses)
    assert elapsed < 10
    warnings = [record for record in caplog.records if record.name == "gateway.ratelimit"
                and record.levelno == logging.WARNING]
    assert len(warnings) == 1, [record.getMessage() for record in warnings]
    assert "unreachable" in warnings[0].getMessage()
