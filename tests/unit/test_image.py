"""The container image's recipe: what the Dockerfile promises and how install.sh reads its flags.

No container engine is needed: the Dockerfile is read as text, and install.sh's flags are checked
with ``--print-plan`` (what they resolve to, nothing installed). The install itself, run the way the
Dockerfile runs it, is tests/integration/test_image_install.py.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
INSTALL = ROOT / "scripts" / "install.sh"


def _stages() -> dict[str, str]:
    """Stage name -> its instructions (comments dropped, continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    stages: dict[str, list[str]] = {}
    current = None
    for line in lines:
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = match.group(1).lower()
            stages[current] = []
        elif current:
            stages[current].append(line)
    return {name: "\n".join(body) for name, body in stages.items()}


def _plan(*args: str) -> dict[str, str]:
    result = subprocess.run(
        ["bash", str(INSTALL), *args, "--print-plan"], capture_output=True, text=True, timeout=30, check=True
    )
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


def test_the_image_is_built_in_two_stages_and_runs_the_last_one_as_a_non_root_user() -> None:
    stages = _stages()
    assert list(stages) == ["builder", "runtime"]
    runtime = stages["runtime"]
    users = re.findall(r"^USER\s+(\S+)", runtime, re.MULTILINE)
    assert users, "the runtime stage must name a USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) == 10001, "numeric uid, so that runAsNonRoot can check it"
    # The runtime stage installs nothing itself: everything comes from the builder.
    assert "install.sh" not in runtime and "pip install" not in runtime and "apt-get" not in runtime
    assert "COPY --from=builder /opt/scribe /opt/scribe" in runtime


def test_the_builder_installs_with_the_script_the_tests_run() -> None:
    builder = _stages()["builder"]
    runs = [line for line in builder.splitlines() if line.startswith("RUN")]
    install = [line for line in runs if "scripts/install.sh" in line]
    assert len(install) == 1, "exactly one install, by scripts/install.sh"
    words = shlex.split(install[0].split("bash scripts/install.sh", 1)[1].split("&&")[0])
    assert {"--no-apt", "--no-dev", "--venv"} <= set(words)
    assert "${BAKE_MODEL:+--model-dir" in install[0] and "${GPU:+--gpu}" in install[0]
    assert "pip install" not in builder, "no second way of installing beside install.sh"
    # The wheels' model parts are dropped only when the assembled model is baked in beside them.
    removal = re.search(r'if \[ -n "\$BAKE_MODEL" \]; then\s+rm -f (\S+);\s+fi', builder)
    assert removal and removal.group(1).endswith("/data/model.bin.part*")


def test_the_image_writes_only_under_the_data_folder_and_tmp() -> None:
    runtime = _stages()["runtime"]
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime
    assert "HOME=/tmp" in runtime
    assert "SCRIBE_DATA_DIR=/var/lib/scribe" in runtime
    assert re.search(r'^VOLUME \["/var/lib/scribe"\]', runtime, re.MULTILINE)
    # One image, one entry point per process: the arguments name the module.
    assert 'ENTRYPOINT ["python", "-m"]' in runtime
    assert 'CMD ["gateway.server"]' in runtime


def test_the_recipe_and_its_context_carry_no_secrets() -> None:
    secretish = re.compile(r"(API_KEY|PASSWORD|SECRET|TOKEN|PEPPER|ENCRYPTION_KEY)\w*\s*[= ]", re.IGNORECASE)
    for line in DOCKERFILE.splitlines():
        if line.lstrip().startswith(("ENV", "ARG")):
            assert not secretish.search(line), line
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    # Everything is excluded first, then only the sources the build needs are let back in.
    assert ignore[[line.strip() for line in ignore].index("**")] == "**"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "scripts/install.sh", "scribe", "common", "services", "gateway"}


def test_install_without_flags_does_what_make_install_always_did() -> None:
    assert _plan() == {"venv": ".venv", "apt": "1", "spec": ".[dev]", "model_dir": ""}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--no-apt", "--no-dev", "--venv", "/opt/scribe/venv", "--model-dir", "/opt/scribe/models"],
            {"venv": "/opt/scribe/venv", "apt": "0", "spec": ".", "model_dir": "/opt/scribe/models"},
        ),
        (["--gpu"], {"venv": ".venv", "apt": "1", "spec": ".[dev,gpu]", "model_dir": ""}),
        (["--no-dev", "--gpu", "--venv=/v"], {"venv": "/v", "apt": "1", "spec": ".[gpu]", "model_dir": ""}),
    ],
)
def test_install_flags(args: list[str], expected: dict[str, str]) -> None:
    assert _plan(*args) == expected


@pytest.mark.parametrize("args", [["--bogus"], ["--venv"], ["--venv", "--no-apt"], ["--model-dir="]])
def test_install_refuses_a_bad_command_line_before_doing_anything(args: list[str]) -> None:
    result = subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "Usage: scripts/install.sh" in result.stderr


def test_the_dockerfile_flags_are_ones_install_sh_knows() -> None:
    install = [line for line in _stages()["builder"].splitlines() if "scripts/install.sh" in line][0]
    flags = set(re.findall(r"(--[a-z-]+)", install))
    known = set(re.findall(r"^#\s+(--[a-z-]+)", INSTALL.read_text(), re.MULTILINE))
    assert flags <= known, flags - known
