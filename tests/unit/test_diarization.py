"""Speaker diarization + roles: the torch-free weights loader, the numpy encoder, clustering, role
cues and the Diarizer's decisions (on synthetic tones with a stand-in encoder, so no speech is needed).

The loader tests read Resemblyzer's ``pretrained.pt``, which ``scripts/install.sh`` installs
(``pip install --no-deps Resemblyzer==0.1.4``); nothing is downloaded here.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from services.transcription import diarization as d
from services.transcription.diarization import (
    DOCTOR,
    PATIENT,
    UNSPECIFIED,
    WEIGHT_SHAPES,
    Diarizer,
    EncoderWeightsError,
    agglomerative_cluster,
    clinician_cluster,
    load_encoder,
    role_evidence,
)
from services.transcription.engine import Segment, Word

SR = 16_000


def _weights_file() -> Path:
    try:
        return d.find_resemblyzer_weights()
    except EncoderWeightsError as exc:
        pytest.skip(f"{exc}")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> d.VoiceEncoder:
    _weights_file()
    return load_encoder(tmp_path_factory.mktemp("weights"))


# --- loader -----------------------------------------------------------------------------------


def test_find_spec_locates_the_weights_without_importing_the_package() -> None:
    import sys

    path = _weights_file()
    assert path.name == "pretrained.pt" and path.stat().st_size == 17_090_379
    assert "resemblyzer" not in sys.modules
    assert "torch" not in sys.modules and "librosa" not in sys.modules


def test_reads_the_checkpoint_without_torch() -> None:
    checkpoint = d.read_torch_checkpoint(_weights_file())
    state = checkpoint["model_state"]
    for name, shape in WEIGHT_SHAPES.items():
        assert state[name].shape == shape and state[name].dtype == np.float32
    # the LSTM's tensors are views into one flat storage: offsets must have been honoured
    assert not np.array_equal(state["lstm.weight_hh_l0"][:4], state["lstm.weight_ih_l1"][:4])
    assert np.isfinite(np.concatenate([a.ravel() for a in state.values() if isinstance(a, np.ndarray)])).all()


def test_conversion_is_cached_atomically(tmp_path: Path) -> None:
    load_encoder(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [d.CACHE_NAME]
    with np.load(tmp_path / d.CACHE_NAME) as npz:
        assert {k: npz[k].shape for k in npz.files} == WEIGHT_SHAPES
    # the cache is enough on its own
    encoder = load_encoder(tmp_path, source=tmp_path / "missing.pt")
    assert encoder.embed_utterance(np.zeros(SR, dtype=np.float32)).shape == (256,)


def test_a_damaged_cache_is_rebuilt(tmp_path: Path) -> None:
    (tmp_path / d.CACHE_NAME).write_bytes(b"not an npz")
    load_encoder(tmp_path)
    with np.load(tmp_path / d.CACHE_NAME) as npz:
        assert set(npz.files) == set(WEIGHT_SHAPES)


def test_a_corrupted_weights_file_fails_the_sha_check(tmp_path: Path) -> None:
    corrupted = tmp_path / "pretrained.pt"
    shutil.copyfile(_weights_file(), corrupted)
    with corrupted.open("r+b") as f:
        f.seek(100_000)
        byte = f.read(1)
        f.seek(100_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(EncoderWeightsError, match="sha256"):
        load_encoder(tmp_path / "cache", source=corrupted)
    assert not (tmp_path / "cache" / d.CACHE_NAME).exists()


def test_the_unpickler_refuses_other_globals(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        for header in (d._LEGACY_MAGIC, d._LEGACY_PROTOCOL, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        pickle.dump({"model_state": Evil()}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="print is not allowed"):
        d.read_torch_checkpoint(path)


def test_a_non_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(b"PK\x03\x04 not a legacy checkpoint")
    with pytest.raises(EncoderWeightsError):
        d.read_torch_checkpoint(path)


# --- features and embeddings ------------------------------------------------------------------


def _signal() -> np.ndarray:
    t = np.arange(int(SR * 2.5)) / SR
    rng = np.random.default_rng(0)
    x = (
        0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
        + 0.1 * np.sin(2 * np.pi * 1250 * t)
        + 0.02 * rng.standard_normal(t.size)
    )
    return x.astype(np.float32)


def test_mel_filterbank_matches_librosa_slaney() -> None:
    fb = d.mel_filterbank()
    assert fb.shape == (40, 201) and fb.dtype == np.float32 and (fb >= 0).all()
    # librosa.filters.mel(sr=16000, n_fft=400, n_mels=40), librosa 0.11
    np.testing.assert_allclose(fb.sum(axis=1)[:4], 0.02480904, rtol=1e-5)
    np.testing.assert_allclose(fb[5, 10:12], [0.00593974, 0.01332995], rtol=1e-5)


def test_mel_spectrogram_matches_resemblyzer() -> None:
    mel = d.mel_spectrogram(_signal())
    # resemblyzer.audio.wav_to_mel_spectrogram (librosa 0.11) on the same signal
    assert mel.shape == (251, 40) and mel.dtype == np.float32
    np.testing.assert_allclose(mel[10, :6], [8.644582e-03, 6.070102, 28.21684, 5.644759, 8.406191e-03, 1.337573e-03],
                               rtol=1e-4)  # fmt: skip
    assert float(mel.sum()) == pytest.approx(5759.9326, rel=1e-5)


def test_embedding_matches_resemblyzer_and_is_deterministic(encoder: d.VoiceEncoder) -> None:
    x = _signal()
    e = encoder.embed_utterance(x)
    assert e.shape == (256,) and e.dtype == np.float32
    assert float(np.linalg.norm(e)) == pytest.approx(1.0, abs=1e-5)
    # Resemblyzer 0.1.4 VoiceEncoder("cpu").embed_utterance(x) with torch 2.13 (CPU)
    top = [(245, 0.2755754), (149, 0.2297331), (2, 0.2064557), (190, 0.2049863), (11, 0.1989411)]
    for index, value in top:
        assert e[index] == pytest.approx(value, abs=2e-4)
    v = np.random.default_rng(1).standard_normal(256)
    assert float(e @ v) == pytest.approx(-0.4502250, abs=2e-3)
    np.testing.assert_array_equal(e, encoder.embed_utterance(x.copy()))


def test_partial_slices_follow_resemblyzer() -> None:
    # 0.5 s: one zero-padded partial; 2.5 s at rate 1.3: partials every 77 frames
    assert d.partial_slices(8000) == [slice(0, 160)]
    assert [s.start for s in d.partial_slices(40000)] == [0, 77]  # the third would cover < 75 %
    assert [s.start for s in d.partial_slices(40000, rate=2.0)] == [0, 50, 100]


def test_normalize_volume_only_raises() -> None:
    quiet = np.full(SR, 0.001, dtype=np.float32)
    loud = np.full(SR, 0.5, dtype=np.float32)
    assert 20 * np.log10(np.sqrt(np.mean(d.normalize_volume(quiet) ** 2))) == pytest.approx(-30.0, abs=0.01)
    np.testing.assert_array_equal(d.normalize_volume(loud), loud)


def test_speech_mask_drops_long_silences_only() -> None:
    tone = np.sin(2 * np.pi * 300 * np.arange(SR) / SR).astype(np.float32) * 0.3
    wav = np.concatenate([tone, np.zeros(SR, dtype=np.float32), tone, np.zeros(SR // 10, dtype=np.float32), tone])
    kept = int(d.speech_mask(wav).sum())
    # the 1 s gap is cut down to a couple of windows, the 100 ms one is kept
    assert 3 * SR + SR // 10 <= kept <= 3 * SR + SR // 10 + 5 * 480


# --- clustering -------------------------------------------------------------------------------


def _blobs(sizes: list[int], spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(sizes), 256))
    points, truth = [], []
    for c, n in enumerate(sizes):
        points.append(centres[c] + spread * rng.standard_normal((n, 256)))
        truth += [c] * n
    order = rng.permutation(len(truth))
    return np.concatenate(points)[order], np.array(truth)[order]


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return len(set(zip(a.tolist(), b.tolist(), strict=True))) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("sizes", [[30], [20, 12], [15, 10, 4]])
def test_agglomerative_clustering_finds_the_speakers(sizes: list[int]) -> None:
    points, truth = _blobs(sizes, spread=0.5)
    labels = agglomerative_cluster(points, threshold=0.5)
    assert _same_partition(labels, truth)
    assert labels[0] == 0 and set(labels.tolist()) == set(range(len(sizes)))


def test_clustering_respects_max_clusters_and_is_deterministic() -> None:
    points, _ = _blobs([10, 10, 10], spread=0.5)
    labels = agglomerative_cluster(points, threshold=0.5, max_clusters=2)
    assert len(set(labels.tolist())) == 2
    np.testing.assert_array_equal(labels, agglomerative_cluster(points.copy(), threshold=0.5, max_clusters=2))
    assert agglomerative_cluster(np.zeros((0, 256)), 0.5).shape == (0,)


# --- roles from text --------------------------------------------------------------------------

DIALOGUES = {
    "pt": (
        ["Bom dia! O que aconteceu com a Mel?", "Desde quando ela está assim?",
         "Vamos pesar. Doze quilos. Temperatura trinta e nove graus.",
         "Vou receitar amoxicilina, duzentos e cinquenta miligramas, pela boca, a cada doze horas, por sete dias.",
         "Retorno em uma semana. Se piorar, me liga."],
        ["Bom dia, doutor. Ela está tossindo desde ontem.", "Desde sábado, eu acho. Minha filha percebeu primeiro.",
         "Nossa, ela engordou.", "A cada doze horas, tá bom. Obrigada, doutor."],
    ),
    "en": (
        ["Good morning, what brings you in today?", "How long has the cough been going on?",
         "Let me listen to your lungs. Your temperature is thirty eight degrees.",
         "I'll prescribe amoxicillin five hundred milligrams by mouth three times a day for seven days.",
         "Come back in two weeks if it's not better."],
        ["Hi doctor. I've been coughing since last week.", "My chest hurts at night and I feel tired.",
         "Okay. Thank you, doctor."],
    ),
    "es": (
        ["Buenos días, ¿qué le pasa a Toby?", "¿Desde cuándo no come?",
         "Vamos a revisarlo. Pesa ocho kilos, temperatura treinta y nueve grados.",
         "Le voy a recetar metronidazol, quince miligramos por kilo, por boca, cada doce horas, durante cinco días.",
         "La revisión es en una semana."],
        ["Buenos días, doctora. Desde ayer no quiere comer y vomitó dos veces.", "Mi perro es muy goloso.",
         "Vale, cada doce horas. Gracias, doctora."],
    ),
}


@pytest.mark.parametrize("language", ["pt", "en", "es"])
def test_the_clinician_reads_like_one(language: str) -> None:
    doctor, patient = DIALOGUES[language]
    assert role_evidence(doctor, language).score > 5 > role_evidence(patient, language).score
    # cluster ids and who spoke first do not decide it
    assert clinician_cluster({0: patient, 1: doctor}, language, first_speaker=0) == 1
    assert clinician_cluster({3: doctor, 1: patient, 2: ["Oi."]}, language, first_speaker=1) == 3


def test_text_cues_ignore_accents_and_case() -> None:
    assert role_evidence(["VOU RECEITAR DIPIRONA"], "pt").doctor == role_evidence(["vou receitar dipirona"], "pt").doctor
    assert role_evidence(["Temperatura"], "pt-BR").doctor > 0
    assert role_evidence(["temperature"], "de").doctor > 0  # unknown languages fall back to English cues


def test_who_speaks_first_only_breaks_near_ties() -> None:
    assert clinician_cluster({0: ["Oi."], 1: ["Olá."]}, "pt", first_speaker=1) == 1
    assert clinician_cluster({0: ["Oi."], 1: ["Olá."]}, "pt", first_speaker=0) == 0


# --- the Diarizer on tones --------------------------------------------------------------------


class ToneEncoder:
    """Stand-in for the voice encoder: a window's embedding is the mean of its frames' normalised
    mel spectra, so a window holding two "voices" leans to the one it holds more of.

    Two pure tones far apart in pitch are then two perfectly separable voices.
    """

    def forward(self, mels: np.ndarray) -> np.ndarray:
        frames = mels / np.maximum(np.linalg.norm(mels, axis=2, keepdims=True), 1e-9)
        out = np.zeros((len(mels), 256), dtype=np.float32)
        out[:, :40] = frames.mean(axis=1)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


VOICE = {"A": 180.0, "B": 2500.0}


def _audio(plan: list[tuple[int, int, str]], total_ms: int) -> np.ndarray:
    """Tones per (start_ms, end_ms, voice); silence elsewhere."""
    audio = np.zeros(total_ms * SR // 1000, dtype=np.float32)
    for start, end, voice in plan:
        t = np.arange((end - start) * SR // 1000) / SR
        audio[start * SR // 1000 : end * SR // 1000] = 0.3 * np.sin(2 * np.pi * VOICE[voice] * t)
    return audio


def _segment(text: str, start: int, end: int, with_words: bool = True) -> Segment:
    tokens = text.split()
    step = (end - start) / len(tokens)
    words = tuple(
        Word(round(start + i * step), round(start + (i + 1) * step), (" " if i else "") + tok, 0.9)
        for i, tok in enumerate(tokens)
    )
    return Segment(start, end, text, -0.3, 0.01, words if with_words else ())


def _diarizer(**kwargs) -> Diarizer:
    return Diarizer(Path("/nonexistent"), encoder=ToneEncoder(), **kwargs)  # type: ignore[arg-type]


DOCTOR_LINE = "Bom dia, o que aconteceu? Vamos pesar e medir a temperatura."
OWNER_LINE = "Bom dia, doutora. Ele vomitou desde ontem, eu acho que comeu lixo."


def test_two_voices_get_two_roles_from_the_text() -> None:
    plan = [(0, 4000, "A"), (4500, 9000, "B"), (9500, 14000, "A"), (14500, 18000, "B")]
    segments = [
        _segment(DOCTOR_LINE, 0, 4000),
        _segment(OWNER_LINE, 4500, 9000),
        _segment("Vou receitar metronidazol, quinze miligramas por quilo, a cada doze horas.", 9500, 14000),
        _segment("Tá bom, obrigada, doutora.", 14500, 18000),
    ]
    diarizer = _diarizer()
    audio = _audio(plan, 18000)
    # fed in two chunks, segments given by the chunk they start in
    diarizer.add(audio[: 10 * SR], 0, segments[:3])
    diarizer.add(audio[10 * SR :], 10_000, segments[3:])
    result = diarizer.finish("pt")
    assert [s.speaker for s in result] == [DOCTOR, PATIENT, DOCTOR, PATIENT]
    assert [s.text for s in result] == [s.text for s in segments]
    assert diarizer.clusters == [0, 1, 0, 1] and diarizer.stats.speakers == 2


def test_the_owner_speaking_first_does_not_make_them_the_doctor() -> None:
    plan = [(0, 4000, "B"), (4500, 9000, "A"), (9500, 12000, "B")]
    segments = [_segment(OWNER_LINE, 0, 4000), _segment(DOCTOR_LINE, 4500, 9000),
                _segment("Obrigada, doutora.", 9500, 12000)]  # fmt: skip
    diarizer = _diarizer()
    diarizer.add(_audio(plan, 12000), 0, segments)
    assert [s.speaker for s in diarizer.finish("pt")] == [PATIENT, DOCTOR, PATIENT]


def test_a_single_speaker_is_all_doctor() -> None:
    plan = [(0, 3000, "B"), (3500, 7000, "B"), (7500, 9000, "B")]
    segments = [_segment(OWNER_LINE, 0, 3000), _segment("Obrigada, doutora.", 3500, 7000),
                _segment("Ele vomitou.", 7500, 9000)]  # fmt: skip
    diarizer = _diarizer()
    diarizer.add(_audio(plan, 9000), 0, segments)
    result = diarizer.finish("pt")
    assert [s.speaker for s in result] == [DOCTOR] * 3
    assert diarizer.stats.speakers == 1


def test_a_segment_holding_two_speakers_is_split_at_the_word_boundary() -> None:
    # the last segment: voice B for its first six words (9000-12000), voice A for the last six
    plan = [(0, 4000, "A"), (4500, 8500, "B"), (9000, 12000, "B"), (12000, 15000, "A")]
    mixed_words = tuple(
        Word(9000 + i * 500, 9500 + i * 500, (" " if i else "") + tok, 0.9)
        for i, tok in enumerate("ele não quis comer nada hoje vou receitar dipirona a cada oito".split())
    )
    segments = [
        _segment(DOCTOR_LINE, 0, 4000),
        _segment(OWNER_LINE, 4500, 8500),
        Segment(9000, 15000, " ".join(w.text.strip() for w in mixed_words), -0.3, 0.01, mixed_words),
    ]
    diarizer = _diarizer()
    diarizer.add(_audio(plan, 15000), 0, segments)
    result = diarizer.finish("pt")
    assert [s.speaker for s in result] == [DOCTOR, PATIENT, PATIENT, DOCTOR]
    first, second = result[2], result[3]
    assert (first.start_ms, first.end_ms, second.start_ms, second.end_ms) == (9000, 12000, 12000, 15000)
    assert first.text == "ele não quis comer nada hoje" and second.text == "vou receitar dipirona a cada oito"
    assert first.words == mixed_words[:6] and second.words == mixed_words[6:]
    assert diarizer.stats.splits == 1


def test_short_and_wordless_segments_take_their_neighbours_speaker() -> None:
    plan = [(0, 4000, "A"), (4200, 4500, "A"), (5000, 9000, "B"), (9100, 9400, "B")]
    segments = [
        _segment(DOCTOR_LINE, 0, 4000),
        _segment("Certo.", 4200, 4500, with_words=False),
        _segment(OWNER_LINE, 5000, 9000),
        _segment("Sim.", 9100, 9400),
    ]
    diarizer = _diarizer()
    diarizer.add(_audio(plan, 9400), 0, segments)
    assert [s.speaker for s in diarizer.finish("pt")] == [DOCTOR, DOCTOR, PATIENT, PATIENT]


def test_nothing_to_embed_is_unspecified_and_empty_is_empty() -> None:
    diarizer = _diarizer()
    assert diarizer.finish("pt") == []
    diarizer.add(_audio([(0, 300, "A")], 300), 0, [_segment("Oi.", 0, 300)])
    assert [s.speaker for s in diarizer.finish("pt")] == [UNSPECIFIED]


def test_segments_come_back_in_time_order() -> None:
    plan = [(0, 4000, "A"), (4500, 9000, "B")]
    segments = [_segment(OWNER_LINE, 4500, 9000), _segment(DOCTOR_LINE, 0, 4000)]
    diarizer = _diarizer()
    diarizer.add(_audio(plan, 9000), 0, segments)
    result = diarizer.finish("pt")
    assert [s.start_ms for s in result] == [0, 4500]
    assert [s.speaker for s in result] == [DOCTOR, PATIENT]


def test_finish_can_run_again_after_more_audio() -> None:
    plan = [(0, 4000, "A"), (4500, 9000, "B"), (9500, 13000, "A")]
    segments = [_segment(DOCTOR_LINE, 0, 4000), _segment(OWNER_LINE, 4500, 9000),
                _segment("Vou receitar dipirona, dez gotas a cada oito horas.", 9500, 13000)]  # fmt: skip
    audio = _audio(plan, 13000)
    diarizer = _diarizer()
    diarizer.add(audio[: 4 * SR], 0, segments[:1])
    assert [s.speaker for s in diarizer.finish("pt")] == [DOCTOR]
    diarizer.add(audio[4 * SR :], 4000, segments[1:])
    first = diarizer.finish("pt")
    assert [s.speaker for s in first] == [DOCTOR, PATIENT, DOCTOR]
    assert diarizer.finish("pt") == first


def test_limiting_blas_threads_changes_nothing_but_speed(encoder: d.VoiceEncoder) -> None:
    mels = np.random.default_rng(2).random((3, 160, 40), dtype=np.float32)
    free = d.VoiceEncoder.__new__(d.VoiceEncoder)
    free.__dict__.update(encoder.__dict__, blas_threads=None)
    np.testing.assert_allclose(encoder.forward(mels), free.forward(mels), atol=1e-6)
