"""Start the whole system the way ``make run`` does (``python -m common.launcher``), for tests.

The launcher runs as a subprocess with its own data folder and free ports; the helper waits until
the gateway's /readyz answers, and stops it with SIGTERM (as Ctrl-C does), checking it exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from common.broker import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class RunningSystem:
    process: subprocess.Popen
    data_dir: Path
    base_url: str
    api_key: str

    def state(self) -> dict:
        return json.loads((self.data_dir / "run" / "stack.json").read_text())

    def pid(self, component: str) -> int:
        return self.state()["children"][component]["pid"]

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"X-API-KEY": self.api_key}, timeout=timeout)

    def logs(self, component: str) -> str:
        path = self.data_dir / "logs" / f"{component}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout_s: float = 90) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def start_system(data_dir: Path, model_dir: Path | None = None, extra_env: dict[str, str] | None = None,
                 ready_timeout_s: float = 240, profile: str = "embedded") -> RunningSystem:
    """``profile`` is the launcher's: ``embedded`` (SQLite, local blobs) or ``prod`` (PostgreSQL, S3)."""
    port = free_port()
    api_key = "sk_test_e2e_" + os.urandom(8).hex()
    env = {
        **os.environ,
        "SCRIBE_DATA_DIR": str(data_dir),
        "SCRIBE_HTTP_PORT": str(port),
        "SCRIBE_BOOTSTRAP_API_KEY": api_key,
        "PYTHONPATH": str(REPO),
    }
    for inherited in ("SCRIBE_KAFKA_BOOTSTRAP", "SCRIBE_PROFILE", "SCRIBE_BLOB_BACKEND", "SCRIBE_BLOB_S3_BUCKET",
                      "SCRIBE_BLOB_ENCRYPTION_KEY"):
        env.pop(inherited, None)
    if model_dir is not None:
        env["SCRIBE_TRANSCRIPTION_MODEL_DIR"] = str(model_dir)
    env.update(extra_env or {})
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "launcher.out", "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "common.launcher", "--profile", profile],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    system = RunningSystem(process, data_dir, f"http://127.0.0.1:{port}", api_key)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"launcher exited {process.returncode}: {(data_dir / 'launcher.out').read_text()}")
        try:
            if httpx.get(f"{system.base_url}/readyz", timeout=2).status_code == 200:
                return system
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    system.stop()
    raise TimeoutError(f"system not ready in {ready_timeout_s}s; see {data_dir}/logs")


def wait_terminal(client: httpx.Client, note_id: str, timeout_s: float = 240) -> str:
    """Poll the status endpoint until completed or failed; return the status."""
    deadline = time.monotonic() + timeout_s
    status = "?"
    while time.monotonic() < deadline:
        response = client.get(f"/notes/v1/notes/{note_id}/status")
        if response.status_code == 503:  # a backend restarting: the envelope says try again shortly
            time.sleep(0.5)
            continue
        assert response.status_code == 200, response.text
        status = response.json()["data"]["status"]
        if status in ("completed", "failed"):
            return status
        time.sleep(0.5)
    raise TimeoutError(f"note {note_id} still {status} after {timeout_s}s")
