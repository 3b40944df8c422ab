"""Tenants and API keys: generation, hashing, lookup, and the default tenant's bootstrap key.

A key is ``sk_live_`` (or ``sk_test_``) followed by 32 URL-safe random characters. Only its
sha256 hex digest is stored, with a short visible prefix so that a person can tell keys apart in
a listing; the key itself is shown once, when it is made, and never logged.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import logging
import secrets
import sys
import uuid
from dataclasses import dataclass
from typing import TextIO

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


class ApiKeyStore:
    """Reads and writes tenants and keys in the gateway's database."""

    def __init__(self, session_maker: async_sessionmaker[AsyncSession]) -> None:
        self.session_maker = session_maker

    async def authenticate(self, key: str) -> Principal | None:
        """The principal of a valid key; None when it is unknown, revoked or expired."""
        if not key:
            return None
        async with self.session_maker() as session:
            row = await session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == hash_api_key(key)))
        if row is None or not _usable(row, utcnow()):
            return None
        return Principal(tenant_id=row.tenant_id, role=Role(row.role), key_id=row.id)

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

    async def create_key(
        self,
        tenant_id: str,
        role: Role,
        *,
        name: str = "",
        key: str | None = None,
        expires_at: dt.datetime | None = None,
    ) -> tuple[str, ApiKeyRow]:
        """Store a key (a new random one unless ``key`` is given); returns the key and its row."""
        key = key or generate_api_key()
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
        )
        async with self.session_maker() as session, session.begin():
            session.add(row)
        return key, row

    async def revoke_key(self, key_id: str) -> bool:
        """Revoke a key by id; False when there is no such key or it was already revoked."""
        async with self.session_maker() as session, session.begin():
            row = await session.get(ApiKeyRow, key_id)
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = utcnow()
            return True

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
