"""Tenants and API keys: generation, hashing, lookup, administration, and the bootstrap key.

A key is ``sk_live_`` (or ``sk_test_``) followed by 32 URL-safe random characters. Only its
sha256 hex digest is stored, with a short visible prefix so that a person can tell keys apart in
a listing; the key itself is shown once, when it is made, and never logged. Nothing this module
returns for listing (:class:`KeyInfo`, :class:`TenantInfo`) carries the digest either.

Each key may carry its own rate limits (requests per minute and per hour); None means the
deployment's defaults. :meth:`ApiKeyStore.authenticate` answers from a short-lived in-process
cache so that clients polling every few seconds do not cost a database query each.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import hashlib
import logging
import re
import secrets
import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.db import utcnow
from gateway.models import ApiKeyRow, TenantRow

log = logging.getLogger(__name__)

DEFAULT_TENANT_ID = "default"
BOOTSTRAP_KEY_NAME = "bootstrap"
KEY_RANDOM_BYTES = 24  # 24 random bytes are 32 URL-safe base64 characters
VISIBLE_PREFIX_CHARS = 12
TENANT_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_NAME_CHARS = 255
MAX_LIMIT = 2**31 - 1  # the rate-limit columns are 32-bit integers on PostgreSQL

DEFAULT_CACHE_TTL_S = 5.0
DEFAULT_NEGATIVE_CACHE_TTL_S = 1.0
DEFAULT_CACHE_MAX_ENTRIES = 10_000


class Role(enum.StrEnum):
    """What a key may do; each role may do everything the roles below it may."""

    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]


_RANKS = {Role.VIEWER: 0, Role.EDITOR: 1, Role.ADMIN: 2}


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant a valid key belongs to and the key's role."""

    tenant_id: str
    role: Role
    key_id: str
    # This key's own rate limits; None means the deployment's defaults.
    limit_per_minute: int | None = None
    limit_per_hour: int | None = None

    def may(self, needed: Role) -> bool:
        """True when this key's role is ``needed`` or above."""
        return self.role.rank >= needed.rank


def generate_api_key(live: bool = True) -> str:
    """A new random key, ``sk_live_...`` or ``sk_test_...``."""
    return ("sk_live_" if live else "sk_test_") + secrets.token_urlsafe(KEY_RANDOM_BYTES)


def hash_api_key(key: str) -> str:
    """The sha256 hex digest under which a key is stored and looked up."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def visible_prefix(key: str) -> str:
    """The start of a key that listings may show ("sk_live_AbCd")."""
    return key[:VISIBLE_PREFIX_CHARS]


class KeyStoreError(Exception):
    """A request the store refuses; the message is one line, fit to show an operator."""


class TenantExists(KeyStoreError):
    """``create_tenant`` for an id that is taken."""


class UnknownTenant(KeyStoreError):
    """No tenant has this id."""


class UnknownKey(KeyStoreError):
    """No key has this id."""


@dataclass(frozen=True)
class TenantInfo:
    """A tenant as listings show it."""

    id: str
    name: str
    created_at: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "created_at": self.created_at.isoformat()}


@dataclass(frozen=True)
class KeyInfo:
    """A key as listings show it: everything but the key and its digest."""

    id: str
    tenant_id: str
    prefix: str
    name: str
    role: Role
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    limit_per_minute: int | None
    limit_per_hour: int | None

    @classmethod
    def of(cls, row: ApiKeyRow) -> KeyInfo:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            prefix=row.prefix,
            name=row.name,
            role=Role(row.role),
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            limit_per_minute=row.rate_limit_per_minute,
            limit_per_hour=row.rate_limit_per_hour,
        )

    def status(self, now: dt.datetime | None = None) -> str:
        """``revoked``, ``expired`` or ``active``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or utcnow()):
            return "expired"
        return "active"

    def as_dict(self, now: dt.datetime | None = None) -> dict[str, Any]:
        def iso(value: dt.datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "prefix": self.prefix,
            "name": self.name,
            "role": self.role.value,
            "status": self.status(now),
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
            "limit_per_minute": self.limit_per_minute,
            "limit_per_hour": self.limit_per_hour,
        }


def check_tenant_id(tenant_id: str) -> str:
    """The tenant id if it is 1-64 characters of ``[A-Za-z0-9_-]``; ValueError otherwise."""
    if not isinstance(tenant_id, str) or not TENANT_ID_PATTERN.fullmatch(tenant_id):
        raise ValueError(f"invalid tenant id {tenant_id!r}: expected 1-64 characters of A-Z a-z 0-9 _ -")
    return tenant_id


