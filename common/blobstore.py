"""The blob store holding audio: a local folder by default, or an S3-compatible bucket.

Every object is encrypted at rest (``common.blobcrypto``: AES-256-GCM in chunks, key from the
environment, rotation through a key id in each object's header) whichever the backend.

Writers stage a plaintext file in :meth:`BlobStore.staging_dir`, check it, then
:meth:`BlobStore.put_file` encrypts it into the store (a rename into place on disk, a multipart-safe
upload to S3), so the store never holds half an object. Readers that need a file path (the decoder)
use ``async with store.decrypted_file(key) as path``: a decrypted copy in the staging folder (mode
0600) that is removed when the block ends. :func:`open_blob_store` builds the store the settings
describe; every service that reads or writes blobs calls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from common.blobcrypto import (
    TAG_BYTES,
    BlobDecryptionError,
    Keyring,
    decrypt_stream,
    encrypt_stream,
    generate_key,
    key_id,
    parse_key,
)

if TYPE_CHECKING:
    from common.settings import ServiceSettings

log = logging.getLogger(__name__)

__all__ = [
    "BlobDecryptionError",
    "BlobNotFound",
    "BlobStore",
    "LocalBlobStore",
    "S3BlobStore",
    "load_keyring",
    "open_blob_store",
]

_READ_BLOCK = 64 * 1024 + TAG_BYTES


class BlobNotFound(KeyError):
    pass


class BlobStore(Protocol):
    async def put_file(self, key: str, source: Path) -> None:
        """Encrypt ``source`` into the store under ``key`` (replacing any object there); ``source`` is removed."""

    def decrypted_file(self, key: str) -> AbstractAsyncContextManager[Path]:
        """A decrypted temporary copy of the object, removed on exit; BlobNotFound if absent,
        BlobDecryptionError if it does not authenticate (unknown or wrong key, modified bytes)."""

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Remove the object; no error if it is already gone."""

    def staging_dir(self) -> Path:
        """A local folder for files on their way in or out of the store."""


def _check_key(key: str) -> str:
    """Keys are relative paths of safe segments (``tenant/note/audio.wav``), the same on every backend."""
    parts = PurePosixPath(key).parts
    if not key or key.startswith("/") or "\\" in key or any(p in ("..", ".") for p in parts) or parts[0] == ".staging":
        raise ValueError(f"invalid blob key {key!r}")
    return key


class _EncryptedStore:
    """What both backends share: the keyring, the staging folder and decrypted temporary files."""

    def __init__(self, keyring: Keyring, staging: Path) -> None:
        self.keyring = keyring
        self._staging = staging
        self._staging.mkdir(parents=True, exist_ok=True, mode=0o700)

    def staging_dir(self) -> Path:
        return self._staging

    def _decrypt_into(self, key: str, target: BinaryIO) -> None:  # pragma: no cover - per backend
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def decrypted_file(self, key: str) -> AsyncIterator[Path]:
        _check_key(key)
        # mkstemp creates the file 0600: the plaintext is readable by this service's user alone.
        handle, name = tempfile.mkstemp(prefix="plain-", suffix=PurePosixPath(key).suffix, dir=self._staging)
        path = Path(name)
        try:

            def _write() -> None:
                with open(handle, "wb") as out:
                    self._decrypt_into(key, out)

            await asyncio.to_thread(_write)
            yield path
        finally:
            path.unlink(missing_ok=True)


class LocalBlobStore(_EncryptedStore):
    """Encrypted objects as files under ``root``; keys are relative paths of safe segments."""

    def __init__(self, root: Path, keyring: Keyring) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        # On the same filesystem as the store, so a staged upload's encrypted copy lands by rename.
        super().__init__(keyring, self.root / ".staging")

    def _path(self, key: str) -> Path:
        _check_key(key)
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"invalid blob key {key!r}")
        return path

    async def put_file(self, key: str, source: Path) -> None:
        target = self._path(key)

        def _store() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(prefix=".incoming-", dir=target.parent)
            try:
                with open(source, "rb") as plain, open(handle, "wb") as out:
                    encrypt_stream(plain, out, self.keyring)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(name, target)
            except BaseException:
                Path(name).unlink(missing_ok=True)
                raise
            source.unlink(missing_ok=True)

        await asyncio.to_thread(_store)

    def _decrypt_into(self, key: str, target: BinaryIO) -> None:
        try:
            handle = open(self._path(key), "rb")
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        with handle:
            decrypt_stream(handle, target, self.keyring)

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


def _not_found(error: Exception) -> bool:
    code = str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


