"""Speaker diarization and role assignment measured on rendered consultations and on real speech.

For each consultation of the corpus (rendered to audio with espeak-ng by ``render.py``, which writes
each turn's speaker and start/end ms as ground truth) this transcribes the audio with faster-whisper
(the engine's options: int8, beam 5, VAD, no conditioning on previous text; plus word timestamps,
2 CPU threads), runs ``services.transcription.diarization`` on it in 30 s chunks, as the engine
does, and prints per file, per language and overall:

- DER: missed speech + false alarm + speaker confusion over the reference speech time, with the
  optimal one-to-one mapping of found clusters to reference speakers, no forgiveness collar and
  10 ms frames. The reference turns include the pauses inside a turn, so the hypothesis turns are
  the returned segments of one speaker joined across gaps shorter than ``--bridge-ms`` (1 s; the
  corpus puts 300-700 ms between turns); "raw" scores the segments as they are.
- role accuracy: share of reference speech time whose predicted role (doctor/patient) equals the
  reference role; time no segment covers counts as wrong. "transcribed speech" is the same share
  over the reference speech that lies inside some segment (what the Diarizer is given).
- speakers found vs true, and the diarization time as a real-time factor (diarization seconds /
  audio seconds; the Whisper time is not included): wall clock, and CPU time of the process.

faster-whisper's ``no_speech_threshold`` is None here (``--no-speech-threshold``): with its default
0.6 it skips whole 30 s windows of these voices as "no speech" although VAD found speech in them
(20-35 % of the reference speech of dev-004/006/011/013), which measures the ASR, not the diarization.
The temperature fallback samples; the random seed is fixed so the cached transcripts are reproducible.

It also scores the Picovoice three-speaker clip (real speech, per-word speaker tags; the reference
turns come from aligning those words to Whisper's word timestamps, see ``picovoice_reference``, so
its DER measures the speaker confusion, not the speech detection).

    .venv/bin/python bench/diarization.py [--corpus ../shared/corpus/dev] [--render /tmp/corpus_render]
        [--cache /tmp/scribe-diarization-bench] [--model-dir DIR] [--only dev-001 ...] [--bridge-ms 1000]

The corpus is rendered into ``--render`` if it is not there yet; Whisper outputs are cached as JSON
under ``--cache`` so re-runs only pay for the diarization (about a minute).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import unicodedata
import wave
from collections.abc import Sequence
from dataclasses import asdict
from itertools import permutations
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.transcription.engine import Segment, Word  # noqa: E402

SHARED = REPO.parent / "shared"
SAMPLE_RATE = 16_000
FRAME_MS = 10
CHUNK_S = 30  # audio goes to the Diarizer in chunks of this length, as the engine streams it


# ---------------------------------------------------------------------------------------------
# audio and Whisper


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        if w.getframerate() != SAMPLE_RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16 kHz mono 16-bit WAV")
        data = w.readframes(w.getnframes())
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def default_model_dir() -> Path:
    from services.transcription.model import ensure_default_model

    for candidate in (REPO / "var" / "models" / "whisper-base-ct2",):
        if (candidate / "model.bin").is_file():
            return candidate
    return ensure_default_model(Path("/tmp/whisper-base"))


class Transcriber:
    """faster-whisper with the engine's options plus word timestamps; results cached as JSON."""

    def __init__(self, model_dir: Path | None, cache: Path, no_speech_threshold: float | None = None) -> None:
        self.model_dir = model_dir
        self.cache = cache
        self.no_speech_threshold = no_speech_threshold
        self._model = None

    def __call__(self, wav: Path, language: str | None) -> tuple[str, list[Segment]]:
        key = f"{wav.stem}-{language or 'auto'}-{wav.stat().st_size}-nst{self.no_speech_threshold}.json"
        cached = self.cache / "whisper" / key
        if cached.is_file():
            data = json.loads(cached.read_text())
        else:
            data = self._transcribe(wav, language)
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(cached)
        segments = [
            Segment(**{**s, "words": tuple(Word(**w) for w in s["words"])}) for s in data["segments"]
        ]
        return data["language"], segments

    def _transcribe(self, wav: Path, language: str | None) -> dict:
        if self._model is None:
            from faster_whisper import WhisperModel

            model_dir = self.model_dir or default_model_dir()
            self._model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=2,
                                       local_files_only=True)
        import ctranslate2

        ctranslate2.set_random_seed(0)  # temperature fallback samples: make the cache reproducible
        started = time.perf_counter()
        raw, info = self._model.transcribe(str(wav), language=language, beam_size=5, vad_filter=True,
                                           word_timestamps=True, condition_on_previous_text=False,
                                           no_speech_threshold=self.no_speech_threshold)
        segments = []
        for s in raw:
            text = s.text.strip()
            if not text:
                continue
            words = [
                asdict(Word(round(w.start * 1000), round(w.end * 1000), w.word.strip(), float(w.probability)))
                for w in (s.words or [])
                if w.word.strip()
            ]
            segments.append({"start_ms": round(s.start * 1000), "end_ms": round(s.end * 1000), "text": text,
                             "avg_logprob": s.avg_logprob, "no_speech_prob": s.no_speech_prob,
                             "words": words})  # fmt: skip
        print(f"  whisper {wav.name}: {info.duration:.0f}s audio in {time.perf_counter() - started:.0f}s",
              file=sys.stderr)  # fmt: skip
        return {"language": info.language, "segments": segments}


