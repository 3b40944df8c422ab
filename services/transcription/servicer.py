"""gRPC handlers of the transcription service: thin shells over the engine and the job store."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import av
import grpc

from common.blobstore import BlobDecryptionError, BlobNotFound, BlobStore
from common.grpc_errors import ServiceError, abort
from scribe.transcription.v1 import transcription_pb2 as pb
from scribe.types.v1 import types_pb2 as types
from scribe.transcription.v1 import transcription_pb2_grpc
from services.transcription.engine import InvalidAudioError, NoSpeechError, Segment, UnsupportedLanguageError
from services.transcription.handlers import TranscriptionHandlers, segment_to_dict, segment_to_proto

_DONE = object()


class TranscriptionServicer(transcription_pb2_grpc.TranscriptionServiceServicer):
    def __init__(self, handlers: TranscriptionHandlers, blobs: BlobStore, max_audio_bytes: int) -> None:
        self.handlers = handlers
        self.blobs = blobs
        self.max_audio_bytes = max_audio_bytes

    async def Transcribe(self, request: pb.TranscribeRequest, context):
        """Stream the info, then each segment as the model decodes it (with its words and the share of
        the audio done), plus a progress-only message at the end of every chunk of audio, and last
        the whole transcript with speaker roles."""
        source = request.WhichOneof("source")
        try:
            async with contextlib.AsyncExitStack() as files:
                if source == "audio":
                    if len(request.audio) > self.max_audio_bytes:
                        raise ServiceError(
                            grpc.StatusCode.RESOURCE_EXHAUSTED, "PAYLOAD_TOO_LARGE", "audio over the size limit"
                        )
                    path = await files.enter_async_context(self._staged(request.audio))
                elif source == "blob_key":
                    path = await files.enter_async_context(self._stored(request.blob_key))
                else:
                    raise ServiceError(
                        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", "audio or blob_key required"
                    )
                async for item in self._stream(path, request, context):
                    yield item
        except NoSpeechError:
            await abort(context, ServiceError(grpc.StatusCode.FAILED_PRECONDITION, "NO_SPEECH", "No speech was found"))
        except (av.error.FFmpegError, InvalidAudioError):
            await abort(
                context,
                ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_AUDIO_FORMAT", "The audio does not decode"),
            )
        except UnsupportedLanguageError as exc:
            await abort(context, ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_LANGUAGE", str(exc)))
        except ServiceError as exc:
            await abort(context, exc)

    @contextlib.asynccontextmanager
    async def _staged(self, audio: bytes) -> AsyncIterator[Path]:
        """The request's audio in a temporary file, removed afterwards."""
        handle, name = tempfile.mkstemp(prefix="rpc-", dir=self.blobs.staging_dir())
        path = Path(name)
        try:
            with open(handle, "wb") as out:
                out.write(audio)
            yield path
        finally:
            path.unlink(missing_ok=True)

    @contextlib.asynccontextmanager
    async def _stored(self, blob_key: str) -> AsyncIterator[Path]:
        """A decrypted copy of a stored object, removed afterwards."""
        opened = self.blobs.decrypted_file(blob_key)
        try:
            path = await opened.__aenter__()
        except BlobDecryptionError:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION, "AUDIO_UNREADABLE", "the stored audio does not decrypt"
            ) from None
        except (BlobNotFound, ValueError):
            raise ServiceError(grpc.StatusCode.NOT_FOUND, "AUDIO_NOT_FOUND", "no such audio") from None
        try:
            yield path
        finally:
            await opened.__aexit__(None, None, None)

    async def _stream(self, path: Path, request: pb.TranscribeRequest, context) -> AsyncIterator[pb.TranscribeResponse]:
        """Transcribe ``path`` in a worker thread, yielding responses as the engine produces them."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = False

        def on_info(language: str, probability: float, duration_ms: int) -> None:
            info = pb.TranscriptionInfo(language=language, language_probability=probability, duration_ms=duration_ms)
            loop.call_soon_threadsafe(queue.put_nowait, pb.TranscribeResponse(info=info))

        last_progress = 0.0

        def on_segment(segment: Segment, progress: float) -> None:
            nonlocal last_progress
            last_progress = progress
            item = pb.TranscribeResponse(segment=segment_to_proto(segment_to_dict(segment)), progress=progress)
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def on_progress(progress: float) -> None:
            nonlocal last_progress
            if progress > last_progress:  # the last segment may have said as much already
                last_progress = progress
                loop.call_soon_threadsafe(queue.put_nowait, pb.TranscribeResponse(progress=progress))

        async def run() -> None:
            try:
                result = await asyncio.to_thread(
                    self.handlers.transcribe_direct,
                    path,
                    request.language_hint or None,
                    on_segment,
                    lambda: cancelled or context.cancelled(),
                    on_info,
                    on_progress,
                )
                transcript = types.Transcript(
                    language=result.language,
                    duration_ms=result.duration_ms,
                    segments=[segment_to_proto(segment_to_dict(s)) for s in result.segments],
                )
                queue.put_nowait(pb.TranscribeResponse(transcript=transcript, progress=1.0))
            finally:
                queue.put_nowait(_DONE)

        task = asyncio.create_task(run())
        try:
            while (item := await queue.get()) is not _DONE:
                yield item
            await task
        finally:
            cancelled = True
            with contextlib.suppress(Exception):
                await task

    async def GetTranscript(self, request: pb.GetTranscriptRequest, context) -> pb.GetTranscriptResponse:
        try:
            run, transcript = await self.handlers.get_transcript(request.tenant_id, request.note_id)
        except ServiceError as exc:
            await abort(context, exc)
        return pb.GetTranscriptResponse(run=run, transcript=transcript)