class S3BlobStore(_EncryptedStore):
    """Encrypted objects in an S3-compatible bucket under ``prefix`` (boto3, run in worker threads).

    Uploads go through boto3's transfer manager from an encrypted file in the staging folder: over
    ``multipart_bytes`` an object is sent in parts (retried one by one, the upload aborted on
    failure, so a reader never sees half an object). Reads stream the body through the decryptor.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        keyring: Keyring,
        staging: Path,
        prefix: str = "",
        multipart_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        super().__init__(keyring, staging)
        from boto3.s3.transfer import TransferConfig

        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._transfer = TransferConfig(
            multipart_threshold=multipart_bytes, multipart_chunksize=multipart_bytes, max_concurrency=4
        )

    def object_key(self, key: str) -> str:
        """The key in the bucket: the prefix, then the blob key."""
        return self.prefix + _check_key(key)

    async def put_file(self, key: str, source: Path) -> None:
        object_key = self.object_key(key)

        def _upload() -> None:
            handle, name = tempfile.mkstemp(prefix="sealed-", dir=self._staging)
            try:
                with open(source, "rb") as plain, open(handle, "wb") as out:
                    encrypt_stream(plain, out, self.keyring)
                self.client.upload_file(
                    name,
                    self.bucket,
                    object_key,
                    ExtraArgs={"ContentType": "application/octet-stream",
                               "Metadata": {"scribe-encryption": "aes-256-gcm-chunked-v1"}},
                    Config=self._transfer,
                )
            finally:
                Path(name).unlink(missing_ok=True)
            source.unlink(missing_ok=True)

        await asyncio.to_thread(_upload)

    def _decrypt_into(self, key: str, target: BinaryIO) -> None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if _not_found(exc):
                raise BlobNotFound(key) from None
            raise
        body = response["Body"]
        try:
            decrypt_stream(body.iter_chunks(_READ_BLOCK), target, self.keyring)
        finally:
            body.close()

    async def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            await asyncio.to_thread(self.client.head_object, Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if _not_found(exc):
                return False
            raise
        return True

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=self.object_key(key))


def ensure_development_key(path: Path) -> str:
    """The development key kept in ``path`` (0600), created once; safe when processes race to create it."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=".key-", dir=path.parent)  # 0600
        with open(handle, "w") as out:
            out.write(generate_key())
        try:
            os.link(name, path)  # atomic: of two processes creating it at once, one key wins
        except FileExistsError:
            pass
        finally:
            os.unlink(name)
    return path.read_text().strip()


def load_keyring(settings: ServiceSettings) -> Keyring:
    """The keys from SCRIBE_BLOB_ENCRYPTION_KEY / SCRIBE_BLOB_DECRYPTION_KEYS.

    Without an encryption key, development uses (and creates once) ``<data_dir>/run/blob_encryption_key``
    and says so in the log; any other environment refuses to start.
    """
    old = settings.blob_decryption_keys.get_secret_value().split(",") if settings.blob_decryption_keys else []
    if settings.blob_encryption_key is not None and settings.blob_encryption_key.get_secret_value().strip():
        return Keyring.from_text(settings.blob_encryption_key.get_secret_value(), old)
    if settings.environment != "development":
        raise ValueError(
            "SCRIBE_BLOB_ENCRYPTION_KEY must be set (base64 of 32 bytes) when "
            f"SCRIBE_ENVIRONMENT={settings.environment}"
        )
    path = (settings.data_dir / "run" / "blob_encryption_key").resolve()
    keyring = Keyring(parse_key(ensure_development_key(path)), tuple(parse_key(k) for k in old if k.strip()))
    log.warning(
        "blob encryption uses the development key kept in %s (key id %s); set SCRIBE_BLOB_ENCRYPTION_KEY in production",
        path,
        key_id(keyring.encryption_key).hex(),
    )
    return keyring


def s3_client(settings: ServiceSettings) -> Any:
    """A boto3 S3 client for the settings (thread-safe; shared by the store's worker threads)."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id=settings.blob_s3_access_key_id.get_secret_value() if settings.blob_s3_access_key_id else None,
        aws_secret_access_key=(
            settings.blob_s3_secret_access_key.get_secret_value() if settings.blob_s3_secret_access_key else None
        ),
        region_name=settings.blob_s3_region,
    )
    return session.client(
        "s3",
        endpoint_url=settings.blob_s3_endpoint_url,
        config=Config(
            retries={"max_attempts": 5, "mode": "standard"},
            s3={"addressing_style": settings.blob_s3_addressing_style},
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=16,
        ),
    )


def open_blob_store(settings: ServiceSettings, keyring: Keyring | None = None) -> BlobStore:
    """The blob store the settings describe (``SCRIBE_BLOB_BACKEND``), encrypting with their keys."""
    keyring = keyring or load_keyring(settings)
    if settings.blob_backend == "s3":
        assert settings.blob_s3_bucket is not None  # the settings' validator insists
        return S3BlobStore(
            s3_client(settings),
            settings.blob_s3_bucket,
            keyring,
            settings.resolved_staging_dir(),
            prefix=settings.blob_s3_prefix,
            multipart_bytes=settings.blob_s3_multipart_bytes,
        )
    return LocalBlobStore(settings.resolved_blob_dir(), keyring)
