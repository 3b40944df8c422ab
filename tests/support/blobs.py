"""Putting audio into a blob store the way ingestion does (encrypted), for tests that skip ingestion."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from common.blobstore import BlobStore


async def put_audio(store: BlobStore, key: str, data: bytes) -> None:
    """Store ``data`` under ``key``, encrypted as every object in the store is."""
    handle, name = tempfile.mkstemp(prefix="test-", dir=store.staging_dir())
    with open(handle, "wb") as out:
        out.write(data)
    await store.put_file(key, Path(name))


async def put_audio_file(store: BlobStore, key: str, source: Path) -> None:
    """Store a copy of the file ``source`` under ``key`` (``source`` itself is kept)."""
    handle, name = tempfile.mkstemp(prefix="test-", dir=store.staging_dir())
    with open(handle, "wb") as out, open(source, "rb") as audio:
        shutil.copyfileobj(audio, out)
    await store.put_file(key, Path(name))
