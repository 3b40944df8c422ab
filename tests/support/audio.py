"""Small audio fixtures made on the spot (no speech): tones and non-audio files."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path


def write_tone(path: Path, seconds: float = 1.0, frequency: float = 440.0, sample_rate: int = 16000) -> Path:
    """A 16-bit mono sine tone WAV."""
    frames = int(seconds * sample_rate)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(
            b"".join(
                struct.pack("<h", int(8000 * math.sin(2 * math.pi * frequency * i / sample_rate))) for i in range(frames)
            )
        )
    return path
