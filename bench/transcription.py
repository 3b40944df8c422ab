"""Transcription benchmark: the whole pipeline against faster-whisper called directly with its defaults.

For a set of audio files with reference text (and speaker turns where known) it runs:

- baseline: faster-whisper as a user would call it, in a child process: ``WhisperModel(model_dir)``
  with every default (compute type, threads, no VAD, temperature fallback), then
  ``transcribe(audio, language=...)`` on each file, one after another;
- pipeline: the system started as ``make run`` starts it (broker, services, gateway; default
  settings), every file uploaded over REST at once with its language, each note waited for until it
  is completed or failed (a too-short real-speech sentence ends ``failed`` at note generation, with
  its transcript kept), then the transcript read back through the API.

and prints per set and per language: WER (words lowercased, accents kept, punctuation dropped),
diarization error rate and role accuracy (share of reference speech time whose role — doctor /
patient — is right; time no segment covers counts as wrong) where turns are known, throughput
(audio seconds per wall second, start-up excluded on both sides: the model load, and for the pipeline
one note through the whole system before the clock starts, so that every consumer has joined the
broker) and peak resident memory (the baseline process; the pipeline's transcription service, from /proc VmHWM).

Sets: ``corpus`` (../shared/corpus/dev rendered with its render.py: espeak-ng consultations with
turn times and roles) and ``speech`` (../shared/external/speech: real human speech, manifests with
reference text). DER here scores roles as speakers (what the API returns; no forgiveness collar,
10 ms frames, a speaker's segments joined across pauses < 1 s, see bench/diarization.py).

    .venv/bin/python bench/transcription.py [--sets corpus speech] [--render /tmp/corpus_render]
    .venv/bin/python bench/transcription.py --long [--minutes 60]   # memory: 1-min vs long recording
    .venv/bin/python bench/transcription.py --sets corpus --save-transcripts /tmp/t && \
        .venv/bin/python bench/eval_notes.py ../shared/corpus/dev --transcripts /tmp/t   # notes from audio

``--long`` builds a 1-minute and a ``--minutes`` recording from the rendered corpus (FLAC) and sends
each through a freshly started system, reporting the transcription service's peak memory for both
and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from diarization import der, render_corpus, role_accuracy, to_frames  # noqa: E402

from services.transcription.model import ensure_default_model  # noqa: E402
from tests.support.system import start_system, wait_terminal  # noqa: E402

SHARED = REPO.parent / "shared"


@dataclass
class Item:
    set_name: str
    name: str
    path: Path
    language: str
    reference: str
    duration_s: float
    turns: list[tuple[int, int, str]] = field(default_factory=list)  # (start_ms, end_ms, role)


# --- data --------------------------------------------------------------------------------------


def corpus_items(render: Path) -> list[Item]:
    items = []
    for meta_path in sorted(render.glob("*.segments.json")):
        meta = json.loads(meta_path.read_text())
        turns = [(t["start_ms"], t["end_ms"], t["speaker"]) for t in meta["turns"]]
        items.append(Item("corpus", meta["id"], render / meta["audio"], meta["language"],
                          " ".join(t["text"] for t in meta["turns"]), meta["duration_ms"] / 1000, turns))  # fmt: skip
    return items


def speech_items(root: Path) -> list[Item]:
    items = []
    for manifest in sorted(root.glob("*/manifest.jsonl")):
        for line in manifest.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if row.get("speakers", 1) != 1:
                continue  # the three-speaker clip has no single reference text
            path = root / row["audio_path"]
            items.append(Item("speech", path.stem if path.parent.name in path.stem else f"{path.parent.name}/{path.stem}",
                              path, row["language"].split("-")[0].lower(), row["reference_text"], row["duration_s"]))  # fmt: skip
    return items


# --- scoring -----------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    text = unicodedata.normalize("NFC", text.lower())
    text = re.sub(r"(?<=\d)[.,](?=\d)", "", text)  # 1,000 / 39,4 -> one token
    return re.findall(r"[\w']+", text)


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1]


def wer(pairs: list[tuple[str, str]]) -> float:
    errors = sum(edit_distance(words(ref), words(hyp)) for ref, hyp in pairs)
    total = sum(len(words(ref)) for ref, _ in pairs)
    return errors / total if total else 0.0


def diarization_scores(item: Item, transcript: list[dict]) -> tuple[float, float]:
    """(DER, role accuracy) of the API's transcript items against the reference turns."""
    n = -(-int(item.duration_s * 1000) // 10) + 1
    ref = to_frames([(a, b, role) for a, b, role in item.turns], n)
    hyp_turns: list[list] = []
    for seg in sorted(transcript, key=lambda s: s["start_time_ms"]):
        role = seg["speaker"] if seg["speaker"] != "unspecified" else "?"
        if hyp_turns and hyp_turns[-1][2] == role and seg["start_time_ms"] - hyp_turns[-1][1] < 1000:
            hyp_turns[-1][1] = max(hyp_turns[-1][1], seg["end_time_ms"])
        else:
            hyp_turns.append([seg["start_time_ms"], seg["end_time_ms"], role])
    hyp = to_frames([tuple(t) for t in hyp_turns], n)
    d, *_ = der(ref, hyp)
    return d, role_accuracy(ref, hyp)


# --- baseline: faster-whisper with its defaults, in a child process ----------------------------


def baseline_child(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    from faster_whisper import WhisperModel

    started = time.perf_counter()
    model = WhisperModel(spec["model_dir"])
    load_s = time.perf_counter() - started
    texts, times = [], []
    started = time.perf_counter()
    for path, language in spec["files"]:
        t = time.perf_counter()
        segments, _ = model.transcribe(path, language=language)
        texts.append(" ".join(s.text.strip() for s in segments))
        times.append(time.perf_counter() - t)
    wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"texts": texts, "times": times, "wall_s": wall, "load_s": load_s, "peak_mb": peak_mb}))


