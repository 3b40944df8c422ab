"""How many status polls per second the whole stack answers (GET /notes/v1/notes/{id}/status).

Starts the system as ``make run`` does (launcher, its own data folder), creates one note, then
drives the status route with wrk (apt: wrk) from a second process: N connections for D seconds.
Prints wrk's summary and the number of clients polling every 5 s that the rate would serve.

    .venv/bin/python bench/status_poll.py [--connections 64] [--duration 20]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.broker import free_port  # noqa: E402


def tone(path: Path, seconds: float = 2.0) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        frames = (int(8000 * math.sin(2 * math.pi * 440 * i / 16000)) for i in range(int(16000 * seconds)))
        out.writeframes(b"".join(struct.pack("<h", f) for f in frames))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    data = Path(tempfile.mkdtemp(prefix="scribe-bench-status-"))
    port = free_port()
    key = "sk_test_bench_" + os.urandom(8).hex()
    env = {**os.environ, "SCRIBE_DATA_DIR": str(data), "SCRIBE_HTTP_PORT": str(port),
           "SCRIBE_BOOTSTRAP_API_KEY": key, "PYTHONPATH": str(REPO)}
    launcher = subprocess.Popen([sys.executable, "-m", "common.launcher"], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            sys.exit("system not ready")
        with open(tone(data / "tone.wav"), "rb") as handle:
            created = httpx.post(f"{base}/notes/v1/notes", headers={"X-API-KEY": key},
                                 files={"audio": ("tone.wav", handle, "audio/wav")}, data={"name": "Bench"})
        note_id = created.json()["data"]["id"]
        url = f"{base}/notes/v1/notes/{note_id}/status"
        httpx.get(url, headers={"X-API-KEY": key}).raise_for_status()
        result = subprocess.run(
            ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s", "--latency",
             "-H", f"X-API-KEY: {key}", url],
            capture_output=True, text=True, check=True,
        )
        print(result.stdout)
        rate = next(float(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("Requests/sec"))
        print(f"clients polling every 5 s that this serves: {int(rate * 5)}")
    finally:
        launcher.send_signal(signal.SIGINT)
        launcher.wait(120)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
