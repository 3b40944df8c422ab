"""Rate limits of the Notes API per API key: a moving minute and a moving hour.

The contract: "rate limiting based on the API Key for most endpoints, default 100 req/min,
1000 req/hour". Every route that depends on :data:`Limited` or :data:`LimitedEditor` counts one
request against both windows of the caller's key (``Principal.limit_per_minute`` /
``limit_per_hour``, else ``SCRIBE_GATEWAY_RATE_LIMIT_PER_MINUTE`` / ``_PER_HOUR``); the status
route, meant to be polled, is not limited. Authentication (401) and role checks (403) come first,
so refused keys and unknown keys consume nothing.

Counting uses the :pypi:`limits` library's moving windows (``MovingWindowRateLimiter``): a request
is counted when it is served and leaves the window exactly 60 s (3600 s) later, so 150 requests in
any 60 s give exactly 100 successes, wherever the clock's minute starts. Windows live in this
process by default, or in Redis (``SCRIBE_REDIS_URL``) so that every gateway replica shares one
budget per key; ``limits`` acquires an entry in Redis with one Lua script, so a hit is atomic
across replicas.

Each answer of a limited route carries ``X-RateLimit-{Limit,Remaining,Reset}-{Minute,Hour}``
(reset: epoch seconds when the oldest request counted leaves the window, i.e. when a slot frees),
its errors included: the dependency leaves them in the request's ``scope["state"]`` and
:class:`RateLimitHeadersMiddleware` writes them into whatever response goes out. A refused request
is answered 429 ``RATE_LIMIT_EXCEEDED`` with ``Retry-After``.

Availability over exactness: when Redis cannot be reached the gateway serves requests without
limits and without limit headers (fail open), logs a warning at most every 30 s, and leaves Redis
alone for 5 s after each failure so that a dead Redis does not add its timeout (1 s) to every
request. A clinic's notes must not become unreachable because the limiter's store is down.

What remains racy (the limit itself is never exceeded; each hit is atomic):

- Both windows are tested first, then hit one after the other, tightest first, so that a request
  refused by one window does not consume the other. Between the test and the hits, concurrent
  requests (in this process or on other replicas) may take the last slots of the second window:
  then the request, refused, has still consumed one slot of the first window. ``limits`` cannot
  give an entry back, and a moving window cannot be hit in both keys at once without a Lua
  script of our own; the loss is one slot per such race, only at the very edge of a budget.
- In Redis, ``Remaining`` is read in a second round trip after the hit, so concurrent requests
  may report the same value or skip one; in process the read follows the hit with no await in
  between, so each success reports its own value.
- Redis windows are stamped with each replica's clock (``limits`` passes ``time.time()`` to the
  script): replicas whose clocks disagree shift the window's edges by their skew.
- In-process windows are per process: several workers or replicas without Redis each allow the
  full budget.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from functools import lru_cache
from typing import Annotated, Any

import redis.asyncio
from fastapi import Depends, Request
from limits import RateLimitItem, RateLimitItemPerHour, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.config import GatewaySettings
from gateway.dependencies import Caller, Editor
from gateway.errors import ApiError
from gateway.keys import Principal

log = logging.getLogger(__name__)

# Where the dependency leaves this request's headers for the middleware, in scope["state"].
STATE_KEY = "rate_limit_headers"
WARN_EVERY_S = 30.0
# After Redis fails, requests skip it (unlimited) this long before it is tried again.
STORE_RETRY_S = 5.0
# Generous enough that a busy event loop is not taken for a dead Redis.
REDIS_TIMEOUT_S = 1.0
_REDIS_SCHEMES = {"redis": "async+redis", "rediss": "async+rediss", "unix": "async+redis+unix"}
_WINDOWS = ("minute", "hour")


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the limiter says about one request.

    ``headers`` is empty when the limits are unknown (the store is unreachable: fail open).
    ``retry_after`` (seconds, >= 1), ``window`` ("minute" or "hour") and ``limit`` say, when the
    request is refused, which window refused it and when to try again.
    """

    allowed: bool
    headers: dict[str, str]
    retry_after: int | None = None
    window: str | None = None
    limit: int | None = None


@dataclasses.dataclass(frozen=True)
class _Snapshot:
    limit: int
    remaining: int
    reset_at: float  # epoch seconds when the oldest request counted leaves the window


@lru_cache(maxsize=256)
def _item(window: str, amount: int) -> RateLimitItem:
    return RateLimitItemPerMinute(amount) if window == "minute" else RateLimitItemPerHour(amount)


