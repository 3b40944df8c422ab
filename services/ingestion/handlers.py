"""Ingestion's logic, called by the gRPC servicer, the event consumer and the re-drive loop.

An upload is staged to a file, size-limited and decode-checked; only then is the blob moved into
the store and the note row committed together with its ``AudioIngested`` outbox row. A failure at
any step leaves no blob, no row and no event. Notes whose run has no terminal event past its
deadline are re-driven (the event published again), so even a broker that lost its data cannot
leave a note stuck.

A deleted note keeps its row as a tombstone (status ``deleted``, personal fields emptied): its
audio object is removed after the deletion commits, and again by a sweep for as long as that
fails, and the note's later events find the tombstone and change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.blobstore import BlobStore
from common.db import utcnow
from common.events import DecodedEvent, timestamp
from common.grpc_errors import ServiceError
from common.logs import log_context
from common.outbox import Outbox
from common.tombstones import forget_note_events
from scribe.events.v1 import events_pb2 as ev
from scribe.ingestion.v1 import ingestion_pb2 as pb
from scribe.types.v1 import types_pb2 as types
from services.ingestion.audio import ACCEPTED_FORMATS, AudioProbe, NotAudio, probe_audio
from services.ingestion.config import IngestionSettings
from services.ingestion.models import StoredFileRow, UploadRow

log = logging.getLogger(__name__)

STATUS_TO_PROTO = {
    "pending": types.NOTE_STATUS_PENDING,
    "processing": types.NOTE_STATUS_PROCESSING,
    "completed": types.NOTE_STATUS_COMPLETED,
    "failed": types.NOTE_STATUS_FAILED,
}
MAX_TEXT = 255
MAX_CLIENT_REQUEST_ID = 128
MAX_CALLBACK_URL = 2048
# A transcription-only run ends with its transcript; a note's with the note.
KIND_NAMES = {types.REQUEST_KIND_UNSPECIFIED: "note", types.REQUEST_KIND_TRANSCRIPTION: "transcription"}


def request_hash(metadata: pb.UploadMetadata, audio_sha256: str) -> str:
    """What a request asked for (its audio and every parameter), as one digest: two uploads with
    the same client request id are the same request exactly when their digests are equal."""
    note = metadata.note
    fields = {
        "audio_sha256": audio_sha256,
        "kind": int(note.kind),
        "name": note.name,
        "gender": note.gender,
        "external_id": note.external_id,
        "metadata": [[item.key, item.value] for item in note.metadata],
        "language_hint": note.language_hint,
        "callback_url": note.callback_url,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _idempotency_conflict(client_request_id: str) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_CONFLICT",
        "This id was already used for a request with different content",
        {"id": client_request_id},
    )
DELETED = "deleted"


def _invalid_audio(message: str, received: str) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_AUDIO_FORMAT",
        message,
        {"expected": ACCEPTED_FORMATS, "received": received or "unknown"},
    )


def _not_found() -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, "NOTE_NOT_FOUND", "Note not found")


def _in_progress() -> ServiceError:
    return ServiceError(
        grpc.StatusCode.FAILED_PRECONDITION, "TRANSCRIPTION_IN_PROGRESS", "transcription is already being processed"
    )


class IngestionHandlers:
    def __init__(
        self,
        settings: IngestionSettings,
        session_maker: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        blobs: BlobStore,
    ) -> None:
        self.settings = settings
        self.session_maker = session_maker
        self.outbox = outbox
        self.blobs = blobs

    # -- upload -----------------------------------------------------------------------------

    async def upload(self, metadata: pb.UploadMetadata, chunks: AsyncIterator[bytes]) -> tuple[pb.Upload, bool]:
        """Store a new note's audio and announce it; all or nothing.

        Returns the upload and whether it is an earlier identical request named by the same client
        request id (then nothing new is stored); the same id with other content is a conflict.
        """
        self._validate_metadata(metadata)
        staged = Path(tempfile.mkstemp(prefix="upload-", dir=self.blobs.staging_dir())[1])
        blob_key: str | None = None
        client_request_id = metadata.note.client_request_id
        try:
            size, sha256 = await self._stage(chunks, staged)
            digest = request_hash(metadata, sha256)
            if client_request_id:
                earlier = await self._same_request(metadata.tenant_id, client_request_id, digest)
                if earlier is not None:
                    return earlier, True
            probe = await self._check_audio(staged, size, metadata.content_type)
            now = utcnow()
            note_id = str(uuid.uuid4())
            row = UploadRow(
                note_id=note_id,
                tenant_id=metadata.tenant_id,
                name=metadata.note.name,
                gender=metadata.note.gender,
                external_id=metadata.note.external_id,
                metadata_items=[{"key": m.key, "value": m.value} for m in metadata.note.metadata],
                language_hint=metadata.note.language_hint,
                blob_key=f"{metadata.tenant_id}/{note_id}/audio.{probe.extension}",
                content_type=probe.mime_type,
                filename=metadata.filename[:MAX_TEXT],
                size_bytes=size,
                duration_ms=probe.duration_ms,
                sha256=sha256,
                created_at=now,
                status="pending",
                run_id=str(uuid.uuid4()),
                attempt=1,
                run_requested_at=now,
                last_driven_at=now,
                drive_count=1,
                kind=int(metadata.note.kind),
                client_request_id=client_request_id or None,
                request_hash=digest,
                callback_url=metadata.note.callback_url,
            )
            with log_context(note_id=note_id, tenant_id=metadata.tenant_id, run_id=row.run_id):
                blob_key = row.blob_key
                await self.blobs.put_file(blob_key, staged)
                try:
                    async with self.session_maker() as session, session.begin():
                        session.add(row)
                        await self.outbox.enqueue(
                            session, self._audio_ingested(row), tenant_id=row.tenant_id, note_id=row.note_id
                        )
                except IntegrityError:
                    if not client_request_id:
                        raise
                    # A concurrent upload with the same client request id committed first.
                    earlier = await self._same_request(metadata.tenant_id, client_request_id, digest)
                    if earlier is None:
                        raise
                    return earlier, True
                log.info(
                    "audio ingested",
                    extra={"size_bytes": size, "duration_ms": probe.duration_ms, "kind": KIND_NAMES.get(row.kind)},
                )
            blob_key = None  # committed: the blob now belongs to the note
            return self._to_proto(row), False
        finally:
            with contextlib.suppress(FileNotFoundError):
                staged.unlink()
            if blob_key is not None:
                await self.blobs.delete(blob_key)

    async def _same_request(self, tenant_id: str, client_request_id: str, digest: str) -> pb.Upload | None:
        """The tenant's upload with this client request id when it asked for the same thing; None
        when there is none; IDEMPOTENCY_CONFLICT when it asked for something else."""
        async with self.session_maker() as session:
            row = await session.scalar(
                select(UploadRow).where(
                    UploadRow.tenant_id == tenant_id, UploadRow.client_request_id == client_request_id
                )
            )
        if row is None:
            return None
        if row.request_hash != digest:
            raise _idempotency_conflict(client_request_id)
        return self._to_proto(row)

    def _validate_metadata(self, metadata: pb.UploadMetadata) -> None:
        if not metadata.tenant_id:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", "tenant_id is required")
        note = metadata.note
        if note.kind not in KIND_NAMES:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR", "unknown request kind")
        if len(note.client_request_id) > MAX_CLIENT_REQUEST_ID:
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "VALIDATION_ERROR",
                f"id is longer than {MAX_CLIENT_REQUEST_ID} characters",
                {"field": "id"},
            )
        if note.callback_url and (
            len(note.callback_url) > MAX_CALLBACK_URL or not note.callback_url.startswith(("http://", "https://"))
        ):
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "VALIDATION_ERROR",
                "callback_url must be an http:// or https:// URL",
                {"field": "callback_url"},
            )
        fields = {"name": (metadata.note.name, MAX_TEXT), "gender": (metadata.note.gender, 32),
                  "external_id": (metadata.note.external_id, MAX_TEXT)}
        for field, (value, limit) in fields.items():
            if len(value) > limit:
                raise ServiceError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "VALIDATION_ERROR",
                    f"{field} is longer than {limit} characters",
                    {"field": field},
                )
        if len(metadata.note.language_hint) > 16:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR", "language is not a language code")
        if len(metadata.note.metadata) > 100:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR", "metadata has over 100 items")

    async def _check_audio(self, staged: Path, size: int, content_type: str) -> AudioProbe:
        """The staged file is audio of an accepted length: its probe, or INVALID_ARGUMENT."""
        if size == 0:
            raise _invalid_audio("The audio file is empty", content_type)
        try:
            probe = await asyncio.to_thread(probe_audio, staged)
        except NotAudio as exc:
            raise _invalid_audio(f"Invalid audio format: {exc}", content_type) from None
        if probe.duration_ms > self.settings.max_duration_s * 1000:
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "AUDIO_TOO_LONG",
                f"The recording is longer than {int(self.settings.max_duration_s)} seconds",
                {"max_duration_s": self.settings.max_duration_s, "duration_s": probe.duration_ms / 1000},
            )
        return probe

    async def _stage(self, chunks: AsyncIterator[bytes], staged: Path) -> tuple[int, str]:
        digest = hashlib.sha256()
        size = 0
        limit = self.settings.max_upload_bytes
        with open(staged, "wb") as handle:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise ServiceError(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "PAYLOAD_TOO_LARGE",
                        f"The audio file is larger than {limit} bytes",
                        {"max_bytes": limit},
                    )
                digest.update(chunk)
                await asyncio.to_thread(handle.write, chunk)
        return size, digest.hexdigest()

    # -- stored files (seed 004) ---------------------------------------------------------

    async def store_file(self, metadata: pb.FileMetadata, chunks: AsyncIterator[bytes]) -> pb.StoredFile:
        """Store a user's audio file, checked like an upload, without processing it."""
        if not metadata.tenant_id or not metadata.user_id or len(metadata.user_id) > 128:
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR", "tenant_id and user_id (<= 128 chars) are required"
            )
        staged = Path(tempfile.mkstemp(prefix="file-", dir=self.blobs.staging_dir())[1])
        blob_key: str | None = None
        try:
            size, sha256 = await self._stage(chunks, staged)
            probe = await self._check_audio(staged, size, metadata.content_type)
            file_id = str(uuid.uuid4())
            row = StoredFileRow(
                file_id=file_id,
                tenant_id=metadata.tenant_id,
                user_id=metadata.user_id,
                blob_key=f"{metadata.tenant_id}/files/{file_id}/audio.{probe.extension}",
                content_type=probe.mime_type,
                filename=metadata.filename[:MAX_TEXT],
                size_bytes=size,
                duration_ms=probe.duration_ms,
                sha256=sha256,
                created_at=utcnow(),
            )
            blob_key = row.blob_key
            await self.blobs.put_file(blob_key, staged)
            async with self.session_maker() as session, session.begin():
                session.add(row)
            blob_key = None
            log.info("file stored", extra={"tenant_id": row.tenant_id, "file_id": file_id, "size_bytes": size})
            return self._file_proto(row)
        finally:
            with contextlib.suppress(FileNotFoundError):
                staged.unlink()
            if blob_key is not None:
                await self.blobs.delete(blob_key)

    async def process_file(self, request: pb.ProcessFileRequest) -> pb.Upload:
        """A new note from a stored file's audio, announced in the same transaction."""
        if len(request.name) > MAX_TEXT or len(request.language_hint) > 16:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR", "file_name or language too long")
        async with self.session_maker() as session, session.begin():
            stored = await session.get(StoredFileRow, request.file_id) if request.file_id else None
            if stored is None or stored.tenant_id != request.tenant_id or stored.user_id != request.user_id:
                raise ServiceError(grpc.StatusCode.NOT_FOUND, "FILE_NOT_FOUND", "No such file for this user")
            now = utcnow()
            row = UploadRow(
                note_id=str(uuid.uuid4()),
                tenant_id=stored.tenant_id,
                name=(request.name or stored.filename)[:MAX_TEXT],
                gender="",
                external_id="",
                metadata_items=[{"key": "user_id", "value": stored.user_id}, {"key": "file_id", "value": stored.file_id}],
                language_hint=request.language_hint,
                blob_key=stored.blob_key,
                content_type=stored.content_type,
                filename=stored.filename,
                size_bytes=stored.size_bytes,
                duration_ms=stored.duration_ms,
                sha256=stored.sha256,
                created_at=now,
                status="pending",
                run_id=str(uuid.uuid4()),
                attempt=1,
                run_requested_at=now,
                last_driven_at=now,
                drive_count=1,
                kind=types.REQUEST_KIND_UNSPECIFIED,
                client_request_id=None,
                request_hash="",
                callback_url="",
            )
            session.add(row)
            await self.outbox.enqueue(session, self._audio_ingested(row), tenant_id=row.tenant_id, note_id=row.note_id)
        with log_context(note_id=row.note_id, tenant_id=row.tenant_id, run_id=row.run_id):
            log.info("stored file sent for processing", extra={"file_id": stored.file_id})
        return self._to_proto(row)

    @staticmethod
    def _file_proto(row: StoredFileRow) -> pb.StoredFile:
        return pb.StoredFile(
            file_id=row.file_id,
            tenant_id=row.tenant_id,
            user_id=row.user_id,
            audio=types.AudioRef(
                blob_key=row.blob_key,
                content_type=row.content_type,
                size_bytes=row.size_bytes,
                duration_ms=row.duration_ms,
                sha256=row.sha256,
                filename=row.filename,
            ),
            created_at=timestamp(row.created_at),
        )

    # -- reads ------------------------------------------------------------------------------

    async def get_upload(self, tenant_id: str, note_id: str) -> pb.Upload:
        async with self.session_maker() as session:
            row = await session.get(UploadRow, note_id)
        if row is None or row.status == DELETED:
            raise _not_found()
        if row.tenant_id != tenant_id:
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED, "NOTE_ACCESS_DENIED", "Note does not belong to current tenant"
            )
        return self._to_proto(row)

    # -- retry ------------------------------------------------------------------------------

    async def request_retry(self, tenant_id: str, note_id: str) -> pb.Upload:
        """Start a new run of a note's transcription from its stored audio; the note is processing.

        Refused while a run is processing. The run is claimed with one conditional UPDATE (status
        not processing, attempt unchanged), so of two concurrent retries exactly one starts a run
        and the other is told the transcription is in progress.
        """
        current = await self.get_upload(tenant_id, note_id)
        if current.status == types.NOTE_STATUS_PROCESSING:
            raise _in_progress()
        now = utcnow()
        run_id = str(uuid.uuid4())
        async with self.session_maker() as session, session.begin():
            claimed = await session.execute(
                update(UploadRow)
                .where(
                    UploadRow.note_id == note_id,
                    UploadRow.tenant_id == tenant_id,
                    UploadRow.status != "processing",
                    UploadRow.status != DELETED,
                    UploadRow.attempt == current.run.attempt,
                )
                .values(
                    attempt=UploadRow.attempt + 1,
                    run_id=run_id,
                    run_requested_at=now,
                    status="processing",
                    last_driven_at=now,
                    drive_count=1,
                )
            )
            if claimed.rowcount != 1:
                # Another retry won the race and is processing now, or the note was just deleted.
                await self.get_upload(tenant_id, note_id)
                raise _in_progress()
            row = await session.get(UploadRow, note_id, populate_existing=True)
            assert row is not None
            await self.outbox.enqueue(
                session, self._run_requested(row, "retry"), tenant_id=row.tenant_id, note_id=row.note_id
            )
        with log_context(note_id=note_id, tenant_id=tenant_id, run_id=run_id):
            log.info("retry requested", extra={"attempt": row.attempt})
        return self._to_proto(row)

    # -- deletion ---------------------------------------------------------------------------

    async def delete_note(self, tenant_id: str, note_id: str) -> pb.DeleteNoteResponse:
        """Delete a note: tombstone its upload and announce ``NoteDeleted`` (one transaction), then
        remove its audio object. NOT_FOUND for an unknown or already deleted note.

        The tombstone is claimed with one conditional UPDATE, so of two concurrent deletions one
        deletes and publishes, the other is told the note is not found. When the blob store fails,
        the note is deleted anyway and ``blob_pending_delete`` stays set for the sweep.
        """
        await self.get_upload(tenant_id, note_id)  # NOT_FOUND / PERMISSION_DENIED first
        now = utcnow()
        async with self.session_maker() as session, session.begin():
            claimed = await session.execute(
                update(UploadRow)
                .where(UploadRow.note_id == note_id, UploadRow.tenant_id == tenant_id, UploadRow.status != DELETED)
                .values(
                    status=DELETED,
                    deleted_at=now,
                    blob_pending_delete=True,
                    blob_delete_attempts=0,
                    last_driven_at=now,
                    # Nothing personal stays in the tombstone.
                    name="",
                    gender="",
                    external_id="",
                    metadata_items=[],
                    language_hint="",
                    filename="",
                    sha256="",
                )
            )
            if claimed.rowcount != 1:
                raise _not_found()  # a concurrent deletion won
            await forget_note_events(session, self.outbox.table, note_id)
            await self.outbox.enqueue(
                session, ev.NoteDeleted(deleted_at=timestamp(now)), tenant_id=tenant_id, note_id=note_id
            )
            blob_key = await session.scalar(select(UploadRow.blob_key).where(UploadRow.note_id == note_id))
        with log_context(note_id=note_id, tenant_id=tenant_id):
            log.info("note deleted")
            removed = await self._remove_blob(note_id, blob_key or "", attempts=0)
        return pb.DeleteNoteResponse(note_id=note_id, deleted_at=timestamp(now), audio_removed=removed)

    async def _remove_blob(self, note_id: str, blob_key: str, attempts: int) -> bool:
        """Remove a deleted note's audio object and clear its pending mark; False (logged) on failure."""
        try:
            if blob_key:
                await self.blobs.delete(blob_key)
        except Exception as exc:
            # The error's type only: a store's message may carry endpoints or signed URLs.
            log.warning(
                "audio of a deleted note not removed yet; the sweep will retry",
                extra={"error": type(exc).__name__, "attempts": attempts + 1},
            )
            async with self.session_maker() as session, session.begin():
                await session.execute(
                    update(UploadRow)
                    .where(UploadRow.note_id == note_id)
                    .values(blob_delete_attempts=attempts + 1, last_driven_at=utcnow())
                )
            return False
        async with self.session_maker() as session, session.begin():
            await session.execute(
                update(UploadRow).where(UploadRow.note_id == note_id).values(blob_pending_delete=False)
            )
        log.info("audio of a deleted note removed")
        return True

    async def sweep_deleted_blobs_once(self, batch: int = 100) -> int:
        """Retry removing the audio of deleted notes whose removal failed; return how many are gone.

        At most ``batch`` objects a pass; a note's tries back off exponentially (from the check
        interval up to the re-drive cap), so an unreachable store is not hammered.
        """
        now = utcnow()
        async with self.session_maker() as session:
            rows = (
                await session.execute(
                    select(UploadRow.note_id, UploadRow.tenant_id, UploadRow.blob_key,
                           UploadRow.blob_delete_attempts, UploadRow.last_driven_at)
                    .where(UploadRow.blob_pending_delete.is_(True))
                    .order_by(UploadRow.last_driven_at)
                    .limit(batch)
                )
            ).all()
        removed = 0
        for row in rows:
            backoff = min(
                self.settings.redrive_check_s * 2 ** max(row.blob_delete_attempts - 1, 0),
                self.settings.redrive_max_interval_s,
            )
            if row.blob_delete_attempts and row.last_driven_at + dt.timedelta(seconds=backoff) > now:
                continue
            with log_context(note_id=row.note_id, tenant_id=row.tenant_id):
                removed += await self._remove_blob(row.note_id, row.blob_key, row.blob_delete_attempts)
        return removed

    # -- events -----------------------------------------------------------------------------

    async def on_transcription_started(self, session: AsyncSession, event: DecodedEvent) -> None:
        """The current run's transcription began: the note is processing (retries are refused)."""
        row = await session.get(UploadRow, event.envelope.note_id)
        if row is not None and event.payload.run.run_id == row.run_id and row.status == "pending":
            row.status = "processing"

    async def on_run_finished(self, session: AsyncSession, event: DecodedEvent) -> None:
        """A terminal event (note generated, or transcription / generation failed) ends its run;
        a transcription-only request's run ends with its transcript."""
        payload = event.payload
        row = await session.get(UploadRow, event.envelope.note_id)
        if row is None or payload.run.run_id != row.run_id or row.status == DELETED:
            return  # a run that a later retry superseded, or a deleted note's
        if isinstance(payload, ev.TranscriptionCompleted):
            if row.kind == types.REQUEST_KIND_TRANSCRIPTION and row.status in ("pending", "processing"):
                row.status = "completed"
            return
        row.status = "completed" if isinstance(payload, ev.NoteGenerated) else "failed"

    # -- re-drive ---------------------------------------------------------------------------

    async def redrive_once(self) -> int:
        """Publish again the runs that have been open past their deadline; return how many."""
        now = utcnow()
        base = dt.timedelta(seconds=self.settings.redrive_after_s)
        async with self.session_maker() as session, session.begin():
            rows = (
                await session.scalars(
                    select(UploadRow)
                    .where(or_(UploadRow.status == "pending", UploadRow.status == "processing"))
                    .where(UploadRow.last_driven_at < now - base)
                    .order_by(UploadRow.last_driven_at)
                    .limit(100)
                )
            ).all()
            driven = 0
            for row in rows:
                backoff = min(base * 2 ** (row.drive_count - 1), dt.timedelta(seconds=self.settings.redrive_max_interval_s))
                if row.last_driven_at + backoff > now:
                    continue
                with log_context(note_id=row.note_id, tenant_id=row.tenant_id, run_id=row.run_id):
                    log.warning("re-driving a note with no outcome", extra={"drive_count": row.drive_count})
                event = self._audio_ingested(row) if row.attempt <= 1 else self._run_requested(row, "redrive")
                await self.outbox.enqueue(session, event, tenant_id=row.tenant_id, note_id=row.note_id)
                row.last_driven_at = now
                row.drive_count += 1
                driven += 1
        return driven

    async def run_redrive(self, stopping: asyncio.Event) -> None:
        """Until ``stopping``: re-drive stuck notes and remove deleted notes' leftover audio (at
        start too, so a restart retries what a failed store left behind)."""
        await self._sweep_deleted_blobs()
        while not stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.settings.redrive_check_s)
            if stopping.is_set():
                return
            try:
                await self.redrive_once()
            except Exception:
                log.exception("re-drive pass failed")
            await self._sweep_deleted_blobs()

    async def _sweep_deleted_blobs(self) -> None:
        try:
            await self.sweep_deleted_blobs_once()
        except Exception as exc:
            log.warning("sweep of deleted notes' audio failed", extra={"error": type(exc).__name__})

    # -- mapping ----------------------------------------------------------------------------

    @staticmethod
    def _note_info(row: UploadRow) -> types.NoteInfo:
        return types.NoteInfo(
            name=row.name,
            gender=row.gender,
            external_id=row.external_id,
            metadata=[types.MetadataItem(key=m["key"], value=m["value"]) for m in row.metadata_items],
            language_hint=row.language_hint,
            kind=row.kind or 0,
            client_request_id=row.client_request_id or "",
            callback_url=row.callback_url or "",
        )

    @staticmethod
    def _audio_ref(row: UploadRow) -> types.AudioRef:
        return types.AudioRef(
            blob_key=row.blob_key,
            content_type=row.content_type,
            size_bytes=row.size_bytes,
            duration_ms=row.duration_ms,
            sha256=row.sha256,
            filename=row.filename,
        )

    @staticmethod
    def _run(row: UploadRow) -> types.RunRef:
        return types.RunRef(run_id=row.run_id, attempt=row.attempt, requested_at=timestamp(row.run_requested_at))

    def _audio_ingested(self, row: UploadRow) -> ev.AudioIngested:
        return ev.AudioIngested(
            run=self._run(row),
            audio=self._audio_ref(row),
            note=self._note_info(row),
            created_at=timestamp(row.created_at),
        )

    def _run_requested(self, row: UploadRow, reason: str) -> ev.TranscriptionRequested:
        return ev.TranscriptionRequested(
            run=self._run(row),
            audio=self._audio_ref(row),
            note=self._note_info(row),
            created_at=timestamp(row.created_at),
            reason=reason,
        )

    def _to_proto(self, row: UploadRow) -> pb.Upload:
        return pb.Upload(
            note_id=row.note_id,
            tenant_id=row.tenant_id,
            note=self._note_info(row),
            audio=self._audio_ref(row),
            run=self._run(row),
            status=STATUS_TO_PROTO[row.status],
            created_at=timestamp(row.created_at),
        )
