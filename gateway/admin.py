"""``scribe-admin``: manage the gateway's tenants and API keys from the command line.

It opens the gateway's own database exactly as the gateway finds it (``SCRIBE_GATEWAY_DATABASE_URL``,
else ``<SCRIBE_DATA_DIR>/gateway.db``) and brings it to the newest migration first; it needs none
of the backend addresses the gateway itself requires. Examples::

    scribe-admin tenant create clinic-a --name "Clinic A"
    scribe-admin tenant list [--json]
    scribe-admin key create --tenant clinic-a --role editor --name "front desk" --per-minute 120
    scribe-admin key list [--tenant clinic-a] [--json]
    scribe-admin key revoke KEY_ID
    scribe-admin key limits KEY_ID --per-minute 60 --per-hour none

``key create`` prints the new key once, on stdout; it is stored only as a sha256 digest and is
never logged, so it cannot be shown again. Listings show a key's visible prefix, never the key or
its digest. A running gateway notices a revoke or limit change made here within its key cache's
TTL (a few seconds).

Exit status: 0 done, 1 refused (unknown tenant or key, duplicate tenant, database error) with one
line on stderr, 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from pydantic_settings import SettingsConfigDict
from sqlalchemy.exc import SQLAlchemyError

from common.db import create_engine, migrate, session_factory, utcnow
from common.settings import ServiceSettings
from gateway.keys import MAX_LIMIT, ApiKeyStore, KeyInfo, KeyStoreError, Role, TenantInfo, check_tenant_id

MIGRATIONS = Path(__file__).parent / "migrations"
PROG = "scribe-admin"
MAX_DAYS = 36_500


class AdminSettings(ServiceSettings):
    """The part of the gateway's settings the admin tool needs: where its database is."""

    model_config = SettingsConfigDict(env_prefix="SCRIBE_GATEWAY_", extra="ignore", populate_by_name=True)

    service_name: str = "gateway"


class _Refused(Exception):
    """A command that cannot be done; exit status 1 with the message."""


# ---- argument types (a bad value is a usage error, exit 2) ----


def _tenant_id(value: str) -> str:
    try:
        return check_tenant_id(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if not 1 <= number <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {MAX_LIMIT}, got {value!r}")
    return number


def _days(value: str) -> int:
    days = _positive_int(value)
    if days > MAX_DAYS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_DAYS} days, got {value!r}")
    return days


def _limit_or_none(value: str) -> int | None:
    if value.strip().lower() in ("none", "default"):
        return None
    return _positive_int(value)


def _timestamp(value: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 date-time, got {value!r}") from None
    # A time without an offset is taken as UTC.
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Manage the Scribe gateway's tenants and API keys (in the gateway's own database).",
    )
    areas = parser.add_subparsers(dest="area", metavar="{tenant,key}", required=True)

    tenant = areas.add_parser("tenant", help="tenants").add_subparsers(dest="command", required=True)
    tenant_create = tenant.add_parser("create", help="create a tenant")
    tenant_create.add_argument("tenant_id", metavar="ID", type=_tenant_id, help="1-64 characters of A-Z a-z 0-9 _ -")
    tenant_create.add_argument("--name", help="display name (default: the id)")
    tenant_create.add_argument("--json", action="store_true", help="print the tenant as JSON")
    tenant_list = tenant.add_parser("list", help="list tenants")
    tenant_list.add_argument("--json", action="store_true", help="print JSON")

    key = areas.add_parser("key", help="API keys").add_subparsers(dest="command", required=True)
    key_create = key.add_parser("create", help="create a key and print it once")
    key_create.add_argument("--tenant", required=True, type=_tenant_id, help="the tenant the key belongs to")
    key_create.add_argument("--role", required=True, choices=[role.value for role in Role])
    key_create.add_argument("--name", default="", help="a label to tell keys apart")
    key_create.add_argument("--test", action="store_true", help="an sk_test_ key rather than sk_live_")
    expiry = key_create.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in-days", type=_days, metavar="D", help="expire D days from now")
    expiry.add_argument(
        "--expires-at", type=_timestamp, metavar="ISO8601", help="expire then (UTC unless an offset is given)"
    )
    key_create.add_argument("--per-minute", type=_positive_int, metavar="N", help="this key's requests per minute")
    key_create.add_argument("--per-hour", type=_positive_int, metavar="N", help="this key's requests per hour")
    key_create.add_argument("--json", action="store_true", help="print the key and its details as JSON")

    key_list = key.add_parser("list", help="list keys (prefix only, never the key)")
    key_list.add_argument("--tenant", type=_tenant_id, help="only this tenant's keys")
    key_list.add_argument("--json", action="store_true", help="print JSON")

    key_revoke = key.add_parser("revoke", help="revoke a key")
    key_revoke.add_argument("key_id", metavar="KEY_ID")

    key_limits = key.add_parser("limits", help="set a key's rate limits ('none': the deployment's default)")
    key_limits.add_argument("key_id", metavar="KEY_ID")
    # SUPPRESS: an option not given leaves no attribute, so it keeps the key's current value.
    key_limits.add_argument("--per-minute", type=_limit_or_none, metavar="N|none", default=argparse.SUPPRESS)
    key_limits.add_argument("--per-hour", type=_limit_or_none, metavar="N|none", default=argparse.SUPPRESS)
    key_limits.add_argument("--json", action="store_true", help="print the key as JSON")

    return parser


