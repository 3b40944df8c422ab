"""Alembic environment of the ingestion database."""

from common.migrations_env import run
from services.ingestion.models import Base

run(Base.metadata)
