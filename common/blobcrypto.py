"""Encryption at rest of blob objects: AES-256-GCM in chunks, streamed, with rotating keys.

An object is a header followed by chunks::

    header  = b"SCRB" | version (1 byte) | key id (8) | chunk size (4, big-endian) | salt (16)
    chunk i = AES-256-GCM(object key, nonce = i (11 bytes, big-endian) | last (1 byte), aad = header)

The object key is derived with HKDF-SHA256 from the master key and the object's random salt, so no
two objects share a key and the counter nonces never repeat under one key. Every chunk but the last
holds ``chunk size`` bytes of plaintext; the last one is flagged in its nonce, so dropping or
reordering chunks, cutting the object short or editing the header fails authentication.

The key id is a fingerprint of the master key (not the key): readers look it up among the
encryption key and the older decryption keys, so keys rotate by adding a new encryption key and
keeping the old one readable until every object written with it has been rewritten or deleted.
Memory stays bounded by one or two chunks whatever the object's size.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"SCRB"
VERSION = 1
KEY_BYTES = 32
KEY_ID_BYTES = 8
SALT_BYTES = 16
TAG_BYTES = 16
DEFAULT_CHUNK_BYTES = 64 * 1024
MAX_CHUNK_BYTES = 16 * 1024 * 1024
_HEADER = struct.Struct(f">4sB{KEY_ID_BYTES}sI{SALT_BYTES}s")
HEADER_BYTES = _HEADER.size
_HKDF_INFO = b"scribe blob object key v1"


class BlobDecryptionError(ValueError):
    """An object cannot be decrypted: not encrypted by Scribe, unknown key, wrong key, or modified."""


class InvalidKeyError(ValueError):
    """A configured key is not base64 of 32 bytes."""


def key_id(key: bytes) -> bytes:
    """The 8-byte fingerprint naming a master key in object headers (reveals nothing of the key)."""
    return hashlib.sha256(b"scribe-blob-key-id\0" + key).digest()[:KEY_ID_BYTES]


def parse_key(encoded: str) -> bytes:
    """A master key from its base64 text (standard or URL-safe alphabet); must be 32 bytes."""
    text = encoded.strip()
    try:
        raw = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidKeyError("a blob encryption key must be base64 text") from None
    if len(raw) != KEY_BYTES:
        raise InvalidKeyError(f"a blob encryption key must be {KEY_BYTES} bytes (base64), not {len(raw)}")
    return raw


def generate_key() -> str:
    """A new random master key as base64 text (what SCRIBE_BLOB_ENCRYPTION_KEY takes)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


@dataclass(frozen=True)
class Keyring:
    """The key new objects are encrypted with, and every key objects may be decrypted with."""

    encryption_key: bytes
    decryption_keys: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        for key in (self.encryption_key, *self.decryption_keys):
            if len(key) != KEY_BYTES:
                raise InvalidKeyError(f"a blob encryption key must be {KEY_BYTES} bytes")

    @classmethod
    def from_text(cls, encryption_key: str, decryption_keys: Iterable[str] = ()) -> "Keyring":
        """From base64 texts; ``decryption_keys`` are the older keys still readable."""
        return cls(parse_key(encryption_key), tuple(parse_key(k) for k in decryption_keys if k.strip()))

    @property
    def encryption_key_id(self) -> str:
        return key_id(self.encryption_key).hex()

    def key_for(self, wanted: bytes) -> bytes:
        for key in (self.encryption_key, *self.decryption_keys):
            if key_id(key) == wanted:
                return key
        raise BlobDecryptionError(
            f"the object was encrypted with key id {wanted.hex()}, which is neither the encryption key nor "
            "one of the decryption keys configured (SCRIBE_BLOB_DECRYPTION_KEYS)"
        )


def _object_cipher(master: bytes, salt: bytes) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=_HKDF_INFO).derive(master)
    return AESGCM(derived)


