"""Who spoke when, and which speaker is the clinician: speaker diarization + role assignment.

Speaker embeddings come from Resemblyzer's pretrained GE2E voice encoder (Apache-2.0; the 17 MB
weights ship inside its wheel, installed with ``pip install --no-deps Resemblyzer==0.1.4``), run
here in numpy: the product imports neither torch nor librosa nor Resemblyzer's Python code.

- ``load_encoder(weights_dir)`` finds ``resemblyzer/pretrained.pt`` without importing the package,
  checks its pinned sha256, reads the legacy torch checkpoint with a restricted unpickler (only the
  tensor-rebuild function, the storage classes and OrderedDict are allowed) and caches the arrays as
  an ``.npz`` in ``weights_dir`` (written atomically); later loads read only the ``.npz``.
- ``VoiceEncoder`` is the model: 40-band mel power spectrogram (16 kHz, 25 ms Hann window, 10 ms hop,
  librosa's Slaney filterbank, as ``resemblyzer/audio.py``), 3-layer LSTM (256) -> linear -> ReLU ->
  L2 norm over partial utterances of 160 frames (1.6 s), averaged as ``embed_utterance`` does. It is
  read-only after construction and may be shared between threads.
- ``Diarizer`` (one per transcription) takes the audio chunk by chunk with the transcript segments
  of each chunk and keeps only embeddings: one per speech "piece" (the segment cut at sentence ends
  and long pauses, then cut further where sliding windows over the words disagree). ``finish``
  clusters the pieces (average-linkage agglomerative clustering on cosine distance, speaker count
  estimated by a distance threshold), re-attaches pieces too short to embed to their neighbours,
  joins the pieces of one speaker back into segments (so a segment is split only where the speaker
  changes), and names the clinician's cluster from the text (questions, clinical vocabulary,
  exam/prescription/instruction phrases in pt/en/es vs. history/symptom phrases and addressing the
  doctor; who speaks first is a weak cue). One cluster: everything is ``doctor``; more than two:
  the clinician's cluster is ``doctor``, all others ``patient``.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import io
import logging
import math
import os
import pickle
import re
import struct
import tempfile
import threading
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from services.transcription.engine import Segment, Word

logger = logging.getLogger(__name__)

DOCTOR = "doctor"
PATIENT = "patient"
UNSPECIFIED = "unspecified"

# --- the weights ------------------------------------------------------------------------------

RESEMBLYZER_VERSION = "0.1.4"
# sha256 of resemblyzer/pretrained.pt in the Resemblyzer 0.1.4 wheel (17,090,379 bytes).
RESEMBLYZER_WEIGHTS_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"
RESEMBLYZER_WEIGHTS_NAME = "pretrained.pt"
CACHE_NAME = f"resemblyzer-{RESEMBLYZER_VERSION}-ge2e-{RESEMBLYZER_WEIGHTS_SHA256[:12]}.npz"

SAMPLE_RATE = 16_000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s
HIDDEN = 256
EMBEDDING = 256
LAYERS = 3
AUDIO_NORM_TARGET_DBFS = -30.0
_INT16_MAX = 2**15 - 1

# name -> shape of every array the encoder needs
WEIGHT_SHAPES: dict[str, tuple[int, ...]] = {
    **{
        name: shape
        for layer in range(LAYERS)
        for name, shape in (
            (f"lstm.weight_ih_l{layer}", (4 * HIDDEN, N_MELS if layer == 0 else HIDDEN)),
            (f"lstm.weight_hh_l{layer}", (4 * HIDDEN, HIDDEN)),
            (f"lstm.bias_ih_l{layer}", (4 * HIDDEN,)),
            (f"lstm.bias_hh_l{layer}", (4 * HIDDEN,)),
        )
    },
    "linear.weight": (EMBEDDING, HIDDEN),
    "linear.bias": (EMBEDDING,),
}


class EncoderWeightsError(RuntimeError):
    """The voice encoder's weights are missing, altered, or not in the expected format."""


def find_resemblyzer_weights() -> Path:
    """Path of ``pretrained.pt`` inside the installed Resemblyzer package (not imported)."""
    spec = importlib.util.find_spec("resemblyzer")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / RESEMBLYZER_WEIGHTS_NAME
        if candidate.is_file():
            return candidate
    raise EncoderWeightsError(
        f"Resemblyzer's {RESEMBLYZER_WEIGHTS_NAME} was not found; install the weights with "
        f"`pip install --no-deps Resemblyzer=={RESEMBLYZER_VERSION}` (scripts/install.sh does)"
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# Torch storage class names -> numpy dtypes, for the legacy (non-zip) checkpoint format.
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass
class _TensorRef:
    """A tensor whose storage bytes come after the pickle; materialised once they are read."""

    key: str
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: Any, storage_offset: int, size: Any, stride: Any, *_: Any) -> _TensorRef:
    if not isinstance(storage, str):
        raise pickle.UnpicklingError("tensor without a storage")
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


class _CheckpointUnpickler(pickle.Unpickler):
    """Allows exactly the globals a plain tensor checkpoint needs; anything else is refused."""

    def __init__(self, file: io.BufferedIOBase, storages: dict[str, tuple[np.dtype, int]] | None) -> None:
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if self._storages is not None:
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return _rebuild_tensor_v2
            if module == "torch" and name in _STORAGE_DTYPES:
                return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a weights file")

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None:
            raise pickle.UnpicklingError("unexpected persistent id")
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel, view_metadata = pid
        if not isinstance(storage_type, _StorageType) or view_metadata is not None:
            raise pickle.UnpicklingError("unsupported storage")
        self._storages[str(key)] = (storage_type.dtype, int(numel))
        return str(key)


