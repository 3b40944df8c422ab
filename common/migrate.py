"""``python -m common.migrate``: bring every database to its newest Alembic revision, then exit.

The Kubernetes migration Job (deploy/base/migrate-job.yaml) runs it before a rollout, so that new
pods start against a schema that is already there. Each database is found exactly as its owner
finds it at start-up (``SCRIBE_<SERVICE>_DATABASE_URL``, else a SQLite file under
``SCRIBE_DATA_DIR``) and migrated with the same :func:`common.db.migrate` the services run
themselves, so running it twice, or a service starting after it, is a no-op.

    python -m common.migrate                     # every service and the gateway
    python -m common.migrate ingestion gateway   # only these

Exit status: 0 all migrated, 1 one failed (the others are still tried), 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.engine import make_url

from common.db import migrate
from common.logs import configure_logging
from common.settings import ServiceSettings

log = logging.getLogger(__name__)

# Owner of a database -> (module of its settings class, class name, package holding migrations/).
# The gateway's admin settings are the part of the gateway's settings that locate its database
# (the full GatewaySettings also demand the backends' addresses, which a migration does not need).
DATABASES: dict[str, tuple[str, str, str]] = {
    "ingestion": ("services.ingestion.config", "IngestionSettings", "services.ingestion"),
    "transcription": ("services.transcription.config", "TranscriptionSettings", "services.transcription"),
    "notegen": ("services.notegen.config", "NotegenSettings", "services.notegen"),
    "query": ("services.query.config", "QuerySettings", "services.query"),
    "gateway": ("gateway.admin", "AdminSettings", "gateway"),
}


def settings_for(name: str) -> ServiceSettings:
    """The owner's settings, read from the environment as the owner reads them."""
    module, cls_name, _ = DATABASES[name]
    return getattr(importlib.import_module(module), cls_name)()


def migrations_for(name: str) -> Path:
    """The owner's Alembic script folder (``<package>/migrations``), without importing its server."""
    package = importlib.import_module(DATABASES[name][2])
    return Path(package.__file__).parent / "migrations"


def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL fails in migrate(); never echo it whole
        return "<unparsable database URL>"


async def migrate_all(names: Sequence[str]) -> list[str]:
    """Migrate each named database in turn; return the names that failed."""
    failed = []
    for name in names:
        try:
            url = settings_for(name).resolved_database_url()
            log.info("migrating", extra={"database": name, "url": redacted(url)})
            await migrate(url, migrations_for(name))
            log.info("migrated", extra={"database": name})
        except Exception:
            log.exception("migration failed", extra={"database": name})
            failed.append(name)
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.migrate", description=__doc__.splitlines()[0])
    parser.add_argument("databases", nargs="*", metavar="DATABASE", help=f"default all: {', '.join(DATABASES)}")
    args = parser.parse_args(argv)
    unknown = [name for name in args.databases if name not in DATABASES]
    if unknown:
        parser.error(f"unknown database {', '.join(unknown)}; choose from {', '.join(DATABASES)}")
    names = list(dict.fromkeys(args.databases)) or list(DATABASES)
    configure_logging("migrate", ServiceSettings().log_level)
    failed = asyncio.run(migrate_all(names))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
