"""Alembic environment of the note generation database."""

from common.migrations_env import run
from services.notegen.models import Base

run(Base.metadata)
