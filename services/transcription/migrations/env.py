"""Alembic environment of the transcription database."""

from common.migrations_env import run
from services.transcription.models import Base

run(Base.metadata)