class RateLimiter:
    """Moving-minute and moving-hour budgets per API key, in memory or in Redis."""

    def __init__(
        self,
        *,
        per_minute: int = 100,
        per_hour: int = 1000,
        redis_url: str | None = None,
        key_prefix: str = "scribe:ratelimit",
    ) -> None:
        self.per_minute = per_minute
        self.per_hour = per_hour
        self._pool: redis.asyncio.ConnectionPool | None = None
        self._storage: Storage
        if redis_url:
            self._storage, self._pool = _redis_storage(redis_url, key_prefix)
            # Store failures that mean "serve without limits"; none in memory, where any is a bug.
            self._store_errors: tuple[type[BaseException], ...] = (StorageError, RedisError, OSError)
        else:
            self._storage = MemoryStorage()
            self._store_errors = ()
        self.backend = "redis" if redis_url else "memory"
        self._strategy = MovingWindowRateLimiter(self._storage)
        self._skip_store_until = 0.0
        self._last_warning = -math.inf
        self._unlimited_since_warning = 0
        self._store_failing = False

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> RateLimiter:
        """The limiter the settings describe; an empty ``SCRIBE_REDIS_URL`` means in process."""
        url = settings.redis_url.get_secret_value().strip() if settings.redis_url else ""
        limiter = cls(
            per_minute=settings.rate_limit_per_minute,
            per_hour=settings.rate_limit_per_hour,
            redis_url=url or None,
            key_prefix=settings.rate_limit_key_prefix,
        )
        log.info(
            "rate limits per API key",
            extra={"store": limiter.backend, "per_minute": limiter.per_minute, "per_hour": limiter.per_hour},
        )
        return limiter

    def limits_for(self, principal: Principal) -> dict[str, int]:
        """The key's own limits where it has them, else the defaults."""
        return {
            "minute": self.per_minute if principal.limit_per_minute is None else principal.limit_per_minute,
            "hour": self.per_hour if principal.limit_per_hour is None else principal.limit_per_hour,
        }

    async def check(self, principal: Principal) -> Decision:
        """Count one request of this key, or refuse it; fails open when the store is unreachable."""
        if time.monotonic() < self._skip_store_until:
            return self._unlimited()
        try:
            decision = await self._check(principal)
        except self._store_errors as exc:
            self._skip_store_until = time.monotonic() + STORE_RETRY_S
            return self._unlimited(exc)
        if self._store_failing:
            self._store_failing = False
            log.info("rate-limit store reachable again; limits enforced")
        return decision

    async def close(self) -> None:
        """Release the store: Redis connections, or the in-memory expiry task."""
        if self._pool is not None:
            await self._pool.aclose()
        timer = getattr(self._storage, "timer", None)
        if timer is not None and not timer.done():
            timer.cancel()

    async def _check(self, principal: Principal) -> Decision:
        # No await between steps may yield in memory except a contended lock, so in process each
        # hit and the read that follows it are one step; in Redis each is a round trip.
        key = principal.key_id
        items = {window: _item(window, amount) for window, amount in self.limits_for(principal).items()}
        snapshots = {window: await self._snapshot(item, key) for window, item in items.items()}
        exhausted = [window for window in _WINDOWS if snapshots[window].remaining <= 0]
        if exhausted:
            # Refused without a hit: the other window is not consumed. Wait for the later reset.
            return self._refused(max(exhausted, key=lambda window: snapshots[window].reset_at), snapshots)
        # Tightest window first: the race left (see the module's docstring) can only waste a slot
        # of the window hit first, and only when the second runs out between the test and the hit.
        for window in sorted(_WINDOWS, key=lambda window: snapshots[window].remaining):
            if not await self._strategy.hit(items[window], key):
                for other in _WINDOWS:
                    snapshots[other] = await self._snapshot(items[other], key)
                snapshots[window] = dataclasses.replace(snapshots[window], remaining=0)
                return self._refused(window, snapshots)
            snapshots[window] = await self._snapshot(items[window], key)
        return Decision(allowed=True, headers=_headers(snapshots))

    async def _snapshot(self, item: RateLimitItem, key: str) -> _Snapshot:
        stats = await self._strategy.get_window_stats(item, key)
        remaining = max(0, min(item.amount, stats.remaining))
        if remaining >= item.amount:
            # Nothing counted: a window starting now (memory may hold an expired entry's time).
            reset = time.time() + item.get_expiry()
        else:
            reset = stats.reset_time
        return _Snapshot(limit=item.amount, remaining=remaining, reset_at=reset)

    def _refused(self, window: str, snapshots: dict[str, _Snapshot]) -> Decision:
        snapshot = snapshots[window]
        retry_after = max(1, math.ceil(snapshot.reset_at - time.time()))
        return Decision(
            allowed=False,
            headers=_headers(snapshots),
            retry_after=retry_after,
            window=window,
            limit=snapshot.limit,
        )

    def _unlimited(self, error: BaseException | None = None) -> Decision:
        self._unlimited_since_warning += 1
        if error is not None:
            self._store_failing = True
            now = time.monotonic()
            if now - self._last_warning >= WARN_EVERY_S:
                self._last_warning = now
                log.warning(
                    "rate-limit store unreachable; serving without rate limits",
                    extra={
                        "error": f"{type(error).__name__}: {error}",
                        "unlimited_requests": self._unlimited_since_warning,
                    },
                )
                self._unlimited_since_warning = 0
        return Decision(allowed=True, headers={})


