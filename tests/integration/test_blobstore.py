"""The blob store on a local folder and on S3 (a real moto server on loopback, real boto3): objects
are encrypted at rest, come back byte for byte, fail loudly under a wrong key or tampering, stay
readable across a key rotation, and are gone once deleted."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from common.blobcrypto import HEADER_BYTES, BlobDecryptionError, generate_key, key_id, parse_key
from common.blobstore import BlobNotFound, LocalBlobStore, S3BlobStore, open_blob_store
from common.s3_server import local_s3_env
from common.settings import ServiceSettings
from tests.support.blobs import put_audio
from tests.support.s3 import MiB, blob_location, s3_endpoint  # noqa: F401 (s3_endpoint: a fixture)

_location = blob_location


@pytest.fixture(params=["local", "s3"])
def make_store(request, tmp_path):
    """Builds stores over one location (folder or bucket) with the keys a test chooses."""
    backend = request.param
    endpoint = request.getfixturevalue("s3_endpoint") if backend == "s3" else None
    location = _location(backend, tmp_path, endpoint)

    def make(encryption_key: str, decryption_keys: str | None = None):
        return open_blob_store(
            ServiceSettings(**location, blob_encryption_key=encryption_key, blob_decryption_keys=decryption_keys)
        )

    return make


def stored_bytes(store, key: str) -> bytes:
    """The object as it lies at rest: the file on disk, or the object in the bucket."""
    if isinstance(store, LocalBlobStore):
        return (store.root / key).read_bytes()
    assert isinstance(store, S3BlobStore)
    return store.client.get_object(Bucket=store.bucket, Key=store.object_key(key))["Body"].read()


async def read_back(store, key: str) -> bytes:
    async with store.decrypted_file(key) as path:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        data = path.read_bytes()
    assert not path.exists()  # the decrypted copy is gone once the block ends
    return data


async def test_round_trip_returns_the_exact_bytes_and_stores_only_ciphertext(make_store):
    store = make_store(generate_key())
    # Over the multipart threshold on S3 (5 MiB parts), with a recognisable header and text.
    audio = b"RIFF\x00\x00\x00\x00WAVEfmt " + b"the dog has a fever since monday " * 1000 + os.urandom(11 * MiB)
    key = "tenant-a/note-1/audio.wav"
    await put_audio(store, key, audio)

    at_rest = stored_bytes(store, key)
    assert at_rest != audio and len(at_rest) > len(audio)
    assert at_rest[:4] == b"SCRB" and b"RIFF" not in at_rest[: HEADER_BYTES + 64]
    assert b"the dog has a fever" not in at_rest
    assert await store.exists(key)
    assert await read_back(store, key) == audio
    assert list(store.staging_dir().iterdir()) == []  # nothing staged or decrypted left behind


async def test_s3_objects_live_under_the_prefix(s3_endpoint, tmp_path):
    settings = ServiceSettings(**_location("s3", tmp_path, s3_endpoint), blob_encryption_key=generate_key())
    store = open_blob_store(settings)
    assert isinstance(store, S3BlobStore)
    await put_audio(store, "t/n/audio.m4a", b"x" * 100)
    listed = store.client.list_objects_v2(Bucket=store.bucket)["Contents"]
    assert [o["Key"] for o in listed] == ["audio/v1/t/n/audio.m4a"]


async def test_a_wrong_key_fails_with_a_clear_error(make_store):
    writer = make_store(generate_key())
    await put_audio(writer, "t/n/audio.wav", b"consultation audio" * 100)
    reader = make_store(generate_key())
    with pytest.raises(BlobDecryptionError, match="neither the encryption key nor one of the decryption keys"):
        await read_back(reader, "t/n/audio.wav")
    assert list(reader.staging_dir().iterdir()) == []  # the partial plaintext is removed too


async def test_modified_bytes_at_rest_are_detected(make_store):
    key = generate_key()
    store = make_store(key)
    await put_audio(store, "t/n/audio.wav", os.urandom(300_000))
    tampered = bytearray(stored_bytes(store, "t/n/audio.wav"))
    tampered[HEADER_BYTES + 100_000] ^= 0x20
    if isinstance(store, LocalBlobStore):
        (store.root / "t/n/audio.wav").write_bytes(bytes(tampered))
    else:
        store.client.put_object(Bucket=store.bucket, Key=store.object_key("t/n/audio.wav"), Body=bytes(tampered))
    with pytest.raises(BlobDecryptionError, match="failed authentication"):
        await read_back(store, "t/n/audio.wav")


async def test_rotation_keeps_objects_of_the_old_key_readable(make_store):
    old_key, new_key = generate_key(), generate_key()
    before = make_store(old_key)
    await put_audio(before, "t/old/audio.wav", b"recorded before the rotation")

    after = make_store(new_key, decryption_keys=f"{generate_key()},{old_key}")
    await put_audio(after, "t/new/audio.wav", b"recorded after the rotation")
    assert await read_back(after, "t/old/audio.wav") == b"recorded before the rotation"
    assert await read_back(after, "t/new/audio.wav") == b"recorded after the rotation"
    assert stored_bytes(after, "t/new/audio.wav")[5:13] == key_id(parse_key(new_key))
    with pytest.raises(BlobDecryptionError):
        await read_back(before, "t/new/audio.wav")  # the old key alone cannot read the new objects


async def test_delete_removes_the_object(make_store):
    store = make_store(generate_key())
    await put_audio(store, "t/n/audio.wav", b"a" * 1000)
    await put_audio(store, "t/other/audio.wav", b"b" * 1000)
    await store.delete("t/n/audio.wav")
    assert not await store.exists("t/n/audio.wav")
    with pytest.raises(BlobNotFound):
        await read_back(store, "t/n/audio.wav")
    await store.delete("t/n/audio.wav")  # deleting what is gone is not an error
    if isinstance(store, LocalBlobStore):
        assert not (store.root / "t" / "n").exists()  # no empty folder left behind
    else:
        listed = store.client.list_objects_v2(Bucket=store.bucket).get("Contents", [])
        assert [o["Key"] for o in listed] == [store.object_key("t/other/audio.wav")]
    assert await read_back(store, "t/other/audio.wav") == b"b" * 1000


async def test_unknown_and_unsafe_keys(make_store):
    store = make_store(generate_key())
    with pytest.raises(BlobNotFound):
        await read_back(store, "t/missing/audio.wav")
    assert not await store.exists("t/missing/audio.wav")
    for bad in ["../escape", "/abs/audio.wav", "t/../../x", ".staging/x", ""]:
        with pytest.raises(ValueError):
            await put_audio(store, bad, b"x")


async def test_development_generates_one_key_once_and_logs_no_key(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="common.blobstore")
    first = open_blob_store(ServiceSettings(data_dir=tmp_path))
    second = open_blob_store(ServiceSettings(data_dir=tmp_path))
    key_file = tmp_path / "run" / "blob_encryption_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.keyring == second.keyring
    await put_audio(first, "t/n/audio.wav", b"dev audio")
    assert await read_back(second, "t/n/audio.wav") == b"dev audio"
    assert "development key" in caplog.text and key_file.read_text().strip() not in caplog.text

    with pytest.raises(ValueError, match="SCRIBE_BLOB_ENCRYPTION_KEY must be set"):
        open_blob_store(ServiceSettings(data_dir=tmp_path / "prod", environment="production"))


def test_settings_from_the_environment(monkeypatch, tmp_path):
    key = generate_key()
    for name, value in {**local_s3_env("http://127.0.0.1:9", "scribe-audio", "p"),
                        "SCRIBE_BLOB_ENCRYPTION_KEY": key, "SCRIBE_DATA_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    settings = ServiceSettings()
    assert (settings.blob_backend, settings.blob_s3_bucket, settings.blob_s3_prefix) == ("s3", "scribe-audio", "p")
    assert settings.blob_encryption_key.get_secret_value() == key and key not in repr(settings)
    store = open_blob_store(settings)
    assert isinstance(store, S3BlobStore) and store.prefix == "p/"
    assert store.staging_dir() == (tmp_path / "staging").resolve()
    monkeypatch.delenv("SCRIBE_BLOB_S3_BUCKET")
    with pytest.raises(ValueError, match="SCRIBE_BLOB_S3_BUCKET is required"):
        ServiceSettings()
