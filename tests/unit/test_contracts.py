"""The committed generated code matches the .proto files, and the protos pass buf lint."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_generated_code_has_no_drift(tmp_path: Path) -> None:
    protos = sorted(str(p.relative_to(REPO / "protos")) for p in (REPO / "protos").rglob("*.proto"))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(REPO / "protos"), f"--python_out={tmp_path}",
         f"--grpc_python_out={tmp_path}", f"--mypy_out={tmp_path}", f"--mypy_grpc_out={tmp_path}", *protos],
        check=True, env=env, cwd=REPO, capture_output=True,
    )
    generated = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    committed = {p.relative_to(REPO) for p in (REPO / "scribe").rglob("*") if p.is_file()
                 and p.name != "__init__.py" and "__pycache__" not in p.parts}
    assert generated == committed, "run `make protos`: files differ"
    stale = [str(p) for p in generated if not filecmp.cmp(tmp_path / p, REPO / p, shallow=False)]
    assert not stale, f"run `make protos`: out of date: {stale}"


def test_buf_lint_is_clean() -> None:
    buf = shutil.which("buf", path=str(BIN)) or shutil.which("buf")
    if buf is None:
        pytest.fail("buf is not installed (pip install buf-bin, part of the dev dependencies)")
    result = subprocess.run([buf, "lint"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
