"""A local S3-compatible server for the production-like profile and the tests: moto in server mode.

moto keeps its objects in memory, like the embedded broker keeps its messages: it stands in for a
real bucket (AWS S3, MinIO, Ceph) on one machine and is never what production runs. Used by the
launcher's ``--profile prod`` (``make run-prod``) and by the blob store's tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from common.broker import wait_for_port

# moto accepts any credentials; these name the local server's, never a real account's.
LOCAL_ACCESS_KEY_ID = "scribe-local"
LOCAL_SECRET_ACCESS_KEY = "scribe-local-secret"
LOCAL_REGION = "us-east-1"


def s3_server_command(port: int, host: str = "127.0.0.1") -> list[str]:
    return [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]


def start_s3_server(port: int, log_path: Path | None = None, host: str = "127.0.0.1") -> subprocess.Popen:
    """Start moto's S3 server on ``host:port`` and wait until it accepts connections."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(
        s3_server_command(port, host), stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "MOTO_PORT": str(port)}
    )
    try:
        wait_for_port(host, port, 30)
    except TimeoutError:
        process.kill()
        raise
    return process


def local_s3_env(endpoint_url: str, bucket: str, prefix: str = "") -> dict[str, str]:
    """The SCRIBE_BLOB_* environment that points services at the local server."""
    return {
        "SCRIBE_BLOB_BACKEND": "s3",
        "SCRIBE_BLOB_S3_BUCKET": bucket,
        "SCRIBE_BLOB_S3_PREFIX": prefix,
        "SCRIBE_BLOB_S3_ENDPOINT_URL": endpoint_url,
        "SCRIBE_BLOB_S3_REGION": LOCAL_REGION,
        "SCRIBE_BLOB_S3_ADDRESSING_STYLE": "path",
        "SCRIBE_BLOB_S3_ACCESS_KEY_ID": LOCAL_ACCESS_KEY_ID,
        "SCRIBE_BLOB_S3_SECRET_ACCESS_KEY": LOCAL_SECRET_ACCESS_KEY,
    }


def local_s3_client(endpoint_url: str):
    """A boto3 client of the local server."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=LOCAL_REGION,
        aws_access_key_id=LOCAL_ACCESS_KEY_ID,
        aws_secret_access_key=LOCAL_SECRET_ACCESS_KEY,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}),
    )


def ensure_bucket(endpoint_url: str, bucket: str) -> None:
    """Create ``bucket`` on the local server unless it exists."""
    client = local_s3_client(endpoint_url)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
