"""Make small audio fixtures for tests: synthesized speech, silence and noise.

Speech comes from espeak-ng and every file is normalised with sox to what the
service expects from real uploads at its simplest: 16 kHz, mono, 16-bit WAV.
espeak-ng speech is robotic, so tests should assert a few robust words, not
exact transcripts.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

SAMPLE_RATE = 16_000

VOICES = {"pt": "pt-br", "en": "en-us", "es": "es-419"}

_WAV_OUT = ["-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", "-e", "signed-integer"]
# sox dithers with a random seed by default, so every render of the same text differed a little,
# and Whisper base sits on a decision edge for robotic speech: repeatable mode, no dither.
_SOX = ["-R", "-D"]


class SpeechToolMissing(RuntimeError):
    """espeak-ng or sox is not installed."""


def synthesize(
    text: str,
    language: str,
    path: Path,
    voice: str | None = None,
    speed_wpm: int = 150,
) -> Path:
    """Speak ``text`` with espeak-ng into a 16 kHz mono 16-bit WAV at ``path``.

    ``voice`` defaults to the espeak-ng voice for ``language`` ("pt", "en", "es").
    """
    if voice is None:
        try:
            voice = VOICES[language]
        except KeyError:
            raise ValueError(f"no espeak-ng voice known for language {language!r}; pass voice=") from None
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        # espeak-ng writes 22.05 kHz; resample rather than depend on its native rate.
        raw = Path(tmp) / "espeak.wav"
        _run(_tool("espeak-ng"), "-v", voice, "-s", str(speed_wpm), "-w", str(raw), "--", text)
        _run(_tool("sox"), *_SOX, str(raw), *_WAV_OUT, str(path))
    return path


def concat_wavs(paths: Sequence[Path], out: Path, gap_ms: int = 400) -> Path:
    """Join WAVs made by this module into ``out`` with ``gap_ms`` of silence between them."""
    if not paths:
        raise ValueError("concat_wavs needs at least one input")
    sox = _tool("sox")
    with tempfile.TemporaryDirectory() as tmp:
        gap = make_silence(Path(tmp) / "gap.wav", gap_ms / 1000)
        inputs: list[str] = []
        for i, p in enumerate(paths):
            if i:
                inputs.append(str(gap))
            inputs.append(str(p))
        _run(sox, *_SOX, *inputs, *_WAV_OUT, str(out))
    return Path(out)


def make_silence(path: Path, seconds: float) -> Path:
    """Write ``seconds`` of digital silence as a 16 kHz mono 16-bit WAV."""
    _run(_tool("sox"), *_SOX, "-n", *_WAV_OUT, str(path), "trim", "0", f"{seconds:.3f}")
    return Path(path)


def make_white_noise(path: Path, seconds: float, amplitude: float = 0.1) -> Path:
    """Write ``seconds`` of white noise (peak ``amplitude`` of full scale) as a 16 kHz mono WAV."""
    _run(
        _tool("sox"), *_SOX, "-n", *_WAV_OUT, str(path),
        "synth", f"{seconds:.3f}", "whitenoise", "vol", str(amplitude),
    )  # fmt: skip
    return Path(path)


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SpeechToolMissing(f"{name} is not installed; it is needed to make test audio (apt-get install {name})")
    return found


def _run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} failed ({result.returncode}): {result.stderr.strip()}")
