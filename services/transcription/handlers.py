"""Transcription's logic: a durable job per note run, worked by a pool off the event loop.

The consumer turns ``AudioIngested`` into a queued job row (in the same transaction as its
processed-event record) only when a worker is free, so the backlog stays in Kafka where consumer
lag shows it and other replicas of the group can take it. Workers claim jobs with a lease they
renew; a job whose worker died (lease expired) is taken over, one whose worker is shutting down is
handed back. A finished job's ``TranscriptionCompleted`` / ``TranscriptionFailed`` is written in
the same transaction as the transcript, and published again if a re-driven event asks for a run
that is already done (the broker may have lost the first one). ``NoteDeleted`` removes a note's
jobs and leaves a tombstone: a running one stops and publishes nothing, later runs are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import math
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.blobstore import BlobDecryptionError, BlobNotFound, BlobStore
from common.db import is_sqlite, utcnow
from common.events import DecodedEvent, from_timestamp, timestamp
from common.grpc_errors import ServiceError
from common.logs import log_context
from common.outbox import Outbox
from common.tombstones import forget_note_events, is_deleted, lock_note, record_deletion
from common.telemetry import (
    SERVICE_ATTRIBUTE,
    TRANSCRIPTION_REALTIME_FACTOR,
    Sample,
    context_from,
    current_trace_headers,
    tracer,
)
from scribe.events.v1 import events_pb2 as ev
from scribe.types.v1 import types_pb2 as types
from services.transcription.config import TranscriptionSettings
from services.transcription.diarization import UNSPECIFIED, Diarizer
from services.transcription.engine import (
    NoSpeechError,
    Segment,
    TranscriptionCancelled,
    TranscriptResult,
    WhisperEngine,
)
from services.transcription.models import DELETED_NOTES, JobRow

log = logging.getLogger(__name__)


def segment_to_dict(segment: Segment) -> dict:
    """A segment as stored in the job row (JSON). ``confidence`` is exp(mean token log-probability)."""
    return {
        "start_ms": segment.start_ms,
        "end_ms": segment.end_ms,
        "text": segment.text,
        "speaker": segment.speaker or "unspecified",
        "confidence": round(math.exp(segment.avg_logprob), 4) if segment.avg_logprob is not None else 0.0,
        "words": [
            {"start_ms": w.start_ms, "end_ms": w.end_ms, "text": w.text, "probability": w.probability}
            for w in segment.words
        ],
    }


_SPEAKERS = {"doctor": types.SPEAKER_DOCTOR, "patient": types.SPEAKER_PATIENT}


def segment_to_proto(segment: dict) -> types.TranscriptSegment:
    return types.TranscriptSegment(
        start_ms=segment["start_ms"],
        end_ms=segment["end_ms"],
        text=segment["text"],
        speaker=_SPEAKERS.get(segment.get("speaker", ""), types.SPEAKER_UNSPECIFIED),
        confidence=segment.get("confidence", 0.0),
        # Rows stored before word timestamps have no "words".
        words=[
            types.Word(start_ms=w["start_ms"], end_ms=w["end_ms"], text=w["text"], probability=w["probability"])
            for w in segment.get("words", ())
        ],
    )


def transcript_proto(job: JobRow) -> types.Transcript:
    return types.Transcript(
        language=job.language, duration_ms=job.duration_ms, segments=[segment_to_proto(s) for s in job.segments]
    )


class TranscriptionHandlers:
    def __init__(
        self,
        settings: TranscriptionSettings,
        session_maker: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        blobs: BlobStore,
        engine: WhisperEngine,
        database_url: str,
        diarizers: Callable[[], Diarizer] | None = None,
    ) -> None:
        self.settings = settings
        self.session_maker = session_maker
        self.outbox = outbox
        self.blobs = blobs
        # The model as loaded, decoding as these settings say (batch size, VAD, guards, languages).
        self.engine = engine.with_options(**settings.decode_options())
        # A fresh Diarizer per transcription (sharing one voice encoder); None: no speaker roles.
        self.diarizers = diarizers
        self.worker_id = f"{settings.service_name}-{uuid.uuid4().hex[:12]}"
        self.concurrency = settings.num_workers
        self._skip_locked = not is_sqlite(database_url)
        self._active: set[str] = set()
        self._changed = asyncio.Condition()
        self._stopping = False
        self._workers: list[asyncio.Task] = []
        self._progress: dict[str, float] = {}
        # Runs of deleted notes that a worker here is transcribing: they stop at the next segment.
        self._cancelled: set[str] = set()

    # -- events -----------------------------------------------------------------------------

    async def on_audio_ingested(self, session: AsyncSession, event: DecodedEvent) -> None:
        payload: ev.AudioIngested = event.payload
        envelope = event.envelope
        await lock_note(session, envelope.note_id)
        if await is_deleted(session, DELETED_NOTES, envelope.note_id):
            log.info("run of a deleted note ignored")
            return
        job = await session.get(JobRow, payload.run.run_id)
        if job is None:
            session.add(
                JobRow(
                    run_id=payload.run.run_id,
                    note_id=envelope.note_id,
                    tenant_id=envelope.tenant_id,
                    attempt=payload.run.attempt or 1,
                    requested_at=from_timestamp(payload.run.requested_at),
                    blob_key=payload.audio.blob_key,
                    audio_duration_ms=payload.audio.duration_ms,
                    language_hint=payload.note.language_hint,
                    kind=int(payload.note.kind),
                    status="queued",
                    tries=0,
                    created_at=utcnow(),
                    segments=[],
                    trace_context=current_trace_headers() or None,
                )
            )
            if (payload.run.attempt or 1) > 1:
                # A retry supersedes the note's older runs that no worker has started yet.
                await session.execute(
                    update(JobRow)
                    .where(
                        JobRow.note_id == envelope.note_id,
                        JobRow.attempt < payload.run.attempt,
                        JobRow.status == "queued",
                    )
                    .values(status="superseded")
                )
            session.sync_session.info.setdefault("after_commit", []).append(self._poke)
            return
        # A re-driven run we already finished: the broker may have lost our answer, say it again.
        if job.status == "completed":
            await self._announce_completed(session, job)
        elif job.status == "failed":
            await self._announce_failed(session, job)

    async def on_note_deleted(self, session: AsyncSession, event: DecodedEvent) -> None:
        """Remove the note's jobs and transcripts and keep a tombstone; a run a worker here is
        transcribing stops (one elsewhere stops at its next lease renewal) and publishes nothing."""
        envelope = event.envelope
        await lock_note(session, envelope.note_id)
        run_ids = set((await session.scalars(select(JobRow.run_id).where(JobRow.note_id == envelope.note_id))).all())
        await session.execute(delete(JobRow).where(JobRow.note_id == envelope.note_id))
        await record_deletion(session, DELETED_NOTES, envelope.note_id, envelope.tenant_id)
        await forget_note_events(session, self.outbox.table, envelope.note_id)
        running_here = run_ids & self._active
        if running_here:
            session.sync_session.info.setdefault("after_commit", []).append(
                lambda: self._cancelled.update(running_here)
            )
        log.info("note deleted", extra={"jobs": len(run_ids), "cancelled": len(running_here)})

    def _poke(self) -> None:
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for_capacity(self) -> None:
        """Block the consumer until a worker is free and nothing already queued waits for it."""
        while not self._stopping:
            if len(self._active) < self.concurrency and await self._queued_count() == 0:
                return
            async with self._changed:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 1.0)

    async def gauges(self) -> list[Sample]:
        """Jobs queued and running (leased), for /metrics."""
        async with self.session_maker() as session:
            counts = dict(
                (
                    await session.execute(
                        select(JobRow.status, func.count())
                        .where(JobRow.status.in_(("queued", "running")))
                        .group_by(JobRow.status)
                    )
                ).all()
            )
        return [
            ("scribe_transcription_queue_depth", {"state": state}, counts.get(state, 0))
            for state in ("queued", "running")
        ]

    async def _queued_count(self) -> int:
        async with self.session_maker() as session:
            return int(await session.scalar(select(func.count()).where(JobRow.status == "queued")) or 0)

    # -- workers ----------------------------------------------------------------------------

    async def recover_orphans(self) -> int:
        """With a single-replica database (SQLite), jobs left running belong to a dead process."""
        if self._skip_locked:
            return 0  # shared database: other replicas may own them; their leases will tell
        async with self.session_maker() as session, session.begin():
            result = await session.execute(
                update(JobRow).where(JobRow.status == "running").values(status="queued", owner=None, lease_until=None)
            )
        return result.rowcount or 0

    def start_workers(self) -> None:
        self._workers = [
            asyncio.create_task(self._work_loop(), name=f"transcription-worker-{i}") for i in range(self.concurrency)
        ]

    async def _work_loop(self) -> None:
        while not self._stopping:
            try:
                job = await self._claim()
            except Exception:
                log.exception("claiming a job failed")
                job = None
            if job is None:
                async with self._changed:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), 2.0)
                continue
            self._active.add(job.run_id)
            # The queue has room again: the consumer may take the next event for another worker
            # now, not when this job ends (short recordings ran one at a time without this).
            await self._notify()
            try:
                with (
                    tracer().start_as_current_span(
                        "transcribe",
                        context=context_from(job.trace_context),
                        attributes={SERVICE_ATTRIBUTE: self.settings.service_name, "scribe.run_id": job.run_id},
                    ),
                    log_context(note_id=job.note_id, tenant_id=job.tenant_id, run_id=job.run_id),
                ):
                    await self._run(job)
            finally:
                self._active.discard(job.run_id)
                await self._notify()

    async def _claim(self) -> JobRow | None:
        """Take the oldest queued job, or a running one whose worker stopped renewing its lease."""
        now = utcnow()
        async with self.session_maker() as session, session.begin():
            query = (
                select(JobRow.run_id)
                .where(or_(JobRow.status == "queued", (JobRow.status == "running") & (JobRow.lease_until < now)))
                .order_by(JobRow.created_at)
                .limit(5)
            )
            if self._skip_locked:
                query = query.with_for_update(skip_locked=True)
            for run_id in (await session.scalars(query)).all():
                claimed = await session.execute(
                    update(JobRow)
                    .where(JobRow.run_id == run_id)
                    .where(or_(JobRow.status == "queued", (JobRow.status == "running") & (JobRow.lease_until < now)))
                    .values(
                        status="running",
                        owner=self.worker_id,
                        lease_until=now + dt.timedelta(seconds=self.settings.job_lease_s),
                        started_at=now,
                        tries=JobRow.tries + 1,
                    )
                )
                if claimed.rowcount != 1:
                    continue
                job = await session.get(JobRow, run_id)
                await self.outbox.enqueue(
                    session,
                    ev.TranscriptionStarted(run=self._run_ref(job)),
                    tenant_id=job.tenant_id,
                    note_id=job.note_id,
                    trace_context=job.trace_context or None,
                )
                return job
        return None

    async def _run(self, job: JobRow) -> None:
        renew = asyncio.create_task(self._renew_lease(job.run_id))
        try:
            self._progress[job.run_id] = 0.0
            loop = asyncio.get_running_loop()
            reporter = _ProgressReporter(
                self.settings.progress_interval_s,
                lambda value: asyncio.run_coroutine_threadsafe(self._publish_progress(job, value), loop),
            )

            def on_progress(done: float) -> None:
                self._progress[job.run_id] = done
                reporter.report(done)

            started = time.perf_counter()
            # The decoder reads a decrypted copy of the audio, removed as soon as it is done.
            async with self.blobs.decrypted_file(job.blob_key) as path:
                result = await asyncio.to_thread(
                    self._transcribe,
                    Path(path),
                    job.language_hint or None,
                    lambda segment, done: on_progress(done),
                    lambda: self._stopping or job.run_id in self._cancelled,
                    on_progress=on_progress,
                )
        except BlobNotFound:
            await self._finish_failed(job, "AUDIO_MISSING", "The note's audio is no longer in the blob store")
            return
        except BlobDecryptionError as exc:
            log.error("stored audio does not decrypt: %s", exc)
            await self._finish_failed(
                job,
                "AUDIO_UNREADABLE",
                "The note's stored audio could not be decrypted: its key is not configured or the object was modified",
            )
            return
        except TranscriptionCancelled:
            if job.run_id in self._cancelled:
                log.info("transcription of a deleted note stopped")
                return
            await self._hand_back(job)
            return
        except NoSpeechError:
            await self._finish_failed(job, "NO_SPEECH", "No speech was found in the audio")
            return
        except Exception as exc:
            log.exception("transcription failed", extra={"try": job.tries})
            if job.tries >= self.settings.max_job_tries:
                await self._finish_failed(
                    job, "TRANSCRIPTION_ERROR", f"Transcription failed {job.tries} times ({type(exc).__name__})"
                )
            else:
                await self._hand_back(job)
            return
        finally:
            self._progress.pop(job.run_id, None)
            self._cancelled.discard(job.run_id)
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew
        elapsed_s = time.perf_counter() - started
        if result.duration_ms > 0 and elapsed_s > 0:
            TRANSCRIPTION_REALTIME_FACTOR.observe(result.duration_ms / 1000 / elapsed_s)
        async with self.session_maker() as session, session.begin():
            row = await session.get(JobRow, job.run_id)
            if row is None or row.owner != self.worker_id or row.status != "running":
                return  # our lease lapsed and another worker took it over
            row.status = "completed"
            row.finished_at = utcnow()
            row.language = result.language
            row.duration_ms = result.duration_ms
            row.segments = [segment_to_dict(s) for s in result.segments]
            row.owner = None
            row.lease_until = None
            await self._announce_completed(session, row)
        log.info("transcribed", extra={"segments": len(result.segments), "language": result.language})

    def _transcribe(
        self,
        path: Path,
        language: str | None,
        on_segment: Callable[[Segment, float], None] | None,
        should_stop: Callable[[], bool],
        on_info: Callable[[str, float, int], None] | None = None,
        on_progress: Callable[[float], None] | None = None,
    ) -> TranscriptResult:
        """Blocking (a worker thread): the engine, plus speaker roles from a diarizer of its own."""
        diarizer = self.diarizers() if self.diarizers is not None else None
        if diarizer is None:
            return self.engine.transcribe(path, language, on_segment, should_stop, on_info, on_progress=on_progress)

        def assign_speakers(segments: list[Segment], language: str) -> list[Segment]:
            try:
                return diarizer.finish(language)
            except Exception:
                # Who spoke is worth less than what was said: keep the transcript, roles unknown.
                log.exception("diarization failed; speakers left unspecified")
                return [dataclasses.replace(s, speaker=UNSPECIFIED) for s in segments]

        started = time.perf_counter()
        result = self.engine.transcribe(
            path, language, on_segment, should_stop, on_info,
            on_chunk=diarizer.add, postprocess=assign_speakers, on_progress=on_progress,
        )  # fmt: skip
        log.info(
            "speakers assigned",
            extra={
                "speakers": diarizer.stats.speakers,
                "embed_s": round(diarizer.stats.embed_seconds, 2),
                "total_s": round(time.perf_counter() - started, 2),
            },
        )
        return result

    async def _publish_progress(self, job: JobRow, progress: float) -> None:
        """``TranscriptionProgress`` for the query service, while we still own the job."""
        try:
            async with self.session_maker() as session, session.begin():
                row = await session.get(JobRow, job.run_id)
                if row is None or row.owner != self.worker_id or row.status != "running":
                    return
                duration_ms = row.audio_duration_ms or 0
                await self.outbox.enqueue(
                    session,
                    ev.TranscriptionProgress(
                        run=self._run_ref(row),
                        progress=progress,
                        audio_done_ms=round(progress * duration_ms),
                        duration_ms=duration_ms,
                    ),
                    tenant_id=row.tenant_id,
                    note_id=row.note_id,
                )
            log.info("transcription progress", extra={"progress": round(progress, 3)})
        except Exception:
            log.warning("could not publish progress", exc_info=True)

    def progress(self, run_id: str) -> float | None:
        """Share of a running job's audio transcribed so far; None when no worker here runs it."""
        return self._progress.get(run_id)

    async def _renew_lease(self, run_id: str) -> None:
        interval = self.settings.job_lease_s / 3
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                async with self.session_maker() as session, session.begin():
                    await session.execute(
                        update(JobRow)
                        .where(JobRow.run_id == run_id, JobRow.owner == self.worker_id)
                        .values(lease_until=utcnow() + dt.timedelta(seconds=self.settings.job_lease_s))
                    )
                    if await session.get(JobRow, run_id) is None:
                        # The note was deleted (by a replica that is not running it): stop now.
                        self._cancelled.add(run_id)

    async def _hand_back(self, job: JobRow) -> None:
        async with self.session_maker() as session, session.begin():
            await session.execute(
                update(JobRow)
                .where(JobRow.run_id == job.run_id, JobRow.owner == self.worker_id)
                .values(status="queued", owner=None, lease_until=None)
            )
        log.info("job handed back")

    async def _finish_failed(self, job: JobRow, code: str, message: str) -> None:
        async with self.session_maker() as session, session.begin():
            row = await session.get(JobRow, job.run_id)
            if row is None or row.owner != self.worker_id:
                return
            row.status = "failed"
            row.finished_at = utcnow()
            row.failure_code = code
            row.failure_message = message
            row.owner = None
            row.lease_until = None
            await self._announce_failed(session, row)
        log.info("transcription failed", extra={"failure_code": code})

    async def _announce_completed(self, session: AsyncSession, job: JobRow) -> None:
        await self.outbox.enqueue(
            session,
            ev.TranscriptionCompleted(run=self._run_ref(job), transcript=transcript_proto(job), kind=job.kind or 0),
            tenant_id=job.tenant_id,
            note_id=job.note_id,
        )

    async def _announce_failed(self, session: AsyncSession, job: JobRow) -> None:
        await self.outbox.enqueue(
            session,
            ev.TranscriptionFailed(
                run=self._run_ref(job), failure=types.Failure(code=job.failure_code, message=job.failure_message)
            ),
            tenant_id=job.tenant_id,
            note_id=job.note_id,
        )

    @staticmethod
    def _run_ref(job: JobRow) -> types.RunRef:
        return types.RunRef(run_id=job.run_id, attempt=job.attempt, requested_at=timestamp(job.requested_at))

    async def stop_workers(self) -> None:
        """Ask running transcriptions to stop at the next segment and hand their jobs back."""
        self._stopping = True
        await self._notify()
        if self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)

    # -- reads ------------------------------------------------------------------------------

    async def get_transcript(self, tenant_id: str, note_id: str) -> tuple[types.RunRef, types.Transcript]:
        async with self.session_maker() as session:
            job = await session.scalar(
                select(JobRow)
                .where(JobRow.note_id == note_id, JobRow.status == "completed")
                .order_by(JobRow.attempt.desc())
                .limit(1)
            )
        if job is None:
            raise ServiceError(grpc.StatusCode.NOT_FOUND, "TRANSCRIPT_NOT_FOUND", "No transcript for this note")
        if job.tenant_id != tenant_id:
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED, "NOTE_ACCESS_DENIED", "Note does not belong to current tenant"
            )
        return self._run_ref(job), transcript_proto(job)

    def transcribe_direct(
        self,
        path: Path,
        language: str | None,
        on_segment: Callable[[Segment, float], None],
        should_stop: Callable[[], bool],
        on_info: Callable[[str, float, int], None] | None = None,
        on_progress: Callable[[float], None] | None = None,
    ) -> TranscriptResult:
        """Blocking: used by the Transcribe RPC in a worker thread."""
        return self._transcribe(path, language, on_segment, should_stop, on_info, on_progress)


class _ProgressReporter:
    """Passes a running job's progress on at most every ``interval_s`` seconds (and not 100 %:
    the completion says that)."""

    def __init__(self, interval_s: float, publish: Callable[[float], object]) -> None:
        self.interval_s = interval_s
        self.publish = publish
        self.last_at = time.monotonic()
        self.last_value = 0.0

    def report(self, value: float) -> None:
        now = time.monotonic()
        if value >= 1.0 or value <= self.last_value or now - self.last_at < self.interval_s:
            return
        self.last_at, self.last_value = now, value
        self.publish(round(value, 4))
