"""Alembic environment of the query database."""

from common.migrations_env import run
from services.query.models import Base

run(Base.metadata)