def _nonce(index: int, last: bool) -> bytes:
    if index >= 1 << 88:
        raise ValueError("object too large for its chunk counter")
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class Encryptor:
    """Incremental encryption of one object: ``update`` as data comes, ``finalize`` once at the end.

    Each call returns the ciphertext bytes ready to be written (the header comes with the first).
    """

    def __init__(self, keyring: Keyring, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        if not 1 <= chunk_bytes <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk size must be within 1..{MAX_CHUNK_BYTES}")
        salt = os.urandom(SALT_BYTES)
        self._header = _HEADER.pack(MAGIC, VERSION, key_id(keyring.encryption_key), chunk_bytes, salt)
        self._cipher = _object_cipher(keyring.encryption_key, salt)
        self._chunk = chunk_bytes
        self._buffer = bytearray()
        self._index = 0
        self._pending_header = True
        self._done = False

    def _take_header(self) -> bytes:
        if self._pending_header:
            self._pending_header = False
            return self._header
        return b""

    def _seal(self, plaintext: bytes, last: bool) -> bytes:
        sealed = self._cipher.encrypt(_nonce(self._index, last), plaintext, self._header)
        self._index += 1
        return sealed

    def update(self, data: bytes) -> bytes:
        if self._done:
            raise ValueError("encryptor already finalized")
        self._buffer += data
        out = [self._take_header()]
        # Keep at least one byte back unless finalizing: the last chunk must be sealed as last.
        while len(self._buffer) > self._chunk:
            out.append(self._seal(bytes(self._buffer[: self._chunk]), last=False))
            del self._buffer[: self._chunk]
        return b"".join(out)

    def finalize(self) -> bytes:
        if self._done:
            raise ValueError("encryptor already finalized")
        self._done = True
        out = self._take_header() + self._seal(bytes(self._buffer), last=True)
        self._buffer.clear()
        return out


class Decryptor:
    """Incremental decryption of one object; raises :class:`BlobDecryptionError` on any mismatch.

    Plaintext is returned only once its chunk has been authenticated; ``finalize`` checks that the
    object ended with its last chunk (no truncation).
    """

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring
        self._buffer = bytearray()
        self._header: bytes | None = None
        self._cipher: AESGCM | None = None
        self._sealed_chunk = 0
        self._index = 0
        self._done = False

    def _read_header(self) -> None:
        header = bytes(self._buffer[:HEADER_BYTES])
        magic, version, wanted, chunk_bytes, salt = _HEADER.unpack(header)
        if magic != MAGIC:
            raise BlobDecryptionError("the object is not an encrypted Scribe blob (no SCRB header)")
        if version != VERSION:
            raise BlobDecryptionError(f"the object's encryption format version {version} is not supported")
        if not 1 <= chunk_bytes <= MAX_CHUNK_BYTES:
            raise BlobDecryptionError("the object's header is corrupt (chunk size out of range)")
        self._cipher = _object_cipher(self._keyring.key_for(wanted), salt)
        self._header = header
        self._sealed_chunk = chunk_bytes + TAG_BYTES
        del self._buffer[:HEADER_BYTES]

    def _open(self, sealed: bytes, last: bool) -> bytes:
        assert self._cipher is not None and self._header is not None
        try:
            plaintext = self._cipher.decrypt(_nonce(self._index, last), sealed, self._header)
        except InvalidTag:
            raise BlobDecryptionError(
                f"chunk {self._index} of the object failed authentication: the object was modified, "
                "truncated, or encrypted with another key"
            ) from None
        self._index += 1
        return plaintext

    def update(self, data: bytes) -> bytes:
        if self._done:
            raise ValueError("decryptor already finalized")
        self._buffer += data
        if self._header is None:
            if len(self._buffer) < HEADER_BYTES:
                return b""
            self._read_header()
        out = []
        # A full chunk followed by more bytes is not the last one.
        while len(self._buffer) > self._sealed_chunk:
            out.append(self._open(bytes(self._buffer[: self._sealed_chunk]), last=False))
            del self._buffer[: self._sealed_chunk]
        return b"".join(out)

    def finalize(self) -> bytes:
        if self._done:
            raise ValueError("decryptor already finalized")
        self._done = True
        if self._header is None:
            raise BlobDecryptionError("the object is too short to be an encrypted Scribe blob")
        if len(self._buffer) < TAG_BYTES:
            raise BlobDecryptionError("the object was truncated (its last chunk is missing)")
        plaintext = self._open(bytes(self._buffer), last=True)
        self._buffer.clear()
        return plaintext


def encrypt_stream(source: BinaryIO, target: BinaryIO, keyring: Keyring, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Encrypt ``source`` into ``target`` chunk by chunk (blocking); returns the bytes written."""
    encryptor = Encryptor(keyring, chunk_bytes)
    written = 0
    while block := source.read(chunk_bytes):
        written += target.write(encryptor.update(block))
    written += target.write(encryptor.finalize())
    return written


def decrypt_stream(source: BinaryIO | Iterable[bytes], target: BinaryIO, keyring: Keyring) -> int:
    """Decrypt a file or an iterable of byte blocks into ``target`` (blocking); returns the bytes written.

    Raises :class:`BlobDecryptionError` if the object does not authenticate; ``target`` then holds
    at most the chunks that did, and the caller must discard it.
    """
    decryptor = Decryptor(keyring)
    blocks = iter(lambda: source.read(DEFAULT_CHUNK_BYTES + TAG_BYTES), b"") if hasattr(source, "read") else source
    written = 0
    for block in blocks:
        written += target.write(decryptor.update(block))
    written += target.write(decryptor.finalize())
    return written


def encrypt_bytes(data: bytes, keyring: Keyring, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> bytes:
    encryptor = Encryptor(keyring, chunk_bytes)
    return encryptor.update(data) + encryptor.finalize()


def decrypt_bytes(data: bytes, keyring: Keyring) -> bytes:
    decryptor = Decryptor(keyring)
    return decryptor.update(data) + decryptor.finalize()