# ---------------------------------------------------------------------------------------------
# scoring


def to_frames(turns: Sequence[tuple[int, int, str]], n_frames: int) -> np.ndarray:
    """Label array (object) of ``n_frames`` 10 ms frames; '' where nobody speaks."""
    labels = np.full(n_frames, "", dtype=object)
    for start, end, who in turns:
        labels[max(0, start // FRAME_MS) : min(n_frames, -(-end // FRAME_MS))] = who
    return labels


def der(ref: np.ndarray, hyp: np.ndarray) -> tuple[float, float, float, float, dict[str, str]]:
    """(DER, missed, false alarm, confusion) as shares of reference speech, and the cluster mapping.

    One speaker per frame on both sides (the renders have no overlap). The mapping of hypothesis
    clusters to reference speakers maximises the matched time (exhaustive for the few speakers here).
    """
    ref_speech = ref != ""
    hyp_speech = hyp != ""
    total = int(ref_speech.sum())
    missed = int((ref_speech & ~hyp_speech).sum())
    false_alarm = int((~ref_speech & hyp_speech).sum())
    both = ref_speech & hyp_speech
    refs = sorted(set(ref[ref_speech]))
    hyps = sorted(set(hyp[hyp_speech]))
    overlap = {(h, r): int((both & (hyp == h) & (ref == r)).sum()) for h in hyps for r in refs}
    best, best_map = -1, {}
    if len(hyps) <= len(refs):
        for perm in permutations(refs, len(hyps)):
            mapping = dict(zip(hyps, perm, strict=True))
            score = sum(overlap[h, r] for h, r in mapping.items())
            if score > best:
                best, best_map = score, mapping
    else:
        for perm in permutations(hyps, len(refs)):
            mapping = dict(zip(perm, refs, strict=True))
            score = sum(overlap[h, r] for h, r in mapping.items())
            if score > best:
                best, best_map = score, mapping
    confusion = int(both.sum()) - max(best, 0)
    if total == 0:
        return 0.0, 0.0, 0.0, 0.0, best_map
    return (missed + false_alarm + confusion) / total, missed / total, false_alarm / total, confusion / total, best_map


def role_accuracy(ref_roles: np.ndarray, hyp_roles: np.ndarray) -> float:
    speech = ref_roles != ""
    return float((hyp_roles[speech] == ref_roles[speech]).mean()) if speech.any() else 1.0


# ---------------------------------------------------------------------------------------------
# runs


def diarize(diarizer_factory, audio: np.ndarray, segments: list[Segment], language: str):
    """Feed ``audio`` to a fresh Diarizer in CHUNK_S chunks with the segments that start in each."""
    diarizer = diarizer_factory()
    started = time.perf_counter()
    cpu_started = time.process_time()
    chunk = CHUNK_S * SAMPLE_RATE
    ordered = sorted(segments, key=lambda s: s.start_ms)
    index = 0
    for offset in range(0, max(len(audio), 1), chunk):
        offset_ms = offset * 1000 // SAMPLE_RATE
        end_ms = (offset + chunk) * 1000 // SAMPLE_RATE
        # A segment belongs to the chunk it starts in; give the chunk enough audio to cover it.
        mine = []
        while index < len(ordered) and ordered[index].start_ms < end_ms:
            mine.append(ordered[index])
            index += 1
        stop = max([offset + chunk] + [s.end_ms * SAMPLE_RATE // 1000 for s in mine])
        diarizer.add(audio[offset:stop], offset_ms, mine)
    result = diarizer.finish(language)
    return result, time.perf_counter() - started, time.process_time() - cpu_started, diarizer


def hyp_turns(result: list[Segment], clusters: list[int], bridge_ms: int) -> list[tuple[int, int, int, str]]:
    """(start, end, cluster, role) turns: consecutive segments of one speaker less than ``bridge_ms``
    apart are joined (the pauses inside a turn are speech in the reference; pyannote's
    ``min_duration_off`` does the same). ``bridge_ms=0`` scores the segments as they are."""
    turns: list[tuple[int, int, int, str]] = []
    for s, c in sorted(zip(result, clusters, strict=True), key=lambda item: item[0].start_ms):
        if turns and turns[-1][2] == c and s.start_ms - turns[-1][1] < bridge_ms:
            turns[-1] = (turns[-1][0], max(turns[-1][1], s.end_ms), c, s.speaker)
        else:
            turns.append((s.start_ms, s.end_ms, c, s.speaker))
    return turns


def score(ref: np.ndarray, ref_roles: np.ndarray | None, result: list[Segment], clusters: list[int],
          bridge_ms: int) -> dict[str, float]:  # fmt: skip
    n = len(ref)
    turns = hyp_turns(result, clusters, bridge_ms)
    hyp_c = to_frames([(a, b, f"c{c}") for a, b, c, _ in turns], n)
    d, miss, fa, conf, _ = der(ref, hyp_c)
    out = {"der": d, "miss": miss, "fa": fa, "conf": conf}
    if ref_roles is not None:
        hyp_r = to_frames([(a, b, role) for a, b, _, role in turns], n)
        out["role"] = role_accuracy(ref_roles, hyp_r)
        covered = (ref_roles != "") & (hyp_r != "")
        out["role_transcribed"] = float((hyp_r[covered] == ref_roles[covered]).mean()) if covered.any() else 1.0
    return out


def render_corpus(corpus: Path, out: Path) -> None:
    if all((out / f"{p.stem}.segments.json").is_file() for p in corpus.glob("*.json")):
        return
    print(f"rendering {corpus} -> {out}", file=sys.stderr)
    subprocess.run([sys.executable, str(corpus.parent / "render.py"), "--all", str(corpus), str(out)], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=SHARED / "corpus" / "dev")
    parser.add_argument("--render", type=Path, default=Path("/tmp/corpus_render"))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/scribe-diarization-bench"))
    parser.add_argument("--model-dir", type=Path, default=None, help="CTranslate2 Whisper model folder")
    parser.add_argument("--weights-dir", type=Path, default=None,
                        help="where the converted voice encoder is cached (default: CACHE/models)")
    parser.add_argument("--only", nargs="*", default=None, help="case ids to run")
    parser.add_argument("--transcribe-only", action="store_true", help="fill the Whisper cache and stop")
    parser.add_argument("--no-picovoice", action="store_true")
    parser.add_argument("--bridge-ms", type=int, default=1000,
                        help="for scoring, join consecutive segments of one speaker across gaps shorter than this "
                             "(the reference turns include their pauses); 0 scores the segments as they are")
    parser.add_argument("--no-speech-threshold", type=float, default=None,
                        help="faster-whisper's no_speech_threshold (default None: see the module docstring; "
                             "0.6 is faster-whisper's default)")
    args = parser.parse_args()

    render_corpus(args.corpus, args.render)
    transcribe = Transcriber(args.model_dir, args.cache, args.no_speech_threshold)
    cases = sorted(args.corpus.glob("*.json"))
    if args.only:
        cases = [c for c in cases if c.stem in set(args.only)]

    if args.transcribe_only:
        for case in cases:
            truth = json.loads((args.render / f"{case.stem}.segments.json").read_text())
            transcribe(args.render / f"{case.stem}.wav", truth["language"])
        if not args.no_picovoice:
            transcribe(picovoice_wav(), "en")
        return 0

    from services.transcription.diarization import Diarizer, load_encoder

    weights_dir = args.weights_dir or args.cache / "models"
    started = time.perf_counter()
    encoder = load_encoder(weights_dir)
    print(f"voice encoder ready in {time.perf_counter() - started:.2f}s ({weights_dir})")

    def factory():
        return Diarizer(weights_dir, encoder=encoder)

    print(f"DER: no collar, 10 ms frames, hypothesis turns = segments of one speaker joined across gaps "
          f"< {args.bridge_ms} ms; 'raw' = the segments as they are. role %: share of reference speech "
          f"labelled with its role; 'transcr.' = the same over speech inside some transcript segment.")  # fmt: skip
    print(f"{'case':<8} {'lang':<4} {'audio s':>7} {'DER %':>6} {'miss':>5} {'FA':>4} {'conf':>5} {'raw':>6} "
          f"{'role %':>6} {'transcr.':>8} {'spk':>5} {'RTF':>6} {'CPU RTF':>7}")  # fmt: skip
    rows = []
    for case in cases:
        truth = json.loads((args.render / f"{case.stem}.segments.json").read_text())
        wav = args.render / f"{case.stem}.wav"
        audio = read_wav(wav)
        _, segments = transcribe(wav, truth["language"])
        result, seconds, cpu, diarizer = diarize(factory, audio, segments, truth["language"])
        n_frames = -(-truth["duration_ms"] // FRAME_MS)
        ref = to_frames([(t["start_ms"], t["end_ms"], t["speaker"]) for t in truth["turns"]], n_frames)
        main_score = score(ref, ref, result, diarizer.clusters, args.bridge_ms)
        raw = score(ref, ref, result, diarizer.clusters, 0)
        n_true = len({t["speaker"] for t in truth["turns"]})
        n_found = len(set(diarizer.clusters))
        duration_s = len(audio) / SAMPLE_RATE
        speech_s = float((ref != "").sum()) * FRAME_MS / 1000
        rows.append({"lang": truth["language"], "speech": speech_s, "seconds": seconds, "cpu": cpu,
                     "duration": duration_s,
                     "raw": raw["der"], **main_score})  # fmt: skip
        print(f"{case.stem:<8} {truth['language']:<4} {duration_s:7.1f} {100 * main_score['der']:6.2f} "
              f"{100 * main_score['miss']:5.1f} {100 * main_score['fa']:4.1f} {100 * main_score['conf']:5.1f} "
              f"{100 * raw['der']:6.2f} {100 * main_score['role']:6.2f} {100 * main_score['role_transcribed']:8.2f} "
              f"{n_found:>2}/{n_true:<2} {seconds / duration_s:6.4f} {cpu / duration_s:7.4f}")  # fmt: skip
    print("\ntotals (each file weighted by its reference speech time):")
    for lang in [*sorted({r["lang"] for r in rows}), "all"]:
        sel = [r for r in rows if lang in ("all", r["lang"])]
        weight = sum(r["speech"] for r in sel)

        def avg(key: str, sel: list[dict] = sel, weight: float = weight) -> float:
            return 100 * sum(r[key] * r["speech"] for r in sel) / weight

        rtf = sum(r["seconds"] for r in sel) / sum(r["duration"] for r in sel)
        cpu_rtf = sum(r["cpu"] for r in sel) / sum(r["duration"] for r in sel)
        print(f"  {lang:<4} files {len(sel):>2}  DER {avg('der'):5.2f} % (miss {avg('miss'):.2f}, FA {avg('fa'):.2f}, "
              f"confusion {avg('conf'):.2f}; raw {avg('raw'):.2f})  role accuracy {avg('role'):6.2f} % "
              f"(transcribed speech {avg('role_transcribed'):6.2f} %)  RTF {rtf:.4f} (CPU {cpu_rtf:.4f})")  # fmt: skip

    if not args.no_picovoice:
        picovoice(transcribe, factory, args.bridge_ms)
    return 0


# ---------------------------------------------------------------------------------------------
# Picovoice three-speaker clip


def picovoice_wav() -> Path:
    return SHARED / "external" / "speech" / "picovoice_leopard" / "diarization_test.wav"


def _norm(word: str) -> str:
    word = unicodedata.normalize("NFKD", word.lower())
    return re.sub(r"[^a-z0-9']", "", word)


def picovoice_reference(tags: list[dict], words: list[Word], bridge_ms: int = 300) -> list[tuple[int, int, str]]:
    """Reference turns: the tagged words aligned (difflib) to Whisper's words, whose times they take.

    The clip's reference has word speaker tags but no times. Each tagged word that matched a
    Whisper word is speech of its speaker from that word's start to its end; consecutive words of
    one speaker less than ``bridge_ms`` apart are joined. A reference word Whisper missed
    contributes nothing (so this DER cannot count speech the transcript lacks entirely).
    """
    import difflib

    ref_words = [_norm(t["word"]) for t in tags]
    hyp_words = [_norm(w.text) for w in words]
    matcher = difflib.SequenceMatcher(a=ref_words, b=hyp_words, autojunk=False)
    spans: list[tuple[int, int, str]] = []
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            w = words[block.b + k]
            spans.append((w.start_ms, w.end_ms, f"s{tags[block.a + k]['speaker_tag']}"))
    turns: list[tuple[int, int, str]] = []
    for start, end, who in sorted(spans):
        if turns and turns[-1][2] == who and start - turns[-1][1] < bridge_ms:
            turns[-1] = (turns[-1][0], max(end, turns[-1][1]), who)
        else:
            turns.append((start, end, who))
    return turns


def picovoice(transcribe, factory, bridge_ms: int) -> None:
    folder = picovoice_wav().parent
    entry = json.loads((folder / "diarization.jsonl").read_text().splitlines()[0])
    wav = picovoice_wav()
    audio = read_wav(wav)
    _, segments = transcribe(wav, "en")
    words = [w for s in segments for w in s.words]
    result, seconds, _, diarizer = diarize(factory, audio, segments, "en")
    n_frames = -(-len(audio) * 1000 // SAMPLE_RATE // FRAME_MS)
    n_true = len({t["speaker_tag"] for t in entry["word_speaker_tags"]})
    print(f"\npicovoice diarization_test.wav ({len(audio) / SAMPLE_RATE:.1f}s, real speech, en, "
          f"{n_true} speakers, found {len(set(diarizer.clusters))}), RTF {seconds / (len(audio) / SAMPLE_RATE):.4f}")
    # the reference is built with the same bridging as the hypothesis
    for name, bridge in (("turns", bridge_ms), ("raw", 0)):
        ref_turns = picovoice_reference(entry["word_speaker_tags"], words, bridge)
        sc = score(to_frames(ref_turns, n_frames), None, result, diarizer.clusters, bridge)
        print(f"  DER ({name}) {100 * sc['der']:.2f} % (missed {100 * sc['miss']:.1f}, false alarm "
              f"{100 * sc['fa']:.1f}, confusion {100 * sc['conf']:.1f})")  # fmt: skip
    ref_turns = picovoice_reference(entry["word_speaker_tags"], words, bridge_ms)
    print("  reference turns (ms): " + ", ".join(f"{s}-{e} {who}" for s, e, who in ref_turns))
    for s, c in zip(result, diarizer.clusters, strict=True):
        print(f"  {s.start_ms:>6}-{s.end_ms:<6} speaker {c} {s.speaker:<8} {s.text}")


if __name__ == "__main__":
    raise SystemExit(main())
