"""Transcribe the same audio through the whole pipeline and with faster-whisper in one process.

The pipeline run starts the system as `make run` does, uploads every file over REST at once and
waits for each note to complete; the direct run calls faster-whisper on the same files one after
another, with the same model, compute type and threads as the transcription service. Prints audio
seconds, wall seconds and real-time factor of both, and their ratio.

    .venv/bin/python bench/pipeline_vs_direct.py [AUDIO ...]

Without arguments it renders two consultations with espeak-ng (en, pt) and uses them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.transcription.config import TranscriptionSettings  # noqa: E402
from services.transcription.engine import EngineConfig, WhisperEngine  # noqa: E402
from services.transcription.model import ensure_default_model  # noqa: E402
from tests.e2e.conftest import EN_TURNS, PT_TURNS, render  # noqa: E402
from tests.support.system import start_system, wait_terminal  # noqa: E402


def audio_seconds(path: Path) -> float:
    import av

    with av.open(str(path)) as container:
        return float(container.duration or 0) / 1_000_000


def direct(files: list[tuple[Path, str]], model_dir: Path, settings: TranscriptionSettings, parallel: bool) -> float:
    engine = WhisperEngine(EngineConfig(model_dir=model_dir, cpu_threads=settings.cpu_threads,
                                        num_workers=settings.num_workers, beam_size=settings.beam_size))
    engine.load()
    started = time.perf_counter()
    if parallel:
        with ThreadPoolExecutor(settings.num_workers) as pool:
            list(pool.map(lambda item: engine.transcribe(item[0], item[1]), files))
    else:
        for path, language in files:
            engine.transcribe(path, language)
    return time.perf_counter() - started


def pipeline(files: list[tuple[Path, str]], model_dir: Path, data_dir: Path) -> float:
    system = start_system(data_dir, model_dir)
    try:
        with system.client(timeout=120) as client:
            started = time.perf_counter()
            ids = []
            for path, language in files:
                with open(path, "rb") as handle:
                    response = client.post("/notes/v1/notes", files={"audio": (path.name, handle, "audio/wav")},
                                           data={"name": path.stem, "language": language})
                response.raise_for_status()
                ids.append(response.json()["data"]["id"])
            for note_id in ids:
                assert wait_terminal(client, note_id, timeout_s=3600) == "completed"
            return time.perf_counter() - started
    finally:
        system.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("audio", nargs="*", type=Path, help="audio files (language from a .pt/.en/.es suffix, else en)")
    parser.add_argument("--copies", type=int, default=3, help="times each file is sent (notes in flight)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="scribe-bench-"))
    if args.audio:
        base = [(p, p.stem.rsplit(".", 1)[-1] if "." in p.stem else "en") for p in args.audio]
    else:
        base = [(render(EN_TURNS, "en", work / "en.wav"), "en"), (render(PT_TURNS, "pt", work / "pt.wav"), "pt")]
    files = base * args.copies
    settings = TranscriptionSettings()
    model_dir = ensure_default_model(work / "model")
    seconds = sum(audio_seconds(p) for p, _ in files)
    print(f"{len(files)} files, {seconds:.1f} s of audio; model {model_dir}, compute int8, "
          f"cpu_threads={settings.cpu_threads}, num_workers={settings.num_workers}, beam={settings.beam_size}")
    direct_sequential = direct(files, model_dir, settings, parallel=False)
    direct_parallel = direct(files, model_dir, settings, parallel=True)
    whole = pipeline(files, model_dir, work / "system")
    for label, wall in (("direct, one after another", direct_sequential),
                        (f"direct, {settings.num_workers} at once", direct_parallel),
                        ("pipeline (REST -> note)", whole)):
        print(f"{label:<28} wall {wall:7.1f} s   {seconds / wall:5.1f}x real time")
    print(f"pipeline / direct sequential wall-time ratio: {whole / direct_sequential:.2f}")
    print(f"pipeline / direct parallel   wall-time ratio: {whole / direct_parallel:.2f}")


if __name__ == "__main__":
    main()