def read_torch_checkpoint(path: Path) -> dict[str, Any]:
    """Read a legacy-format (pre-zip) torch checkpoint into nested dicts of numpy arrays.

    Layout: pickles of the magic number, the protocol version and system info, then the object
    pickle whose tensors name storages by key, then the list of storage keys, then for each key an
    int64 element count and the raw little-endian data.
    """
    with open(path, "rb") as f:
        header = _CheckpointUnpickler(f, None)
        try:
            magic = header.load()
            protocol = header.load()
            sys_info = header.load()
        except Exception as exc:
            raise EncoderWeightsError(f"{path} is not a legacy torch checkpoint: {exc}") from exc
        if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL or not isinstance(sys_info, dict):
            raise EncoderWeightsError(f"{path} is not a legacy torch checkpoint")
        if not sys_info.get("little_endian", True):
            raise EncoderWeightsError(f"{path} was written big-endian")
        storages: dict[str, tuple[np.dtype, int]] = {}
        obj = _CheckpointUnpickler(f, storages).load()
        keys = _CheckpointUnpickler(f, None).load()
        if not isinstance(keys, list):
            raise EncoderWeightsError(f"{path}: bad storage key list")
        data: dict[str, np.ndarray] = {}
        for key in keys:
            dtype, numel = storages[str(key)]
            (count,) = struct.unpack("<q", f.read(8))
            if count != numel:
                raise EncoderWeightsError(f"{path}: storage {key} holds {count} elements, expected {numel}")
            raw = f.read(count * dtype.itemsize)
            if len(raw) != count * dtype.itemsize:
                raise EncoderWeightsError(f"{path}: truncated storage {key}")
            data[str(key)] = np.frombuffer(raw, dtype=dtype)

    def materialise(value: Any) -> Any:
        if isinstance(value, _TensorRef):
            storage = data[value.key]
            if not value.shape:
                return storage[value.offset].copy()
            last = value.offset + sum((n - 1) * s for n, s in zip(value.shape, value.stride, strict=True))
            if last >= storage.size:
                raise EncoderWeightsError(f"{path}: tensor overruns its storage")
            view = np.lib.stride_tricks.as_strided(
                storage[value.offset :],
                shape=value.shape,
                strides=tuple(s * storage.itemsize for s in value.stride),
                writeable=False,
            )
            return np.array(view, dtype=storage.dtype.newbyteorder("="))
        if isinstance(value, dict):
            return {k: materialise(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(materialise(v) for v in value)
        return value

    return materialise(obj)


def convert_resemblyzer_weights(source: Path) -> dict[str, np.ndarray]:
    """Check ``source``'s sha256 and return the encoder's arrays (float32) from it."""
    digest = sha256_file(source)
    if digest != RESEMBLYZER_WEIGHTS_SHA256:
        raise EncoderWeightsError(
            f"{source} has sha256 {digest}, expected {RESEMBLYZER_WEIGHTS_SHA256} "
            f"(Resemblyzer {RESEMBLYZER_VERSION}'s {RESEMBLYZER_WEIGHTS_NAME})"
        )
    checkpoint = read_torch_checkpoint(source)
    state = checkpoint.get("model_state") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise EncoderWeightsError(f"{source} has no model_state")
    weights = {}
    for name, shape in WEIGHT_SHAPES.items():
        array = state.get(name)
        if not isinstance(array, np.ndarray) or array.shape != shape:
            raise EncoderWeightsError(f"{source}: {name} missing or not of shape {shape}")
        weights[name] = np.ascontiguousarray(array, dtype=np.float32)
    return weights


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            weights = {name: np.asarray(npz[name], dtype=np.float32) for name in WEIGHT_SHAPES}
    except (OSError, KeyError, ValueError) as exc:
        logger.warning("ignoring unreadable voice encoder cache %s: %s", path, exc)
        return None
    if any(weights[n].shape != s or not np.isfinite(weights[n]).all() for n, s in WEIGHT_SHAPES.items()):
        logger.warning("ignoring voice encoder cache %s with unexpected arrays", path)
        return None
    return weights


def _write_cache(path: Path, weights: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **weights)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; it holds public weights
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_encoder(weights_dir: Path, source: Path | None = None) -> VoiceEncoder:
    """The numpy voice encoder, from the ``.npz`` cache in ``weights_dir`` or converted into it.

    ``source`` replaces the installed ``resemblyzer/pretrained.pt`` (tests). Raises
    ``EncoderWeightsError`` when the weights are missing or their sha256 does not match.
    """
    cache = Path(weights_dir) / CACHE_NAME
    weights = _read_cache(cache) if cache.is_file() else None
    if weights is None:
        src = Path(source) if source is not None else find_resemblyzer_weights()
        weights = convert_resemblyzer_weights(src)
        try:
            _write_cache(cache, weights)
            logger.info("converted voice encoder weights %s -> %s", src, cache)
        except OSError as exc:  # a read-only data dir costs a conversion per start, nothing more
            logger.warning("could not cache the voice encoder weights in %s: %s", cache, exc)
    return VoiceEncoder(weights)


# --- the model --------------------------------------------------------------------------------


def _hz_to_mel(freqs: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa ``htk=False``): linear below 1 kHz, logarithmic above."""
    freqs = np.asarray(freqs, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = freqs / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_t = freqs >= min_log_hz
    mels[log_t] = min_log_mel + np.log(freqs[log_t] / min_log_hz) / logstep
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_t = mels >= min_log_mel
    freqs[log_t] = min_log_hz * np.exp(logstep * (mels[log_t] - min_log_mel))
    return freqs


def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels) (Slaney scale and area norm), float32."""
    fftfreqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([sr / 2.0]))[0], n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    weights = np.zeros((n_mels, len(fftfreqs)))
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


_MEL_BASIS = mel_filterbank()
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic Hann


def mel_spectrogram(wav: np.ndarray) -> np.ndarray:
    """(frames, 40) mel power spectrogram as ``resemblyzer.audio.wav_to_mel_spectrogram`` computes it.

    librosa.feature.melspectrogram defaults: centred frames with zero padding, periodic Hann
    window, power 2, no log.
    """
    wav = np.asarray(wav, dtype=np.float32)
    padded = np.pad(wav, N_FFT // 2)
    n_frames = 1 + len(wav) // HOP
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(n_frames, N_FFT), strides=(HOP * padded.itemsize, padded.itemsize), writeable=False
    )
    spectrum = np.fft.rfft(frames * _WINDOW, axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    return power @ _MEL_BASIS.T


def normalize_volume(wav: np.ndarray, target_dbfs: float = AUDIO_NORM_TARGET_DBFS) -> np.ndarray:
    """Raise (never lower) the level to ``target_dbfs`` RMS, as ``resemblyzer.audio.normalize_volume``."""
    wav = np.asarray(wav, dtype=np.float32)
    rms = float(np.sqrt(np.mean((wav.astype(np.float64) * _INT16_MAX) ** 2))) if wav.size else 0.0
    if rms <= 0:
        return wav
    change = target_dbfs - 20 * math.log10(rms / _INT16_MAX)
    if change <= 0:
        return wav
    return (wav * (10 ** (change / 20))).astype(np.float32)


def partial_slices(n_samples: int, rate: float = 1.3, min_coverage: float = 0.75) -> list[slice]:
    """Mel-frame slices of the partial utterances, as ``VoiceEncoder.compute_partial_slices``."""
    if not 0 < min_coverage <= 1:
        raise ValueError("min_coverage must be in (0, 1]")
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    frame_step = int(np.round((SAMPLE_RATE / rate) / HOP))
    if not 0 < frame_step <= PARTIAL_FRAMES:
        raise ValueError(f"rate {rate} out of range")
    steps = max(1, n_frames - PARTIAL_FRAMES + frame_step + 1)
    slices = [slice(i, i + PARTIAL_FRAMES) for i in range(0, steps, frame_step)]
    last = slices[-1]
    coverage = (n_samples - last.start * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < min_coverage and len(slices) > 1:
        slices = slices[:-1]
    return slices


def _openblas_thread_setter() -> Any:
    """numpy's OpenBLAS ``openblas_set_num_threads_local`` (OpenBLAS >= 0.3.27), or None."""
    import ctypes
    import glob

    candidates: list[str] = []
    try:  # the libraries this process has loaded
        with open("/proc/self/maps") as maps:
            candidates += sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
    except OSError:
        pass
    candidates += sorted(glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas*")))
    for path in candidates:
        try:
            setter = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        setter.restype = ctypes.c_int
        setter.argtypes = [ctypes.c_int]
        return setter
    return None


_BLAS_SETTER: Any = None
_BLAS_SETTER_LOOKED_UP = False


class _BlasThreads:
    """Limit OpenBLAS to ``n`` threads for the calling thread only, then restore (no-op elsewhere).

    The LSTM's per-step matrix products are small: with OpenBLAS' default (a thread per core)
    on a machine also running Whisper, threads wait on each other and a window takes ~40 ms
    instead of ~7 ms on one thread.
    """

    def __init__(self, n: int | None) -> None:
        global _BLAS_SETTER, _BLAS_SETTER_LOOKED_UP
        if n is not None and not _BLAS_SETTER_LOOKED_UP:
            _BLAS_SETTER = _openblas_thread_setter()
            _BLAS_SETTER_LOOKED_UP = True
        self._n = n
        self._previous: int | None = None

    def __enter__(self) -> None:
        if self._n is not None and _BLAS_SETTER is not None:
            self._previous = int(_BLAS_SETTER(self._n))

    def __exit__(self, *_: object) -> None:
        if self._previous is not None:
            _BLAS_SETTER(self._previous)
            self._previous = None


class VoiceEncoder:
    """Resemblyzer's GE2E speaker encoder in numpy. Read-only after construction (thread-safe).

    ``blas_threads``: OpenBLAS threads for the calling thread while it runs the model (None:
    leave numpy's setting alone).
    """

    def __init__(self, weights: dict[str, np.ndarray], batch_size: int = 64, blas_threads: int | None = 1) -> None:
        self.batch_size = batch_size
        self.blas_threads = blas_threads
        self._layers = []
        for layer in range(LAYERS):
            w_ih = weights[f"lstm.weight_ih_l{layer}"]
            w_hh = weights[f"lstm.weight_hh_l{layer}"]
            bias = weights[f"lstm.bias_ih_l{layer}"] + weights[f"lstm.bias_hh_l{layer}"]
            self._layers.append(
                (np.ascontiguousarray(w_ih.T), np.ascontiguousarray(w_hh.T), bias.astype(np.float32))
            )
        self._linear_w = np.ascontiguousarray(weights["linear.weight"].T)
        self._linear_b = weights["linear.bias"].astype(np.float32)

    def forward(self, mels: np.ndarray) -> np.ndarray:
        """(batch, frames, 40) mel spectrograms -> (batch, 256) L2-normalised embeddings."""
        mels = np.asarray(mels, dtype=np.float32)
        out = np.empty((mels.shape[0], EMBEDDING), dtype=np.float32)
        with _BlasThreads(self.blas_threads):
            for start in range(0, mels.shape[0], self.batch_size):
                out[start : start + self.batch_size] = self._forward(mels[start : start + self.batch_size])
        return out

    def _forward(self, mels: np.ndarray) -> np.ndarray:
        batch, steps, _ = mels.shape
        x = np.ascontiguousarray(mels.transpose(1, 0, 2))  # (T, B, F): each step contiguous
        h = np.zeros((batch, HIDDEN), dtype=np.float32)
        gates = np.empty((batch, 4 * HIDDEN), dtype=np.float32)
        for layer, (w_ih, w_hh, bias) in enumerate(self._layers):
            projected = x.reshape(steps * batch, -1) @ w_ih
            projected += bias
            projected = projected.reshape(steps, batch, 4 * HIDDEN)
            h = np.zeros((batch, HIDDEN), dtype=np.float32)
            c = np.zeros((batch, HIDDEN), dtype=np.float32)
            last = layer == LAYERS - 1
            outputs = None if last else np.empty((steps, batch, HIDDEN), dtype=np.float32)
            for t in range(steps):
                np.matmul(h, w_hh, out=gates)
                gates += projected[t]
                # PyTorch gate order i, f, g, o; sigmoid(x) = 0.5 * tanh(x / 2) + 0.5
                ifo = gates[:, : 2 * HIDDEN]
                ifo *= 0.5
                np.tanh(ifo, out=ifo)
                ifo *= 0.5
                ifo += 0.5
                o = gates[:, 3 * HIDDEN :]
                o *= 0.5
                np.tanh(o, out=o)
                o *= 0.5
                o += 0.5
                g = gates[:, 2 * HIDDEN : 3 * HIDDEN]
                np.tanh(g, out=g)
                c *= gates[:, HIDDEN : 2 * HIDDEN]
                c += gates[:, :HIDDEN] * g
                np.tanh(c, out=h)
                h *= o
                if outputs is not None:
                    outputs[t] = h
            if outputs is not None:
                x = outputs
        embeds = np.maximum(h @ self._linear_w + self._linear_b, 0.0)
        norms = np.linalg.norm(embeds, axis=1, keepdims=True)
        return embeds / np.maximum(norms, 1e-12)

    def embed_partials(self, wav: np.ndarray, rate: float = 1.3, min_coverage: float = 0.75) -> np.ndarray:
        """(partials, 256) embeddings of ``wav``'s 1.6 s partial utterances (zero-padded at the end)."""
        return self.forward(self._partial_mels(wav, rate, min_coverage))

    def embed_utterance(self, wav: np.ndarray, rate: float = 1.3, min_coverage: float = 0.75) -> np.ndarray:
        """(256,) float32 embedding of a (preprocessed) utterance, as Resemblyzer's ``embed_utterance``."""
        return _normalise(self.embed_partials(wav, rate, min_coverage).mean(axis=0))

    @staticmethod
    def _partial_mels(wav: np.ndarray, rate: float, min_coverage: float) -> np.ndarray:
        return _slice_mels(wav, partial_slices(len(wav), rate, min_coverage))


def _slice_mels(wav: np.ndarray, slices: Sequence[slice]) -> np.ndarray:
    """(len(slices), 160, 40) mel windows; the audio is zero-padded to cover the last one."""
    wav = np.asarray(wav, dtype=np.float32)
    needed = slices[-1].stop * HOP
    if needed >= len(wav):
        wav = np.pad(wav, (0, needed - len(wav)))
    mel = mel_spectrogram(wav)
    return np.stack([mel[s] for s in slices])


def _normalise(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return (v / norm).astype(np.float32) if norm > 0 else v.astype(np.float32)


# --- clustering -------------------------------------------------------------------------------


def cosine_similarity_matrix(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    if b is None:
        b = a
    else:
        b = np.asarray(b, dtype=np.float64)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def agglomerative_cluster(
    embeddings: np.ndarray,
    threshold: float,
    weights: Sequence[float] | None = None,
    max_clusters: int | None = None,
) -> np.ndarray:
    """Average-linkage agglomerative clustering on cosine distance; returns labels 0..k-1.

    Clusters merge while the (weight-averaged) distance between the closest pair is below
    ``threshold`` and, past that, until at most ``max_clusters`` remain. Deterministic: ties go to
    the lowest indices, and labels are numbered in order of each cluster's first member.
    """
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, dtype=int)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    dist = 1.0 - cosine_similarity_matrix(embeddings)
    np.fill_diagonal(dist, np.inf)
    size = w.copy()
    parent = np.arange(n)
    active = np.ones(n, dtype=bool)
    count = n
    while count > 1:
        flat = int(np.argmin(dist))
        i, j = divmod(flat, n)
        if dist[i, j] >= threshold and (max_clusters is None or count <= max_clusters):
            break
        i, j = min(i, j), max(i, j)
        # Lance-Williams update for average linkage: the merged row is the size-weighted mean.
        merged = (size[i] * dist[i] + size[j] * dist[j]) / (size[i] + size[j])
        dist[i, :] = merged
        dist[:, i] = merged
        dist[i, i] = np.inf
        dist[j, :] = np.inf
        dist[:, j] = np.inf
        size[i] += size[j]
        active[j] = False
        parent[parent == j] = i
        count -= 1
    _, labels = np.unique(parent, return_inverse=True)
    # renumber by first appearance
    order: dict[int, int] = {}
    for label in labels:
        order.setdefault(int(label), len(order))
    return np.array([order[int(label)] for label in labels], dtype=int)


def _centroids(embeddings: np.ndarray, labels: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((k, embeddings.shape[1]))
    for c in range(k):
        mask = labels == c
        if mask.any():
            out[c] = _normalise((embeddings[mask] * weights[mask, None]).sum(axis=0))
    return out


# --- roles from the text ----------------------------------------------------------------------
#
# Cues are regular expressions over lower-cased text with accents removed. Clinician cues: examining
# and measuring, vital signs, assessments, prescribing (drugs, doses, routes, frequencies,
# durations), instructions and follow-up, and the history-taking questions clinicians ask. Owner /
# patient cues: addressing the clinician, thanking, telling the history in the first person
# (my dog, since yesterday, I noticed, I gave him) and describing symptoms. Each language has its own
# list; shared cues (numbers with units, question marks) are counted for every language.

_N = r"(?:\w+(?:\s+e\s+\w+)?|\d+(?:[.,]\d+)?)"  # a spelled or written number ("doze", "vinte e cinco", "12")

_DOCTOR_CUES: dict[str, list[tuple[str, float]]] = {
    "pt": [
        # examining and measuring
        (r"\b(?:vamos|vou|deixa eu|deixe-me|deixa-me) (?:pesar|examinar|ver|olhar|ouvir|auscultar|medir|palpar|"
         r"dar uma olhada|checar|verificar|avaliar|colher|fazer)", 2.0),
        (r"\b(?:temperatura|febre de|graus|batimentos|frequencia (?:cardiaca|respiratoria)|por minuto|"
         r"ausculta\w*|palpa\w*|mucosas?|hidratacao|desidratad\w*|turgor|linfonodos?|sopro|pressao arterial|"
         r"saturacao|glicemia|abdome|abdomen|pupila\w*|reflexos?|pelagem|escore)\b", 1.0),
        (r"\b(?:peso|pesa|pesando)\b", 0.5),
        (r"\b(?:quilos?|kg|gramas?)\b", 0.5),
        (r"\b(?:coracao|pulmao|pulmoes|garganta|ouvido|barriga)\b", 0.3),
        # assessing
        (r"\b(?:suspeita|diagnostico|provavelmente|parece (?:ser|uma?|que (?:e|ele|ela|tem))|quadro de|"
         r"compativel com|e uma (?:infeccao|inflamacao|alergia|doenca|otite|gastrite|gastroenterite|"
         r"dermatite|cistite|estase|virose|intoxicacao))\b", 1.5),
        (r"\b(?:infeccao|inflamacao|inflamad\w*|bacteria\w*|virus|viral|cronic\w*|agud\w*|leve|"
         r"moderad\w*|grave|normal|normais|alterad\w*|saudavel)\b", 0.3),
        (r"\b(?:exames?|hemograma|bioquimic\w*|raio-?x|radiografia|ultrassom|ultrassonografia|"
         r"ecocardiograma|urina|cultura|biopsia|citologia|sorologia|teste)\b", 0.7),
        # prescribing
        (r"\b(?:vou (?:receitar|prescrever|passar|dar|aplicar|fazer|pedir|indicar|mandar|te dar|"
         r"deixar)|(?:receit|prescrev)\w*|prescricao)\b", 2.0),
        (r"\b(?:comprimidos?|capsulas?|gotas?|xarope|pomada|colirio|injec\w*|injetavel|"
         r"antibiotico|anti-?inflamatorio|analgesico|vermifugo|vacina\w*|soro|dose|dosagem|"
         r"remedios?|medicac\w*|medicamentos?|tratamento|aplicac\w*)\b", 0.7),
        (r"\b(?:miligramas?|mililitros?|mg|ml|microgramas?|unidades)\b", 1.5),
        (r"\b(?:por quilo|pela boca|via oral|embaixo da pele|subcutane\w*|intramuscular|na veia|"
         r"em jejum|com comida|apos as refeicoes)\b", 1.5),
        (rf"\b(?:a cada {_N} horas|de {_N} em {_N} horas|{_N} vez(?:es)? (?:ao|por) dia|"
         rf"por {_N} dias|durante {_N} dias|uma vez (?:ao|por) dia|duas vezes (?:ao|por) dia)\b", 1.5),
        # instructions and follow-up
        (r"\b(?:retorno|retornar|revisao|reavaliar|reavaliacao|volte|voltar aqui|traz (?:ele|ela|na hora|aqui)|"
         r"traga|me (?:liga|ligue|avisa|avise|manda)|fique de olho|observe|observar|evite|evitar|"
         r"nao (?:deixe|de|pode)|pode (?:dar|tomar|comer|voltar)|precisa (?:de|ficar|tomar|fazer)|"
         r"agendar|marcar|daqui a|semana que vem|na proxima)\b", 1.0),
        # history-taking questions
        (r"\b(?:o que (?:houve|aconteceu|trouxe|esta acontecendo|ta acontecendo)|desde quando|"
         r"faz quanto tempo|ha quanto tempo|quantas vezes|com que frequencia|ta comendo|esta comendo|"
         r"tem (?:tomado|comido|vomitado|tossido)|voce (?:notou|percebeu|viu|deu)|ele (?:tomou|toma)|"
         r"tudo em dia|ta em dia|tao em dia|estao em dia|alguma (?:coisa|mudanca)|mudou alguma)\b", 1.0),
        (r"\b(?:entendi|certo|otimo|muito bem|tranquilo|exatamente|isso mesmo)\b", 0.3),
    ],
    "en": [
        (r"\b(?:let me|let's|lets|i'm going to|i am going to|i'll|i will|i'd like to|we'll|we will|we're going to)"
         r" (?:take a look|look|examine|check|listen|feel|press|weigh|measure|get|order|start|prescribe|give|"
         r"put (?:you|him|her) on|send|refer|schedule|do|go ahead|increase|decrease|continue|switch|recommend)", 2.0),
        (r"\b(?:temperature|fever of|degrees|heart rate|pulse|blood pressure|respirat\w*|breaths per minute|"
         r"beats per minute|oxygen|saturation|auscult\w*|palpat\w*|tender\w*|swelling|murmur|lungs? (?:sound|are)|"
         r"clear to|range of motion|reflexes|abdomen|physical exam\w*|exam|examination|vitals|vital signs)\b", 1.0),
        (r"\b(?:weight|weigh|weighs|pounds|kilos|kilograms)\b", 0.5),
        (r"\b(?:your (?:heart|lungs|blood|labs?|results|kidney|liver|a1c|cholesterol|sugar))\b", 1.0),
        (r"\b(?:diagnos\w*|assessment|impression|likely|consistent with|suggests?|looks like (?:you|it's|a|an)|"
         r"i think (?:you|it's|this|that|we)|i suspect|probably (?:a|an|just|viral|bacterial))\b", 1.5),
        (r"\b(?:infection|inflammation|viral|bacterial|chronic|acute|mild|moderate|severe|normal|abnormal|"
         r"elevated|stable|controlled|uncontrolled)\b", 0.3),
        (r"\b(?:labs?|blood work|blood test|x-?ray|ultrasound|mri|ct scan|cat scan|ekg|ecg|echo\w*|urinalysis|"
         r"culture|biopsy|a1c|panel|imaging|test)\b", 0.7),
        (r"\b(?:prescri\w*|refill\w*|i'll (?:give|start|put|send|order|refer|write)|i'm going to (?:give|start|put|"
         r"send|order|refer|write)|we'll (?:start|give|put|send|order))\b", 2.0),
        (r"\b(?:tablets?|pills?|capsules?|drops|inhaler|cream|ointment|injection|shot|vaccine|antibiotics?|"
         r"dose|dosage|medication|medicine|treatment|therapy|referral)\b", 0.7),
        (r"\b(?:milligrams?|mg|milliliters?|ml|micrograms?|units)\b", 1.5),
        (r"\b(?:by mouth|orally|with food|on an empty stomach|at bedtime|as needed)\b", 1.5),
        (rf"\b(?:every {_N} hours|once a day|twice a day|three times a day|{_N} times a day|once daily|"
         rf"twice daily|for {_N} days|for {_N} weeks)\b", 1.5),
        (r"\b(?:follow ?-?up|come back|see you (?:back|in|again)|call (?:me|us|the office)|let me know|"
         r"make sure|you should|you need to|i want you to|i'd like you to|try to|avoid|schedule|appointment|"
         r"in (?:two|three|four|six|a few) (?:weeks|months|days))\b", 1.0),
        (r"\b(?:what brings you|how long|how often|how many|when did (?:it|this|that|you)|have you (?:noticed|had|"
         r"been|tried|taken)|are you (?:taking|having|still)|do you (?:have|feel|notice|take)|any (?:pain|fever|"
         r"chest|shortness|nausea|vomiting|changes|other|problems|history)|does it|did you)\b", 1.0),
        (r"\b(?:i see|got it|all right|alright|great|good|perfect|excellent)\b", 0.2),
    ],
    "es": [
        (r"\b(?:vamos a|voy a|dejame|deje que|a ver,? (?:vamos|voy)) (?:pesar\w*|revisar\w*|examinar\w*|ver|"
         r"mirar|escuchar\w*|auscultar\w*|medir|palpar|tomar\w*|hacer\w*|checar|comprobar)", 2.0),
        (r"\b(?:temperatura|fiebre de|grados|latidos|frecuencia (?:cardiaca|respiratoria)|por minuto|"
         r"auscult\w*|palp\w*|mucosas?|hidratacion|deshidratad\w*|ganglios?|soplo|presion arterial|"
         r"saturacion|glucosa|abdomen|pupilas?|reflejos?|conjuntiva|tincion|pelaje)\b", 1.0),
        (r"\b(?:peso|pesa|pesando)\b", 0.5),
        (r"\b(?:kilos?|kg|gramos?)\b", 0.5),
        (r"\b(?:corazon|pulmon|pulmones|garganta|oido|barriga|panza)\b", 0.3),
        (r"\b(?:sospecha|diagnostico|probablemente|parece (?:ser|una?|que (?:es|tiene))|cuadro de|"
         r"compatible con|pienso en|es una (?:infeccion|inflamacion|alergia|enfermedad|otitis|gastritis|"
         r"gastroenteritis|dermatitis|cistitis|conjuntivitis))\b", 1.5),
        (r"\b(?:infeccion|inflamacion|inflamad\w*|bacteria\w*|virus|viral|cronic\w*|agud\w*|leve|"
         r"moderad\w*|normal|normales|alterad\w*|sano|sana)\b", 0.3),
        (r"\b(?:analisis|examen(?:es)?|hemograma|bioquimic\w*|radiografia|rayos x|ecografia|ultrasonido|"
         r"orina|cultivo|biopsia|citologia|prueba)\b", 0.7),
        (r"\b(?:(?:le|te) (?:voy|vamos) a (?:dar|poner|recetar|aplicar|mandar|dejar)|voy a (?:recetar|prescribir|"
         r"dar|poner|aplicar|mandar|pedir|indicar|dejar)|recet\w*|prescrib\w*)\b", 2.0),
        (r"\b(?:comprimidos?|pastillas?|capsulas?|gotas?|jarabe|pomada|crema|colirio|inyecc\w*|inyectable|"
         r"antibiotico|antiinflamatorio|analgesico|desparasit\w*|vacuna\w*|suero|dosis|medicamentos?|"
         r"medicina|tratamiento|aplicacion)\b", 0.7),
        (r"\b(?:miligramos?|mililitros?|mg|ml|microgramos?|unidades)\b", 1.5),
        (r"\b(?:por kilo|por boca|via oral|debajo de la piel|subcutane\w*|intramuscular|en ayunas|"
         r"con comida|despues de (?:comer|las comidas))\b", 1.5),
        (rf"\b(?:cada {_N} horas|{_N} veces al dia|una vez al dia|dos veces al dia|tres veces al dia|"
         rf"durante {_N} dias|por {_N} dias|durante {_N} semanas)\b", 1.5),
        (r"\b(?:revision|control|volver|vuelva|vuelvan|traigala|traigalo|la trae|lo trae|traiga\w*|"
         r"me (?:llama|llame|avisa|avise)|llameme|avise\w*|observe|vigile|evite|evitar|no (?:le de|deje)|"
         r"puede (?:dar|tomar|comer|volver)|tiene que|hay que|conviene|agendar|en (?:una|dos|tres|siete|"
         r"diez|quince) (?:dias|semanas)|la proxima)\b", 1.0),
        (r"\b(?:que (?:le pasa|le notaron|le trae|paso|ha pasado|lo trae|la trae)|desde cuando|"
         r"cuanto tiempo|cuantas veces|esta comiendo|ha (?:comido|vomitado|tenido|notado)|"
         r"(?:ha|han) notado|sabe si|esta vacunad\w*|algun (?:cambio|otro))\b", 1.0),
        (r"\b(?:entiendo|bien|muy bien|perfecto|exacto|de acuerdo|claro)\b", 0.3),
    ],
}

_PATIENT_CUES: dict[str, list[tuple[str, float]]] = {
    "pt": [
        (r"\b(?:doutora?|dra|dr|doutor)\b", 2.0),
        (r"\b(?:obrigad[oa]|valeu|brigad[oa])\b", 1.5),
        (r"\b(?:(?:o|a) (?:meu|minha)|meu|minha|meus|minhas) (?:cachorr\w*|cao|gat[oa]\w*|filh[oa]\w*|"
         r"bicho|pet|coelh\w*|marido|esposa|mulher|mae|pai|perna|barriga|cabeca|costas)\b", 1.5),
        (r"\b(?:ele|ela) (?:comecou|parou|ta|tava|esta|estava|fica|ficou|nao (?:come|quer|para)|come|comeu|"
         r"vomitou|teve|anda|vive|dorme|odeia|adora|morde|chorou|tomou em)\b", 1.0),
        (r"\b(?:desde (?:ontem|anteontem|segunda|terca|quarta|quinta|sexta|sabado|domingo|semana|o dia|a semana|"
         r"que)|ontem|anteontem|semana passada|mes passado|faz (?:uns|umas|um|uma|dois|duas|tres) "
         r"(?:dias|semanas|meses|anos|dia|semana|mes|ano)|de manha|a noite)\b", 0.8),
        (r"\b(?:eu (?:acho|vi|dei|percebi|notei|reparei|achei|tenho|tava|estava|fiquei|nao sei|confundo|levei|"
         r"trouxe|corto)|a gente (?:deu|da|pegou|acha|viu|notou)|em casa|la em casa|pode deixar|combinado|"
         r"ta bom|e grave|vai doer|quanto custa|o que eu (?:dou|faco)|e agora)\b", 1.0),
        (r"\b(?:vomit\w*|diarreia|tosse|tossindo|coca|cocando|coceira|mancando|manca|espirr\w*|bafo|"
         r"chorando|chora|lambendo|lambe|fraco|quietinho|sem fome|nao come|nao quer comer)\b", 0.5),
    ],
    "en": [
        (r"\b(?:doctor|doc|dr)\b", 2.0),
        (r"\b(?:thank you|thanks)\b", 1.5),
        (r"\b(?:my (?:dog|cat|son|daughter|husband|wife|mom|mother|dad|father|back|knee|leg|arm|stomach|head|"
         r"chest|throat|shoulder|hip|foot|feet|hand|neck|doctor|wife|kids|job|work))\b", 1.5),
        (r"\b(?:i've been|i have been|i feel|i felt|i noticed|i started|i've had|i had|i was|i took|i tried|"
         r"i don't know|i didn't|i can't|i get|i got|it hurts|it started|it's been|hurts|i think it|i guess|"
         r"i'm not sure|i've noticed)\b", 1.0),
        (r"\b(?:since (?:last|yesterday|monday|tuesday|wednesday|thursday|friday|saturday|sunday|then)|"
         r"yesterday|last (?:week|night|month|year)|a couple (?:of )?(?:days|weeks)|for about)\b", 0.8),
        (r"\b(?:is it serious|is that bad|will it hurt|how much|what should i|should i|can i|do i need|"
         r"sounds good|okay,? (?:sure|great)|will do)\b", 1.0),
        (r"\b(?:vomit\w*|diarrhea|cough\w*|itch\w*|limping|sneez\w*|dizzy|tired|pain|ache|aching|sore|nause\w*)\b",
         0.5),
    ],
    "es": [
        (r"\b(?:doctora?|dra|dr)\b", 2.0),
        (r"\b(?:gracias)\b", 1.5),
        (r"\b(?:mi|mis) (?:perr\w*|gat[oa]\w*|hij[oa]\w*|mascota|conejo|marido|esposa|mujer|madre|padre|"
         r"pierna|barriga|cabeza|espalda)\b", 1.5),
        (r"\b(?:(?:el|ella|la|lo) (?:empezo|dejo|esta|estaba|come|comio|vomito|tuvo|anda|duerme|odia)|"
         r"(?:no|casi no) (?:come|quiere comer|para))\b", 1.0),
        (r"\b(?:desde (?:ayer|anteayer|el (?:lunes|martes|miercoles|jueves|viernes|sabado|domingo)|hace|la semana)|"
         r"ayer|anteayer|la semana pasada|el mes pasado|hace (?:unos|unas|un|una|dos|tres) "
         r"(?:dias|semanas|meses|anos|dia|semana|mes|ano)|en la manana|en la noche)\b", 0.8),
        (r"\b(?:yo (?:creo|vi|le di|note|no se)|(?:la|lo) (?:adoptamos|trajimos)|le (?:di|dimos)|la verdad|"
         r"en casa|pues|es grave|es contagioso|le va a doler|cuanto cuesta|y que le (?:doy|pongo)|"
         r"que le (?:doy|pongo)|vale|de acuerdo,? doctora)\b", 1.0),
        (r"\b(?:vomit\w*|diarrea|tos|tose|rasca|picazon|cojea|cojeando|estornud\w*|lagan\w*|llorosos?|"
         r"decaid[oa]|sin hambre|no come)\b", 0.5),
    ],
}

_QUESTION_WEIGHT = 0.4
_COMPILED: dict[str, tuple[list[tuple[re.Pattern[str], float]], list[tuple[re.Pattern[str], float]]]] = {}
_COMPILE_LOCK = threading.Lock()


def _cues(language: str) -> tuple[list[tuple[re.Pattern[str], float]], list[tuple[re.Pattern[str], float]]]:
    lang = (language or "").strip().lower().replace("_", "-").split("-", 1)[0]
    if lang not in _DOCTOR_CUES:
        lang = "en"
    with _COMPILE_LOCK:
        if lang not in _COMPILED:
            _COMPILED[lang] = (
                [(re.compile(p), w) for p, w in _DOCTOR_CUES[lang]],
                [(re.compile(p), w) for p, w in _PATIENT_CUES[lang]],
            )
        return _COMPILED[lang]


def normalise_text(text: str) -> str:
    """Lower case, accents removed, whitespace collapsed (what the role cues match against)."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return re.sub(r"\s+", " ", stripped).strip()


@dataclass(frozen=True)
class RoleEvidence:
    """Weighted cue counts found in one speaker's text."""

    doctor: float
    patient: float
    words: int

    @property
    def score(self) -> float:
        """Clinician-likeness per 100 words, smoothed so a few words say little."""
        return 100.0 * (self.doctor - self.patient) / (self.words + 20)


def role_evidence(texts: Iterable[str], language: str) -> RoleEvidence:
    """Count the clinician and owner/patient cues in ``texts`` (one speaker's segments)."""
    doctor_cues, patient_cues = _cues(language)
    doctor = patient = 0.0
    words = 0
    for raw in texts:
        text = normalise_text(raw)
        if not text:
            continue
        words += len(text.split())
        doctor += _QUESTION_WEIGHT * text.count("?")
        doctor += sum(w * len(p.findall(text)) for p, w in doctor_cues)
        patient += sum(w * len(p.findall(text)) for p, w in patient_cues)
    return RoleEvidence(doctor, patient, words)


def clinician_cluster(
    texts_by_cluster: dict[int, list[str]], language: str, first_speaker: int | None = None, first_bonus: float = 0.5
) -> int:
    """The cluster whose text reads most like the clinician's (highest ``RoleEvidence.score``).

    ``first_speaker`` (who spoke first) gets ``first_bonus`` added: a weak cue, since the clinician
    usually opens the consultation. Ties go to the cluster with the most words, then the lowest id.
    """
    best: tuple[float, int, int] | None = None
    best_cluster = min(texts_by_cluster)
    for cluster in sorted(texts_by_cluster):
        evidence = role_evidence(texts_by_cluster[cluster], language)
        score = evidence.score + (first_bonus if cluster == first_speaker else 0.0)
        key = (score, evidence.words, -cluster)
        if best is None or key > best:
            best, best_cluster = key, cluster
    return best_cluster


# --- the diarizer -----------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"[.?!…。？！]['\"”’)\]]*$")


def join_words(words: Sequence[Word]) -> str:
    """Text of ``words`` (Whisper words carry their leading space, or none when stripped)."""
    parts = [w.text.strip() for w in words if w.text.strip()]
    return " ".join(parts)


def speech_mask(wav: np.ndarray, window: int = 480, floor_db: float = -45.0, keep_silence: int = 6) -> np.ndarray:
    """Samples to keep: 30 ms windows above an energy floor, with silences of up to ``keep_silence``
    windows kept (as Resemblyzer's ``trim_long_silences`` does with webrtcvad, without webrtcvad).

    The floor is ``floor_db`` below the loud end (95th percentile) of the window energies, and never
    under -70 dBFS, so digital silence and background hiss between phrases are dropped.
    """
    n = len(wav) // window
    if n == 0:
        return np.ones(len(wav), dtype=bool)
    frames = wav[: n * window].reshape(n, window).astype(np.float64)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    loud = float(np.percentile(rms, 95))
    if loud <= 0:
        return np.zeros(len(wav), dtype=bool)
    voiced = rms > max(loud * 10 ** (floor_db / 20), 10 ** (-70 / 20))
    # close gaps of up to keep_silence windows, and pad voiced runs by one window each side
    keep = voiced.copy()
    idx = np.flatnonzero(voiced)
    if idx.size:
        gaps = np.diff(idx)
        for start, gap in zip(idx[:-1], gaps, strict=True):
            if 1 < gap <= keep_silence + 1:
                keep[start + 1 : start + gap] = True
        keep[max(0, idx[0] - 1)] = True
        keep[min(n - 1, idx[-1] + 1)] = True
    mask = np.repeat(keep, window)
    return np.concatenate([mask, np.full(len(wav) - n * window, bool(keep[-1]))])


@dataclass
class _Piece:
    """A stretch of one segment that is embedded (and later labelled) as a unit."""

    segment: int  # index into Diarizer._segments
    words: tuple[Word, ...]
    start_ms: int
    end_ms: int
    speech_ms: int = 0  # speech actually embedded (after dropping silences)
    partials: np.ndarray | None = None  # (k, 256) embeddings of the 1.6 s windows
    spans: np.ndarray | None = None  # (k, 2) absolute ms each window covers
    cluster: int = -1

    @property
    def embedding(self) -> np.ndarray | None:
        return None if self.partials is None else _normalise(self.partials.mean(axis=0))


@dataclass
class DiarizerStats:
    """What ``finish`` found (for logs and benchmarks)."""

    speakers: int = 0
    clinician: int | None = None
    pieces: int = 0
    embedded_pieces: int = 0
    splits: int = 0
    embed_seconds: float = 0.0
    partials: int = 0
    role_scores: dict[int, float] = field(default_factory=dict)


class Diarizer:
    """Speaker diarization + doctor/patient roles for one transcription (not thread-safe).

    Feed it with ``add`` as the audio is decoded, chunk by chunk, then call ``finish`` once. Only
    embeddings (about 1 KB per 0.5 s of speech) are kept between calls, never audio.

    Tunables:
      ``threshold``: cosine distance under which clusters merge (average linkage).
      ``max_speakers``: at most this many speakers.
      ``window_step_ms``: hop of the 1.6 s embedding windows inside a piece.
      ``min_embed_ms``: pieces with less speech than this are not embedded; they take their
        neighbours' speaker.
      ``min_cluster_ms``: pieces with less speech than this do not take part in finding the
        speakers (they are assigned to the nearest speaker found from the longer ones).
      ``min_split_ms``: a segment is cut where the windows' speaker changes only if each side has at
        least this much; ``split_margin``: and the other speaker wins the windows by this much cosine
        similarity on average.
      ``pause_split_ms``: pieces also end at a pause between words this long (besides sentence ends).
    """

    def __init__(
        self,
        weights_dir: Path,
        *,
        encoder: VoiceEncoder | None = None,
        threshold: float = 0.3,
        max_speakers: int = 6,
        window_step_ms: int = 500,
        min_embed_ms: int = 500,
        min_cluster_ms: int = 1200,
        min_split_ms: int = 1000,
        split_margin: float = 0.05,
        short_margin: float = 0.08,
        pause_split_ms: int = 1000,
        first_speaker_bonus: float = 0.5,
    ) -> None:
        self.encoder = encoder if encoder is not None else load_encoder(weights_dir)
        self.threshold = threshold
        self.max_speakers = max_speakers
        self.rate = 1000.0 / window_step_ms
        self.min_embed_ms = min_embed_ms
        self.min_cluster_ms = min_cluster_ms
        self.min_split_ms = min_split_ms
        self.split_margin = split_margin
        self.short_margin = short_margin
        self.pause_split_ms = pause_split_ms
        self.first_speaker_bonus = first_speaker_bonus
        self._segments: list[Segment] = []
        self._pieces: list[_Piece] = []
        self.stats = DiarizerStats()
        # cluster of each segment finish() returned (speaker identity, beyond the role)
        self.clusters: list[int] = []

    # -- feeding --------------------------------------------------------------------------------

    def add(self, audio: np.ndarray, offset_ms: int, segments: Sequence[Segment]) -> None:
        """Embed the speech of ``segments`` (absolute times) found in ``audio`` (float32 mono 16 kHz,
        starting at ``offset_ms``). Segments may be given in any order; parts outside ``audio`` are
        simply not embedded."""
        started = time.perf_counter()
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        pending: list[tuple[_Piece, np.ndarray, np.ndarray]] = []  # piece, mels, window spans
        for segment in segments:
            index = len(self._segments)
            self._segments.append(segment)
            for piece in self._split_pieces(index, segment):
                self._pieces.append(piece)
                prepared = self._prepare(piece, audio, offset_ms)
                if prepared is not None:
                    pending.append((piece, *prepared))
        if pending:
            embeddings = self.encoder.forward(np.concatenate([mels for _, mels, _ in pending]))
            at = 0
            for piece, mels, spans in pending:
                piece.partials = embeddings[at : at + len(mels)]
                piece.spans = spans
                at += len(mels)
            self.stats.partials += at
        self.stats.embed_seconds += time.perf_counter() - started

    def _split_pieces(self, index: int, segment: Segment) -> list[_Piece]:
        """Cut a segment after sentence ends and at long pauses between words."""
        words = [w for w in segment.words if w.text.strip()]
        if not words:
            return [_Piece(index, (), segment.start_ms, segment.end_ms)]
        groups: list[list[Word]] = [[]]
        for i, word in enumerate(words):
            groups[-1].append(word)
            if i + 1 < len(words) and (
                _SENTENCE_END.search(word.text.strip()) or words[i + 1].start_ms - word.end_ms >= self.pause_split_ms
            ):
                groups.append([])
        return [_Piece(index, tuple(g), g[0].start_ms, max(w.end_ms for w in g)) for g in groups]

    def _prepare(self, piece: _Piece, audio: np.ndarray, offset_ms: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Mel windows of the piece's speech and the absolute ms each covers (None: too little)."""
        a = max(0, (piece.start_ms - offset_ms) * SAMPLE_RATE // 1000)
        b = min(len(audio), -(-(piece.end_ms - offset_ms) * SAMPLE_RATE // 1000))
        if b - a <= 0:
            return None
        wav = audio[a:b]
        keep = speech_mask(wav)
        positions = np.flatnonzero(keep)
        piece.speech_ms = len(positions) * 1000 // SAMPLE_RATE
        if piece.speech_ms < self.min_embed_ms:
            return None
        speech = normalize_volume(wav[positions])
        slices = partial_slices(len(speech), self.rate, 0.75)
        mels = _slice_mels(speech, slices)
        starts = np.minimum([s.start * HOP for s in slices], len(speech) - 1)
        ends = np.minimum(starts + PARTIAL_FRAMES * HOP, len(speech)) - 1
        to_ms = offset_ms + (a + positions) * 1000 // SAMPLE_RATE
        spans = np.stack([to_ms[starts], to_ms[ends]], axis=1)
        return mels, spans

    # -- deciding -------------------------------------------------------------------------------

    def finish(self, language: str) -> list[Segment]:
        """All segments added so far in time order, cut where the speaker changes inside one, each
        with ``speaker`` set: ``doctor``/``patient``, or ``unspecified`` when no segment had enough
        speech to embed. ``clusters`` then holds each returned segment's speaker cluster."""
        order = sorted(range(len(self._segments)), key=lambda i: (self._segments[i].start_ms, i))
        for piece in self._pieces:  # finish() may run again after more add() calls
            piece.cluster = -1
        self.stats = DiarizerStats(embed_seconds=self.stats.embed_seconds, partials=self.stats.partials)
        pieces = sorted(self._pieces, key=lambda p: (self._segments[p.segment].start_ms, p.segment, p.start_ms))
        embedded = [p for p in pieces if p.partials is not None]
        self.stats.pieces = len(pieces)
        self.stats.embedded_pieces = len(embedded)
        if not embedded:
            self.clusters = [-1] * len(order)
            self.stats.speakers = 0
            return [replace(self._segments[i], speaker=UNSPECIFIED) for i in order]

        centroids = self._find_speakers(embedded)
        k = len(centroids)
        if k > 1:
            pieces = self._split_at_changes(pieces, centroids)
        self._fill_from_neighbours(pieces)
        segments, clusters = self._assemble(pieces)
        self.stats.speakers = k
        if k == 1:
            roles = {0: DOCTOR}
        else:
            texts: dict[int, list[str]] = {c: [] for c in range(k)}
            for segment, cluster in zip(segments, clusters, strict=True):
                texts[cluster].append(segment.text)
            first = clusters[0] if clusters else None
            clinician = clinician_cluster(texts, language, first, self.first_speaker_bonus)
            self.stats.clinician = clinician
            self.stats.role_scores = {c: role_evidence(t, language).score for c, t in texts.items()}
            roles = {c: DOCTOR if c == clinician else PATIENT for c in range(k)}
        self.clusters = clusters
        logger.info(
            "diarization: %d speaker(s), clinician %s, role scores %s, %d of %d pieces embedded, %d split(s), "
            "%d windows embedded in %.2fs",
            k, self.stats.clinician, {c: round(v, 2) for c, v in self.stats.role_scores.items()},
            self.stats.embedded_pieces, self.stats.pieces, self.stats.splits, self.stats.partials,
            self.stats.embed_seconds,
        )  # fmt: skip
        return [replace(s, speaker=roles[c]) for s, c in zip(segments, clusters, strict=True)]

    def _find_speakers(self, embedded: list[_Piece]) -> np.ndarray:
        """Cluster the embedded pieces; sets each piece's cluster (-1: undecided); returns centroids."""
        anchors = [p for p in embedded if p.speech_ms >= self.min_cluster_ms] or embedded
        emb = np.stack([p.embedding for p in anchors])
        weights = np.array([p.speech_ms for p in anchors], dtype=np.float64)
        labels = agglomerative_cluster(emb, self.threshold, weights, self.max_speakers)
        labels, centroids = _refine(emb, labels, weights)
        # every embedded piece (anchors included) goes to its nearest speaker when that is clear
        for piece in embedded:
            sims = centroids @ piece.embedding
            best = int(np.argmax(sims))
            margin = float(sims[best] - np.max(np.delete(sims, best))) if len(sims) > 1 else 1.0
            piece.cluster = best if (piece.speech_ms >= self.min_cluster_ms or margin >= self.short_margin) else -1
        return centroids

    def _split_at_changes(self, pieces: list[_Piece], centroids: np.ndarray) -> list[_Piece]:
        out: list[_Piece] = []
        for piece in pieces:
            parts = self._split_piece(piece, centroids) if piece.partials is not None else None
            if parts is None:
                out.append(piece)
            else:
                out.extend(parts)
                self.stats.splits += len(parts) - 1
        return out

    def _split_piece(self, piece: _Piece, centroids: np.ndarray) -> list[_Piece] | None:
        """Cut ``piece`` at the word boundaries where its 1.6 s windows change speaker, or None."""
        words = piece.words
        assert piece.partials is not None and piece.spans is not None
        if len(words) < 2 or len(piece.partials) < 2 or piece.end_ms - piece.start_ms < 2 * self.min_split_ms:
            return None
        sims = piece.partials @ centroids.T  # (windows, speakers)
        spans = piece.spans
        centres = spans.mean(axis=1)
        scores = np.empty((len(words), len(centroids)))
        for i, word in enumerate(words):
            overlap = np.clip(np.minimum(word.end_ms, spans[:, 1]) - np.maximum(word.start_ms, spans[:, 0]), 0, None)
            if overlap.sum() <= 0:  # a word between windows: the nearest window speaks for it
                overlap = np.zeros(len(spans))
                overlap[int(np.argmin(np.abs(centres - (word.start_ms + word.end_ms) / 2)))] = 1.0
            scores[i] = overlap @ sims / overlap.sum()
        own = piece.cluster if piece.cluster >= 0 else int(np.argmax(scores.mean(axis=0)))
        labels = np.argmax(scores, axis=1)
        runs = _runs(labels)
        # merge runs that are too short or not clearly another speaker into their neighbours
        while len(runs) > 1:
            weak = []
            for r, (a, b, label) in enumerate(runs):
                duration = words[b - 1].end_ms - words[a].start_ms
                gain = float(np.mean(scores[a:b, label] - scores[a:b, own])) if label != own else np.inf
                if duration < self.min_split_ms or gain < self.split_margin:
                    weak.append((duration, r))
            if not weak:
                break
            _, r = min(weak)
            a, b, _ = runs[r]
            neighbours = [n for n in (r - 1, r + 1) if 0 <= n < len(runs)]
            target = max(neighbours, key=lambda n: (float(scores[a:b, runs[n][2]].mean()), -n))
            labels[a:b] = runs[target][2]
            runs = _runs(labels)
        if len(runs) < 2:
            return None
        runs = _refine_boundaries(runs, words, sims, centres)
        parts = []
        for a, b, label in runs:
            sub_words = words[a:b]
            start = piece.start_ms if a == 0 else sub_words[0].start_ms
            end = piece.end_ms if b == len(words) else sub_words[-1].end_ms
            inside = (centres >= start) & (centres < end)
            part = _Piece(piece.segment, sub_words, start, end, speech_ms=end - start, cluster=int(label))
            if inside.any():
                part.partials = piece.partials[inside]
                part.spans = spans[inside]
            parts.append(part)
        return parts

    @staticmethod
    def _fill_from_neighbours(pieces: list[_Piece]) -> None:
        """Pieces without a speaker take the one of the nearest labelled piece (same segment first)."""
        labelled = [i for i, p in enumerate(pieces) if p.cluster >= 0]
        if not labelled:
            for p in pieces:
                p.cluster = 0
            return
        for i, piece in enumerate(pieces):
            if piece.cluster >= 0:
                continue
            best_key, best = None, None
            for j in labelled:
                other = pieces[j]
                gap = max(other.start_ms - piece.end_ms, piece.start_ms - other.end_ms, 0)
                key = (other.segment != piece.segment, gap, j > i)
                if best_key is None or key < best_key:
                    best_key, best = key, other.cluster
            piece.cluster = int(best)  # type: ignore[arg-type]

    def _assemble(self, pieces: list[_Piece]) -> tuple[list[Segment], list[int]]:
        """Join each segment's consecutive pieces of one speaker back into segments."""
        by_segment: dict[int, list[_Piece]] = {}
        for piece in pieces:
            by_segment.setdefault(piece.segment, []).append(piece)
        order = sorted(by_segment, key=lambda i: (self._segments[i].start_ms, i))
        segments: list[Segment] = []
        clusters: list[int] = []
        for index in order:
            segment = self._segments[index]
            groups: list[list[_Piece]] = []
            for piece in sorted(by_segment[index], key=lambda p: p.start_ms):
                if groups and groups[-1][-1].cluster == piece.cluster:
                    groups[-1].append(piece)
                else:
                    groups.append([piece])
            if len(groups) == 1:
                segments.append(segment)
                clusters.append(groups[0][0].cluster)
                continue
            for g, group in enumerate(groups):
                words = tuple(w for p in group for w in p.words)
                start = segment.start_ms if g == 0 else group[0].start_ms
                end = segment.end_ms if g == len(groups) - 1 else group[-1].end_ms
                segments.append(replace(segment, start_ms=start, end_ms=max(start, end), text=join_words(words),
                                        words=words))  # fmt: skip
                clusters.append(group[0].cluster)
        return segments, clusters


def _refine_boundaries(
    runs: list[tuple[int, int, int]], words: Sequence[Word], sims: np.ndarray, centres: np.ndarray
) -> list[tuple[int, int, int]]:
    """Move each change between two runs to the word boundary that best separates the windows.

    Per-word votes blur a change over a window length (windows straddling it mix both voices).
    Each window centred left of the boundary should prefer the left speaker and each one centred
    right of it the right speaker; the boundary chosen (between the runs' first and last words)
    minimises the similarity margin of the windows on the wrong side; ties keep it nearest to
    where the votes put it.
    """
    runs = list(runs)
    for r in range(len(runs) - 1):
        (a, b, left), (_, c, right) = runs[r], runs[r + 1]
        lo, hi = words[a].start_ms, words[c - 1].end_ms
        near = (centres >= lo) & (centres <= hi)
        margin = sims[near, right] - sims[near, left]
        where = centres[near]
        best: tuple[float, int, int] | None = None
        for k in range(a + 1, c):
            boundary = (words[k - 1].end_ms + words[k].start_ms) / 2
            wrong = np.where(where < boundary, np.maximum(margin, 0), np.maximum(-margin, 0)).sum()
            key = (float(wrong), abs(k - b), k)
            if best is None or key < best:
                best = key
        assert best is not None
        k = best[2]
        runs[r] = (a, k, left)
        runs[r + 1] = (k, c, right)
    return runs


def _runs(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, stop, label) of each maximal run of equal labels."""
    runs = []
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            runs.append((start, i, int(labels[start])))
            start = i
    return runs


def _refine(emb: np.ndarray, labels: np.ndarray, weights: np.ndarray, rounds: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Move each item to its nearest centroid until nothing moves; drop emptied clusters."""
    labels = np.asarray(labels)
    for _ in range(rounds):
        _, labels = np.unique(labels, return_inverse=True)
        centroids = _centroids(emb, labels, weights, int(labels.max()) + 1)
        moved = np.argmax(emb @ centroids.T, axis=1)
        if np.array_equal(moved, labels):
            break
        labels = moved
    _, labels = np.unique(labels, return_inverse=True)
    return labels, _centroids(emb, labels, weights, int(labels.max()) + 1)
