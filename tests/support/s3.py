"""moto's S3 server for tests: a fixture that starts it, and settings naming a fresh bucket on it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.broker import free_port
from common.s3_server import ensure_bucket, local_s3_env, start_s3_server

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    """moto's S3 server as a separate process on a free loopback port."""
    port = free_port()
    process = start_s3_server(port, tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def blob_location(backend: str, data_dir: Path, endpoint: str | None) -> dict:
    """Settings naming a fresh folder, or a fresh bucket on the local S3 server."""
    values: dict = {"data_dir": data_dir, "blob_backend": backend}
    if backend == "s3":
        bucket = f"scribe-test-{uuid.uuid4().hex[:8]}"
        ensure_bucket(endpoint, bucket)
        env = local_s3_env(endpoint, bucket, prefix="audio/v1")
        values.update({name.removeprefix("SCRIBE_").lower(): value for name, value in env.items()})
        values["blob_s3_multipart_bytes"] = 5 * MiB
    return values