def _redis_storage(url: str, key_prefix: str) -> tuple[RedisStorage, redis.asyncio.ConnectionPool]:
    """``limits``' Redis storage on redis-py's asyncio client, over a pool this module owns.

    Short timeouts and no retries: a Redis that does not answer should cost a request little
    before it is served unlimited.
    """
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in _REDIS_SCHEMES:
        # Not the URL itself in the message: it may hold a password.
        raise ValueError("SCRIBE_REDIS_URL must start with redis://, rediss:// or unix://")
    pool = redis.asyncio.ConnectionPool.from_url(
        url,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        socket_timeout=REDIS_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )
    storage = RedisStorage(
        f"{_REDIS_SCHEMES[scheme]}://{rest}",
        implementation="redispy",
        key_prefix=key_prefix,
        wrap_exceptions=True,
        connection_pool=pool,  # type: ignore[arg-type]
    )
    return storage, pool


def _headers(snapshots: dict[str, _Snapshot]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for window in _WINDOWS:
        snapshot, title = snapshots[window], window.capitalize()
        headers[f"X-RateLimit-Limit-{title}"] = str(snapshot.limit)
        headers[f"X-RateLimit-Remaining-{title}"] = str(snapshot.remaining)
        headers[f"X-RateLimit-Reset-{title}"] = str(math.ceil(snapshot.reset_at))
    return headers


def too_many_requests(decision: Decision) -> ApiError:
    """The 429 envelope of a refused request, with its limit headers and Retry-After."""
    return ApiError(
        429,
        "RATE_LIMIT_EXCEEDED",
        "Rate limit exceeded",
        {"window": decision.window, "limit": decision.limit, "retry_after_s": decision.retry_after},
        headers={**decision.headers, "Retry-After": str(decision.retry_after)},
    )


def get_rate_limiter(request: Request) -> RateLimiter:
    """The limiter opened by the lifespan."""
    return request.app.state.rate_limiter


async def _enforce(request: Request, principal: Principal) -> Principal:
    state: dict[str, Any] = request.scope.setdefault("state", {})
    if STATE_KEY in state:
        return principal  # already counted for this request (a route with two limited dependencies)
    decision = await get_rate_limiter(request).check(principal)
    state[STATE_KEY] = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in
                        decision.headers.items()]
    if not decision.allowed:
        raise too_many_requests(decision)
    return principal


async def rate_limited_caller(request: Request, principal: Caller) -> Principal:
    """Any valid key, counted against its rate limits (401 first, uncounted)."""
    return await _enforce(request, principal)


async def rate_limited_editor(request: Request, principal: Editor) -> Principal:
    """A key of role editor or above, counted against its rate limits (401/403 first, uncounted)."""
    return await _enforce(request, principal)


Limited = Annotated[Principal, Depends(rate_limited_caller)]
LimitedEditor = Annotated[Principal, Depends(rate_limited_editor)]


class RateLimitHeadersMiddleware:
    """Add the limit headers a limited route's dependency left in ``scope["state"]`` to its answer.

    Pure ASGI, so that every response of the request gets them, whoever writes it: the route,
    an exception handler (the 429 itself, a 404 or 400 raised after the check, a 503 from a
    backend) or the 500 of an unexpected error. Headers the response already has are left alone.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Created here so that the dependency writes into this very dict whatever copies the scope.
        state: dict[str, Any] = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and state.get(STATE_KEY):
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend((name, value) for name, value in state[STATE_KEY] if name not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