def run_baseline(items: list[Item], model_dir: Path) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec:
        json.dump({"model_dir": str(model_dir), "files": [[str(i.path), i.language] for i in items]}, spec)
    try:
        out = subprocess.run([sys.executable, __file__, "--baseline-child", spec.name], check=True,
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    finally:
        Path(spec.name).unlink(missing_ok=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- pipeline: the whole system over REST -------------------------------------------------------


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_pipeline(items: list[Item], model_dir: Path, data_dir: Path, env: dict[str, str] | None = None) -> dict:
    system = start_system(data_dir, model_dir, extra_env=env)
    try:
        with system.client(timeout=300) as client:
            # Start-up excluded, as the baseline's model load is: one note through the whole
            # system first, so that every consumer group has joined the broker (a few seconds on
            # tansu) before the clock starts. The model itself is not warmed by this any more than
            # at the service's start.
            def upload(item: Item, name: str) -> str:
                with open(item.path, "rb") as handle:
                    response = client.post(
                        "/notes/v1/notes",
                        files={"audio": (item.path.name, handle, "application/octet-stream")},
                        data={"name": name, "language": item.language},
                    )
                response.raise_for_status()
                return response.json()["data"]["id"]

            wait_terminal(client, upload(items[0], "warm-up"), timeout_s=600)
            started = time.perf_counter()
            ids = [upload(item, item.name) for item in items]
            statuses = [wait_terminal(client, note_id, timeout_s=7200) for note_id in ids]
            wall = time.perf_counter() - started
            transcripts, failures = [], []
            for note_id in ids:
                data = client.get(f"/notes/v1/notes/{note_id}").json()["data"]
                transcripts.append(data.get("transcript") or [])
                failures.append((data.get("failure") or {}).get("code", ""))
            peak = peak_rss_mb(system.pid("transcription"))
    finally:
        system.stop()
    return {"wall_s": wall, "transcripts": transcripts, "statuses": statuses, "failures": failures, "peak_mb": peak}


# --- report --------------------------------------------------------------------------------------


def report(items: list[Item], base: dict, pipe: dict) -> None:
    audio_s = sum(i.duration_s for i in items)
    print(f"\n== {items[0].set_name}: {len(items)} files, {audio_s:.1f} s of audio")
    print(f"{'file':<28} {'lang':<4} {'audio s':>7} {'WER base':>8} {'WER pipe':>8} {'DER %':>6} {'role %':>6}  status")
    per_lang: dict[str, dict[str, list]] = {}
    ders, roles, weights = [], [], []
    for item, base_text, transcript, status, failure in zip(
        items, base["texts"], pipe["transcripts"], pipe["statuses"], pipe["failures"], strict=True
    ):
        pipe_text = " ".join(seg["text"] for seg in sorted(transcript, key=lambda s: s["start_time_ms"]))
        lang = per_lang.setdefault(item.language, {"base": [], "pipe": [], "audio": []})
        lang["base"].append((item.reference, base_text))
        lang["pipe"].append((item.reference, pipe_text))
        lang["audio"].append(item.duration_s)
        d = r = float("nan")
        if item.turns:
            d, r = diarization_scores(item, transcript)
            ders.append(d)
            roles.append(r)
            weights.append(item.duration_s)
        print(f"{item.name:<28} {item.language:<4} {item.duration_s:>7.1f} {wer([(item.reference, base_text)]) * 100:>8.1f} "
              f"{wer([(item.reference, pipe_text)]) * 100:>8.1f} {d * 100:>6.1f} {r * 100:>6.1f}  "
              f"{status}{' ' + failure if failure else ''}")  # fmt: skip
    print(f"{'language':<10} {'files':>5} {'audio s':>8} {'WER base %':>10} {'WER pipe %':>10}")
    for lang, data in sorted(per_lang.items()):
        print(f"{lang:<10} {len(data['audio']):>5} {sum(data['audio']):>8.1f} {wer(data['base']) * 100:>10.2f} "
              f"{wer(data['pipe']) * 100:>10.2f}")  # fmt: skip
    all_base = [p for d in per_lang.values() for p in d["base"]]
    all_pipe = [p for d in per_lang.values() for p in d["pipe"]]
    print(f"{'all':<10} {len(items):>5} {audio_s:>8.1f} {wer(all_base) * 100:>10.2f} {wer(all_pipe) * 100:>10.2f}")
    if ders:
        w = np.asarray(weights)
        print(f"DER (audio-weighted) {np.average(ders, weights=w) * 100:.2f} %, role accuracy "
              f"{np.average(roles, weights=w) * 100:.2f} % (min file {min(roles) * 100:.1f} %)")  # fmt: skip
    single = [(i, t) for i, t in zip(items, pipe["transcripts"], strict=True)
              if (i.turns and len({turn[2] for turn in i.turns}) == 1) or (not i.turns and t)]  # fmt: skip
    if single:
        one_role = sum(len({seg["speaker"] for seg in t}) == 1 for _, t in single)
        roles_seen = sorted({seg["speaker"] for _, t in single for seg in t})
        print(f"single-speaker files with one role throughout: {one_role}/{len(single)} (roles seen: {roles_seen})")
    b_tput, p_tput = audio_s / base["wall_s"], audio_s / pipe["wall_s"]
    print(f"throughput: baseline {b_tput:.2f}x real time ({base['wall_s']:.1f} s, one file after another, "
          f"load {base['load_s']:.1f} s excluded); pipeline {p_tput:.2f}x ({pipe['wall_s']:.1f} s, all in flight, "
          f"REST upload to terminal status); ratio {p_tput / b_tput:.2f}")  # fmt: skip
    print(f"peak memory: baseline process {base['peak_mb']:.0f} MB; transcription service {pipe['peak_mb']:.0f} MB")


def long_recording(render: Path, minutes: float, model_dir: Path, work: Path) -> None:
    """A 1-minute and a long recording, each through a fresh system: completion and peak memory."""
    import wave

    sources = sorted(render.glob("*.wav"))
    pieces, total = [], 0
    target = int(minutes * 60 * 16000)
    while total < target:
        for src in sources:
            with wave.open(str(src), "rb") as w:
                frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
            pieces.append(frames[: target - total])
            total += len(pieces[-1])
            if total >= target:
                break
    audio = np.concatenate(pieces)
    results = {}
    for label, samples in (("1 min", audio[: 60 * 16000]), (f"{minutes:g} min", audio)):
        wav = work / f"{label.replace(' ', '')}.wav"
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(samples.tobytes())
        flac = wav.with_suffix(".flac")
        subprocess.run(["sox", str(wav), str(flac)], check=True)
        wav.unlink()
        item = Item("long", label, flac, "pt", "", len(samples) / 16000)
        pipe = run_pipeline([item], model_dir, work / f"system-{label.replace(' ', '')}")
        segments = len(pipe["transcripts"][0])
        print(f"{label}: {pipe['statuses'][0]} {pipe['failures'][0]} in {pipe['wall_s']:.0f} s "
              f"({item.duration_s / pipe['wall_s']:.1f}x real time), {segments} segments, "
              f"transcription service peak {pipe['peak_mb']:.0f} MB")  # fmt: skip
        results[label] = pipe["peak_mb"]
    small, large = results.values()
    print(f"peak memory ratio {large / small:.2f} (long / 1 min)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="*", default=["corpus", "speech"], choices=["corpus", "speech"])
    parser.add_argument("--corpus", type=Path, default=SHARED / "corpus" / "dev")
    parser.add_argument("--render", type=Path, default=Path("/tmp/corpus_render"))
    parser.add_argument("--speech", type=Path, default=SHARED / "external" / "speech")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=None, help="data folder of the systems (default: a temp dir)")
    parser.add_argument("--only", nargs="*", default=None, help="file names to keep")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--long", action="store_true", help="1-minute vs long recording: completion and memory")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--baseline-child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--save-transcripts", type=Path, default=None,
                        help="write each file's transcript (the API's items) to DIR/<name>.json, for "
                             "bench/eval_notes.py --transcripts DIR")
    parser.add_argument("--env", nargs="*", default=[], help="KEY=VALUE settings for the system (e.g. SCRIBE_...)")
    args = parser.parse_args()
    if args.baseline_child:
        baseline_child(args.baseline_child)
        return 0

    model_dir = args.model_dir or ensure_default_model(Path(tempfile.gettempdir()) / "scribe-bench-model")
    work = args.work or Path(tempfile.mkdtemp(prefix="scribe-bench-"))
    env = dict(kv.split("=", 1) for kv in args.env)
    if args.long:
        render_corpus(args.corpus, args.render)
        long_recording(args.render, args.minutes, model_dir, work)
        return 0
    for set_name in args.sets:
        if set_name == "corpus":
            render_corpus(args.corpus, args.render)
            items = corpus_items(args.render)
        else:
            items = speech_items(args.speech)
        if args.only:
            items = [i for i in items if i.name in set(args.only)]
        if not items:
            continue
        base = ({"texts": [""] * len(items), "wall_s": float("nan"), "load_s": 0.0, "peak_mb": float("nan")}
                if args.no_baseline else run_baseline(items, model_dir))  # fmt: skip
        pipe = run_pipeline(items, model_dir, work / f"system-{set_name}", env)
        if args.save_transcripts:
            args.save_transcripts.mkdir(parents=True, exist_ok=True)
            for item, transcript in zip(items, pipe["transcripts"], strict=True):
                target = args.save_transcripts / f"{item.name.replace('/', '_')}.json"
                target.write_text(json.dumps({"transcript": transcript}, ensure_ascii=False))
        report(items, base, pipe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
