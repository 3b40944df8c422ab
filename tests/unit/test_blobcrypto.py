"""Encryption at rest of blobs: chunked AES-256-GCM, rotation by key id, tampering detected."""

from __future__ import annotations

import base64
import io
import os

import pytest

from common.blobcrypto import (
    HEADER_BYTES,
    TAG_BYTES,
    BlobDecryptionError,
    Decryptor,
    Encryptor,
    InvalidKeyError,
    Keyring,
    decrypt_bytes,
    decrypt_stream,
    encrypt_bytes,
    encrypt_stream,
    generate_key,
    key_id,
    parse_key,
)

CHUNK = 1024


@pytest.fixture
def keyring() -> Keyring:
    return Keyring(os.urandom(32))


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 5 * CHUNK + 17])
def test_round_trip_at_every_chunk_boundary(keyring, size):
    data = os.urandom(size)
    sealed = encrypt_bytes(data, keyring, chunk_bytes=CHUNK)
    chunks = max(1, -(-size // CHUNK))
    assert len(sealed) == HEADER_BYTES + size + chunks * TAG_BYTES
    assert decrypt_bytes(sealed, keyring) == data


def test_ciphertext_hides_the_plaintext_and_differs_every_time(keyring):
    data = b"RIFF....WAVEfmt " + b"the dog has a fever" * 200
    first, second = encrypt_bytes(data, keyring), encrypt_bytes(data, keyring)
    assert first != second  # a fresh salt, so a fresh object key, per object
    for sealed in (first, second):
        assert b"RIFF" not in sealed and b"fever" not in sealed


def test_streams_in_any_block_sizes_with_bounded_buffers(keyring):
    data = os.urandom(10 * CHUNK + 3)
    encryptor = Encryptor(keyring, chunk_bytes=CHUNK)
    sealed = bytearray()
    for start in range(0, len(data), 333):
        sealed += encryptor.update(data[start : start + 333])
        assert len(encryptor._buffer) <= CHUNK + 333
    sealed += encryptor.finalize()

    decryptor = Decryptor(keyring)
    plain = bytearray()
    for start in range(0, len(sealed), 777):
        plain += decryptor.update(bytes(sealed[start : start + 777]))
        assert len(decryptor._buffer) <= CHUNK + TAG_BYTES + 777
    plain += decryptor.finalize()
    assert plain == data


def test_file_streams(keyring):
    data = os.urandom(200_000)
    sealed, plain = io.BytesIO(), io.BytesIO()
    encrypt_stream(io.BytesIO(data), sealed, keyring)
    sealed.seek(0)
    decrypt_stream(sealed, plain, keyring)
    assert plain.getvalue() == data


def test_a_wrong_key_is_refused_by_key_id(keyring):
    sealed = encrypt_bytes(b"audio", keyring)
    with pytest.raises(BlobDecryptionError, match="key id .* neither"):
        decrypt_bytes(sealed, Keyring(os.urandom(32)))


def test_rotation_reads_objects_of_the_older_key(keyring):
    old_object = encrypt_bytes(b"before the rotation", keyring)
    rotated = Keyring(os.urandom(32), decryption_keys=(keyring.encryption_key,))
    new_object = encrypt_bytes(b"after the rotation", rotated)
    assert old_object[5:13] == key_id(keyring.encryption_key)
    assert new_object[5:13] == key_id(rotated.encryption_key)
    assert decrypt_bytes(old_object, rotated) == b"before the rotation"
    assert decrypt_bytes(new_object, rotated) == b"after the rotation"
    with pytest.raises(BlobDecryptionError):
        decrypt_bytes(new_object, keyring)  # the old key alone cannot read what the new one wrote


def test_a_same_id_but_different_key_fails_authentication(keyring):
    """Forged header: the id of the configured key over data sealed with another key."""
    other = Keyring(os.urandom(32))
    sealed = bytearray(encrypt_bytes(b"x" * 5000, other, chunk_bytes=CHUNK))
    sealed[5:13] = key_id(keyring.encryption_key)
    with pytest.raises(BlobDecryptionError, match="failed authentication"):
        decrypt_bytes(bytes(sealed), keyring)


@pytest.mark.parametrize("where", ["header", "first chunk", "last tag"])
def test_any_modified_byte_is_detected(keyring, where):
    sealed = bytearray(encrypt_bytes(os.urandom(3 * CHUNK), keyring, chunk_bytes=CHUNK))
    index = {"header": 20, "first chunk": HEADER_BYTES + 10, "last tag": len(sealed) - 1}[where]
    sealed[index] ^= 0x01
    with pytest.raises(BlobDecryptionError):
        decrypt_bytes(bytes(sealed), keyring)


def test_truncation_reordering_and_appending_are_detected(keyring):
    sealed = encrypt_bytes(os.urandom(3 * CHUNK), keyring, chunk_bytes=CHUNK)
    step = CHUNK + TAG_BYTES
    header, chunks = sealed[:HEADER_BYTES], [sealed[HEADER_BYTES + i * step : HEADER_BYTES + (i + 1) * step]
                                             for i in range(3)]
    with pytest.raises(BlobDecryptionError):  # the last chunk dropped: the new last one is not flagged last
        decrypt_bytes(header + chunks[0] + chunks[1], keyring)
    with pytest.raises(BlobDecryptionError):
        decrypt_bytes(header + chunks[1] + chunks[0] + chunks[2], keyring)
    with pytest.raises(BlobDecryptionError):
        decrypt_bytes(sealed + chunks[0], keyring)
    with pytest.raises(BlobDecryptionError, match="too short"):
        decrypt_bytes(sealed[: HEADER_BYTES - 1], keyring)
    with pytest.raises(BlobDecryptionError, match="truncated"):
        decrypt_bytes(sealed[: HEADER_BYTES + 3], keyring)


def test_plaintext_is_not_taken_for_an_object(keyring):
    with pytest.raises(BlobDecryptionError, match="not an encrypted Scribe blob"):
        decrypt_bytes(b"RIFF" + b"\0" * 100, keyring)


def test_keys_are_base64_of_32_bytes():
    key = generate_key()
    assert len(parse_key(key)) == 32
    raw = os.urandom(32)
    assert parse_key(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw
    for bad in ["changeme", "", base64.b64encode(os.urandom(16)).decode(), "not base64 !!"]:
        with pytest.raises(InvalidKeyError):
            parse_key(bad)
    keyring = Keyring.from_text(key, [" ", generate_key()])
    assert len(keyring.decryption_keys) == 1
    assert keyring.encryption_key_id == key_id(parse_key(key)).hex()
