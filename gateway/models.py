"""The gateway's own tables: tenants and their API keys (only a hash of each key is stored)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.db import UTCDateTime


class Base(DeclarativeBase):
    metadata = MetaData()


class TenantRow(Base):
    """A clinic (or any account) whose notes are isolated from every other tenant's."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)


class ApiKeyRow(Base):
    """One API key of a tenant: its sha256 hex digest, never the key itself."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.id"), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    # The first characters of the key ("sk_live_AbCd"), enough for a person to tell keys apart.
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # This key's own rate limits (requests per minute / per hour); NULL means the deployment's defaults.
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rate_limit_per_hour: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (Index("ix_api_keys_tenant", "tenant_id"),)