# ---- output ----


def _table(rows: list[list[str]], headers: list[str], out: TextIO) -> None:
    widths = [max([len(header), *(len(row[i]) for row in rows)]) for i, header in enumerate(headers)]
    for row in [headers, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out)


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else "-"


def _limit(value: int | None) -> str:
    return str(value) if value is not None else "default"


def _print_tenants(tenants: list[TenantInfo], as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json.dumps([tenant.as_dict() for tenant in tenants], indent=2), file=out)
        return
    _table([[t.id, t.name, _when(t.created_at)] for t in tenants], ["ID", "NAME", "CREATED"], out)


def _print_keys(keys: list[KeyInfo], as_json: bool, out: TextIO) -> None:
    now = utcnow()
    if as_json:
        print(json.dumps([key.as_dict(now) for key in keys], indent=2), file=out)
        return
    _table(
        [
            [
                k.id,
                k.tenant_id,
                k.prefix,
                k.role.value,
                k.status(now),
                _limit(k.limit_per_minute),
                _limit(k.limit_per_hour),
                _when(k.created_at),
                _when(k.expires_at),
                _when(k.revoked_at),
                k.name,
            ]
            for k in keys
        ],
        ["ID", "TENANT", "PREFIX", "ROLE", "STATUS", "PER_MIN", "PER_HOUR", "CREATED", "EXPIRES", "REVOKED", "NAME"],
        out,
    )


# ---- commands ----


async def _run(args: argparse.Namespace, store: ApiKeyStore, out: TextIO, err: TextIO) -> None:
    command = (args.area, args.command)
    if command == ("tenant", "create"):
        tenant = await store.create_tenant(args.tenant_id, args.name if args.name is not None else args.tenant_id)
        if args.json:
            print(json.dumps(tenant.as_dict(), indent=2), file=out)
        else:
            print(f"created tenant {tenant.id}", file=out)
    elif command == ("tenant", "list"):
        _print_tenants(await store.list_tenants(), args.json, out)
    elif command == ("key", "create"):
        expires_at = args.expires_at
        if args.expires_in_days is not None:
            expires_at = utcnow() + dt.timedelta(days=args.expires_in_days)
        key, row = await store.create_key(
            args.tenant,
            Role(args.role),
            name=args.name,
            expires_at=expires_at,
            limit_per_minute=args.per_minute,
            limit_per_hour=args.per_hour,
            live=not args.test,
        )
        if args.json:
            print(json.dumps({**KeyInfo.of(row).as_dict(), "key": key}, indent=2), file=out)
        else:
            print(f"id:  {row.id}", file=out)
            print(f"key: {key}", file=out)
        print("Store this key now: it is shown only this once and cannot be recovered.", file=err)
    elif command == ("key", "list"):
        _print_keys(await store.list_keys(args.tenant), args.json, out)
    elif command == ("key", "revoke"):
        info = await store.get_key(args.key_id)
        if info is None:
            raise _Refused(f"unknown key {args.key_id!r}")
        if await store.revoke_key(args.key_id):
            print(f"revoked key {args.key_id}", file=out)
        else:
            print(f"key {args.key_id} was already revoked", file=out)
    elif command == ("key", "limits"):
        info = await store.get_key(args.key_id)
        if info is None:
            raise _Refused(f"unknown key {args.key_id!r}")
        per_minute = getattr(args, "per_minute", info.limit_per_minute)
        per_hour = getattr(args, "per_hour", info.limit_per_hour)
        info = await store.set_key_limits(args.key_id, per_minute, per_hour)
        if args.json:
            print(json.dumps(info.as_dict(), indent=2), file=out)
        else:
            print(
                f"key {info.id}: {_limit(info.limit_per_minute)} per minute, {_limit(info.limit_per_hour)} per hour",
                file=out,
            )
    else:  # pragma: no cover - argparse allows nothing else
        raise AssertionError(command)


async def _main_async(args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    url = AdminSettings().resolved_database_url()
    await migrate(url, MIGRATIONS)
    engine = create_engine(url)
    try:
        # No cache: each run is one short process, and a listing must show what is stored now.
        await _run(args, ApiKeyStore(session_factory(engine), cache_ttl_s=0), out, err)
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one command; returns (and, as the console script, exits with) its status."""
    out, err = out or sys.stdout, err or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    command = (args.area, args.command)
    if command == ("key", "limits") and not (hasattr(args, "per_minute") or hasattr(args, "per_hour")):
        parser.error("key limits: give --per-minute and/or --per-hour")
    if command == ("tenant", "create") and args.name is not None and not args.name.strip():
        parser.error("--name must not be empty")
    if command == ("key", "create") and args.expires_at is not None and args.expires_at <= utcnow():
        parser.error("--expires-at is in the past")
    # Warnings only, on stderr; nothing this tool logs carries a key.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format=f"{PROG}: %(levelname)s %(message)s")
    try:
        asyncio.run(_main_async(args, out, err))
    except (KeyStoreError, _Refused) as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return 1
    except ValueError as exc:  # a value the store refused that the argument checks let through
        print(f"{PROG}: error: {exc}", file=err)
        return 2
    except (SQLAlchemyError, OSError) as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        print(f"{PROG}: error: database: {type(exc).__name__}: {first_line}", file=err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