def check_limit(value: int | None, what: str) -> int | None:
    """A rate limit if it is None (the deployment's default) or a positive 32-bit int; ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise ValueError(f"{what} must be a whole number from 1 to {MAX_LIMIT}, got {value!r}")
    return value


def _check_name(name: str, what: str, *, required: bool) -> str:
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS or (required and not name.strip()):
        raise ValueError(f"{what} must be {'1' if required else '0'}-{MAX_NAME_CHARS} characters")
    return name


@dataclass(slots=True)
class _CacheEntry:
    principal: Principal | None
    fresh_until: float  # on the store's monotonic clock
    expires_at: dt.datetime | None  # the key's own expiry, wall clock


class _BoundedCache:
    """Entries by key digest, dropped when stale; past ``max_entries`` the oldest go first."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, _CacheEntry] = OrderedDict()

    def get(self, digest: str, now: float) -> _CacheEntry | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry.fresh_until <= now or (entry.expires_at is not None and entry.expires_at <= utcnow()):
            self._entries.pop(digest, None)
            return None
        return entry

    def put(self, digest: str, entry: _CacheEntry) -> None:
        self._entries.pop(digest, None)
        self._entries[digest] = entry
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def discard(self, digest: str) -> None:
        self._entries.pop(digest, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class ApiKeyStore:
    """Reads and writes tenants and keys in the gateway's database.

    ``authenticate`` is cached in this process, by the key's sha256 digest: a valid key's answer
    for ``cache_ttl_s`` seconds (never past the key's own ``expires_at``), an unknown, revoked or
    expired key's for ``negative_cache_ttl_s`` (at most ``cache_ttl_s``), so that neither polling
    clients nor a flood of bad keys reach the database on every request. Valid and invalid answers
    are kept apart, each bounded to ``cache_max_entries`` (oldest dropped first), so a flood of bad
    keys cannot push the valid ones out. Concurrent lookups of one key share a single query.
    ``cache_ttl_s=0`` turns the cache off.

    Consistency: a revoke, limit change or new key made through *this* store object takes effect
    at once. A change made anywhere else (another gateway replica, the ``scribe-admin`` tool, or
    the database directly) takes effect within ``cache_ttl_s`` seconds here, once the cached answer
    goes stale; a newly created key may be refused for up to ``negative_cache_ttl_s`` if it was
    presented (and refused) just before it was created.
    """

    def __init__(
        self,
        session_maker: async_sessionmaker[AsyncSession],
        cache_ttl_s: float = DEFAULT_CACHE_TTL_S,
        *,
        negative_cache_ttl_s: float = DEFAULT_NEGATIVE_CACHE_TTL_S,
        cache_max_entries: int = DEFAULT_CACHE_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cache_ttl_s < 0 or negative_cache_ttl_s < 0:
            raise ValueError("cache TTLs must not be negative")
        if cache_max_entries < 1:
            raise ValueError("cache_max_entries must be at least 1")
        self.session_maker = session_maker
        self.cache_ttl_s = float(cache_ttl_s)
        self.negative_cache_ttl_s = min(float(negative_cache_ttl_s), self.cache_ttl_s)
        self._clock = clock
        self._valid = _BoundedCache(cache_max_entries)
        self._invalid = _BoundedCache(cache_max_entries)
        # Lookups under way, by digest, so that concurrent requests with one key share a query.
        self._inflight: dict[str, asyncio.Future[Principal | None]] = {}
        # Bumped by every invalidation; a lookup that began before one does not cache its answer,
        # which may have been read before the change committed.
        self._generation = 0

    async def authenticate(self, key: str) -> Principal | None:
        """The principal of a valid key; None when it is unknown, revoked or expired.

        Answers from the in-process cache when it can (see the class docstring): a key revoked
        through another store object, replica or the admin tool keeps working here for up to
        ``cache_ttl_s`` seconds; an expired key never does.
        """
        if not key:
            return None
        digest = hash_api_key(key)
        if self.cache_ttl_s <= 0:
            return await self._lookup(digest)
        now = self._clock()
        entry = self._valid.get(digest, now) or self._invalid.get(digest, now)
        if entry is not None:
            return entry.principal
        lookup = self._inflight.get(digest)
        if lookup is None:
            lookup = asyncio.ensure_future(self._lookup_and_cache(digest))
            self._inflight[digest] = lookup
            lookup.add_done_callback(lambda done, digest=digest: self._lookup_done(digest, done))
        # Shielded: one caller giving up (a client hanging up) must not cancel the others' answer.
        return await asyncio.shield(lookup)

    def invalidate_cache(self, digest: str | None = None) -> None:
        """Forget the cached answer for one key digest, or every answer when ``digest`` is None."""
        self._generation += 1
        if digest is None:
            self._valid.clear()
            self._invalid.clear()
            self._inflight.clear()
            return
        self._valid.discard(digest)
        self._invalid.discard(digest)
        self._inflight.pop(digest, None)

    def _lookup_done(self, digest: str, done: asyncio.Future[Principal | None]) -> None:
        if self._inflight.get(digest) is done:
            del self._inflight[digest]
        if not done.cancelled():
            done.exception()  # retrieved here, so a failure nobody awaited is not reported as lost

    async def _lookup_and_cache(self, digest: str) -> Principal | None:
        generation = self._generation
        principal, expires_at = await self._fetch(digest)
        if generation == self._generation:
            now = self._clock()
            if principal is not None:
                self._valid.put(digest, _CacheEntry(principal, now + self.cache_ttl_s, expires_at))
            elif self.negative_cache_ttl_s > 0:
                self._invalid.put(digest, _CacheEntry(None, now + self.negative_cache_ttl_s, None))
        return principal

    async def _lookup(self, digest: str) -> Principal | None:
        principal, _ = await self._fetch(digest)
        return principal

    async def _fetch(self, digest: str) -> tuple[Principal | None, dt.datetime | None]:
        async with self.session_maker() as session:
            row = await session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == digest))
        if row is None or not _usable(row, utcnow()):
            return None, None
        principal = Principal(
            tenant_id=row.tenant_id,
            role=Role(row.role),
            key_id=row.id,
            limit_per_minute=row.rate_limit_per_minute,
            limit_per_hour=row.rate_limit_per_hour,
        )
        return principal, row.expires_at

    async def ensure_tenant(self, tenant_id: str, name: str) -> None:
        """Create the tenant unless it exists (safe when several gateways start at once)."""
        async with self.session_maker() as session:
            if await session.get(TenantRow, tenant_id) is not None:
                return
            session.add(TenantRow(id=tenant_id, name=name, created_at=utcnow()))
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()  # another replica created it first

    async def create_tenant(self, tenant_id: str, name: str) -> TenantInfo:
        """A new tenant; TenantExists when the id is taken, ValueError for a malformed id or name."""
        check_tenant_id(tenant_id)
        _check_name(name, "tenant name", required=True)
        row = TenantRow(id=tenant_id, name=name, created_at=utcnow())
        try:
            async with self.session_maker() as session, session.begin():
                if await session.get(TenantRow, tenant_id) is not None:
                    raise TenantExists(f"tenant {tenant_id!r} already exists")
                session.add(row)
        except IntegrityError:
            raise TenantExists(f"tenant {tenant_id!r} already exists") from None  # created meanwhile
        return TenantInfo(id=row.id, name=row.name, created_at=row.created_at)

    async def list_tenants(self) -> list[TenantInfo]:
        """Every tenant, by id."""
        async with self.session_maker() as session:
            rows = (await session.scalars(select(TenantRow).order_by(TenantRow.id))).all()
        return [TenantInfo(id=row.id, name=row.name, created_at=row.created_at) for row in rows]

    async def list_keys(self, tenant_id: str | None = None) -> list[KeyInfo]:
        """Every key, or one tenant's (UnknownTenant if there is no such tenant); never a digest."""
        statement = select(ApiKeyRow).order_by(ApiKeyRow.tenant_id, ApiKeyRow.created_at, ApiKeyRow.id)
        async with self.session_maker() as session:
            if tenant_id is not None:
                if await session.get(TenantRow, tenant_id) is None:
                    raise UnknownTenant(f"unknown tenant {tenant_id!r}")
                statement = statement.where(ApiKeyRow.tenant_id == tenant_id)
            rows = (await session.scalars(statement)).all()
        return [KeyInfo.of(row) for row in rows]

    async def get_key(self, key_id: str) -> KeyInfo | None:
        """One key by id, or None."""
        async with self.session_maker() as session:
            row = await session.get(ApiKeyRow, key_id)
        return KeyInfo.of(row) if row is not None else None

    async def create_key(
        self,
        tenant_id: str,
        role: Role,
        *,
        name: str = "",
        key: str | None = None,
        expires_at: dt.datetime | None = None,
        limit_per_minute: int | None = None,
        limit_per_hour: int | None = None,
        live: bool = True,
    ) -> tuple[str, ApiKeyRow]:
        """Store a key (a new random one, ``sk_live_`` or with ``live=False`` ``sk_test_``, unless
        ``key`` is given); returns the key and its row. UnknownTenant when the tenant does not exist.
        """
        role = Role(role)
        _check_name(name, "key name", required=False)
        check_limit(limit_per_minute, "the per-minute limit")
        check_limit(limit_per_hour, "the per-hour limit")
        if expires_at is not None and expires_at.tzinfo is None:
            raise ValueError("expires_at must be timezone-aware")
        key = key or generate_api_key(live)
        row = ApiKeyRow(
            id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            key_hash=hash_api_key(key),
            prefix=visible_prefix(key),
            name=name,
            role=role.value,
            created_at=utcnow(),
            expires_at=expires_at,
            revoked_at=None,
            rate_limit_per_minute=limit_per_minute,
            rate_limit_per_hour=limit_per_hour,
        )
        async with self.session_maker() as session, session.begin():
            if await session.get(TenantRow, tenant_id) is None:
                raise UnknownTenant(f"unknown tenant {tenant_id!r}")
            session.add(row)
        self.invalidate_cache(row.key_hash)  # it may have been refused, and that answer cached, before
        return key, row

    async def revoke_key(self, key_id: str) -> bool:
        """Revoke a key by id; False when there is no such key or it was already revoked.

        The key stops working at once through this store; elsewhere within the cache TTL.
        """
        async with self.session_maker() as session, session.begin():
            row = await session.get(ApiKeyRow, key_id)
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = utcnow()
            digest = row.key_hash
        self.invalidate_cache(digest)
        return True

    async def set_key_limits(self, key_id: str, per_minute: int | None, per_hour: int | None) -> KeyInfo:
        """Set a key's rate limits (None: the deployment's default); UnknownKey if there is no such key.

        Takes effect at once through this store; elsewhere within the cache TTL.
        """
        check_limit(per_minute, "the per-minute limit")
        check_limit(per_hour, "the per-hour limit")
        async with self.session_maker() as session, session.begin():
            row = await session.get(ApiKeyRow, key_id)
            if row is None:
                raise UnknownKey(f"unknown key {key_id!r}")
            row.rate_limit_per_minute = per_minute
            row.rate_limit_per_hour = per_hour
            info = KeyInfo.of(row)
            digest = row.key_hash
        self.invalidate_cache(digest)
        return info

    async def bootstrap(self, configured_key: str | None, out: TextIO | None = None) -> None:
        """Make sure the default tenant exists and can be administered.

        With a configured key, that key is stored (hashed) as the default tenant's admin key unless
        it already is; a key an operator revoked stays revoked. Without one, a key is generated and
        printed once, as ``SCRIBE_BOOTSTRAP_API_KEY=...`` on stdout, only when the default tenant
        has no usable admin key yet, so restarts do not pile up keys.
        """
        await self.ensure_tenant(DEFAULT_TENANT_ID, "Default")
        if configured_key:
            await self._ensure_configured_key(configured_key)
            return
        async with self.session_maker() as session:
            admin_keys = (
                await session.scalars(
                    select(ApiKeyRow).where(
                        ApiKeyRow.tenant_id == DEFAULT_TENANT_ID, ApiKeyRow.role == Role.ADMIN.value
                    )
                )
            ).all()
        now = utcnow()
        if any(_usable(row, now) for row in admin_keys):
            log.info("the default tenant already has an admin key; none generated")
            return
        key, row = await self.create_key(DEFAULT_TENANT_ID, Role.ADMIN, name=BOOTSTRAP_KEY_NAME)
        # stdout, not the log: this one line is meant for the person or launcher starting Scribe.
        print(f"SCRIBE_BOOTSTRAP_API_KEY={key}", file=out or sys.stdout, flush=True)
        log.info("generated the default tenant's admin key", extra={"key_id": row.id})

    async def _ensure_configured_key(self, key: str) -> None:
        async with self.session_maker() as session:
            row = await session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == hash_api_key(key)))
        if row is not None:
            if row.revoked_at is not None:
                log.warning("the configured bootstrap key is revoked; it stays revoked")
            return
        try:
            _, row = await self.create_key(DEFAULT_TENANT_ID, Role.ADMIN, name=BOOTSTRAP_KEY_NAME, key=key)
        except IntegrityError:
            return  # another replica stored it first
        log.info("stored the configured bootstrap key", extra={"key_id": row.id})


def _usable(row: ApiKeyRow, now: dt.datetime) -> bool:
    return row.revoked_at is None and (row.expires_at is None or row.expires_at > now)
