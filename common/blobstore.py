"""The blob store holding audio: a local folder by default.

Writers stage a file outside the store, check it, then :meth:`put_file` moves it in atomically, so
the store never holds half an object. Readers that need a file path (the decoder) use
:meth:`local_path`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Protocol


class BlobNotFound(KeyError):
    pass


class BlobStore(Protocol):
    async def put_file(self, key: str, source: Path) -> None: ...
    async def local_path(self, key: str) -> Path: ...
    async def exists(self, key: str) -> bool: ...
    async def delete(self, key: str) -> None: ...
    def staging_dir(self) -> Path: ...


class LocalBlobStore:
    """Objects as files under ``root``; keys are relative paths of safe segments."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / ".staging").mkdir(exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents or key.startswith(".staging"):
            raise ValueError(f"invalid blob key {key!r}")
        return path

    def staging_dir(self) -> Path:
        """A folder on the same filesystem as the store, so moving a staged file in is a rename."""
        return self.root / ".staging"

    async def put_file(self, key: str, source: Path) -> None:
        target = self._path(key)

        def _move() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(source, "rb") as handle:
                os.fsync(handle.fileno())
            shutil.move(str(source), str(target))

        await asyncio.to_thread(_move)

    async def local_path(self, key: str) -> Path:
        path = self._path(key)
        if not path.exists():
            raise BlobNotFound(key)
        return path

    async def exists(self, key: str) -> bool:
        return self._path(key).exists()

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await asyncio.to_thread(path.unlink, True)
        # Remove now-empty folders up to the root so deleted notes leave nothing behind.
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
