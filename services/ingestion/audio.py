"""The decode check: is an uploaded file really audio, and how long is it?

Decoding (not just the header) catches files that claim a format they do not hold. PyAV is used
because faster-whisper decodes with it too: what passes here, transcription can read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av

# Container formats PyAV reports -> the MIME type we store and answer with.
_MIME_BY_FORMAT = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "flac": "audio/flac",
    "matroska,webm": "audio/webm",
    "mov,mp4,m4a,3gp,3g2,mj2": "audio/mp4",
    "aac": "audio/aac",
    "amr": "audio/amr",
    "caf": "audio/x-caf",
    "aiff": "audio/aiff",
}
_EXTENSION_BY_MIME = {
    "audio/wav": "wav",
    "audio/mpeg": "mp3",
    "audio/ogg": "ogg",
    "audio/flac": "flac",
    "audio/webm": "webm",
    "audio/mp4": "m4a",
    "audio/aac": "aac",
    "audio/amr": "amr",
    "audio/x-caf": "caf",
    "audio/aiff": "aiff",
}
ACCEPTED_FORMATS = "audio/wav, audio/mpeg, audio/mp4 (m4a), audio/ogg, audio/webm, audio/flac, audio/aac"


class NotAudio(ValueError):
    """The file does not decode as audio; the message says why, in words for the uploader."""


@dataclass(frozen=True)
class AudioProbe:
    mime_type: str
    extension: str
    duration_ms: int
    sample_rate: int
    channels: int


def probe_audio(path: Path) -> AudioProbe:
    """Decode the whole audio stream of ``path``; raise NotAudio when it is not decodable audio."""
    try:
        with av.open(str(path), mode="r") as container:
            streams = [s for s in container.streams if s.type == "audio"]
            if not streams:
                raise NotAudio("the file has no audio stream")
            stream = streams[0]
            samples = 0
            sample_rate = stream.codec_context.sample_rate or 0
            for frame in container.decode(stream):
                samples += frame.samples
                sample_rate = frame.sample_rate or sample_rate
            if samples == 0 or sample_rate == 0:
                raise NotAudio("the audio stream holds no samples")
            format_name = container.format.name
            channels = stream.codec_context.channels or 1
    except NotAudio:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError, IndexError) as exc:
        raise NotAudio(f"the file does not decode as audio ({type(exc).__name__})") from exc
    mime = _MIME_BY_FORMAT.get(format_name, f"audio/x-{format_name.split(',')[0]}")
    return AudioProbe(
        mime_type=mime,
        extension=_EXTENSION_BY_MIME.get(mime, format_name.split(",")[0]),
        duration_ms=int(samples * 1000 / sample_rate),
        sample_rate=sample_rate,
        channels=channels,
    )
