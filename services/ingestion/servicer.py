"""gRPC handlers of the ingestion service: thin shells over :mod:`services.ingestion.handlers`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from common.grpc_errors import ServiceError, abort
from scribe.ingestion.v1 import ingestion_pb2 as pb
from scribe.ingestion.v1 import ingestion_pb2_grpc
from services.ingestion.handlers import IngestionHandlers


class IngestionServicer(ingestion_pb2_grpc.IngestionServiceServicer):
    def __init__(self, handlers: IngestionHandlers) -> None:
        self.handlers = handlers

    async def UploadAudio(self, request_iterator: AsyncIterator[pb.UploadAudioRequest], context) -> pb.UploadAudioResponse:
        try:
            metadata, chunks = await _metadata_then_chunks(request_iterator)
            upload, replayed = await self.handlers.upload(metadata, chunks)
        except ServiceError as exc:
            await abort(context, exc)
        return pb.UploadAudioResponse(upload=upload, replayed=replayed)

    async def StoreFile(self, request_iterator: AsyncIterator[pb.StoreFileRequest], context) -> pb.StoreFileResponse:
        try:
            metadata, chunks = await _metadata_then_chunks(request_iterator)
            stored = await self.handlers.store_file(metadata, chunks)
        except ServiceError as exc:
            await abort(context, exc)
        return pb.StoreFileResponse(file=stored)

    async def ProcessFile(self, request: pb.ProcessFileRequest, context) -> pb.ProcessFileResponse:
        try:
            return pb.ProcessFileResponse(upload=await self.handlers.process_file(request))
        except ServiceError as exc:
            await abort(context, exc)

    async def GetUpload(self, request: pb.GetUploadRequest, context) -> pb.GetUploadResponse:
        try:
            return pb.GetUploadResponse(upload=await self.handlers.get_upload(request.tenant_id, request.note_id))
        except ServiceError as exc:
            await abort(context, exc)

    async def RequestRetry(self, request: pb.RequestRetryRequest, context) -> pb.RequestRetryResponse:
        try:
            if not request.tenant_id:
                raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", "tenant_id is required")
            if not request.note_id:
                raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NOTE_ID", "Invalid note_id format")
            upload = await self.handlers.request_retry(request.tenant_id, request.note_id)
            return pb.RequestRetryResponse(upload=upload)
        except ServiceError as exc:
            await abort(context, exc)

    async def DeleteNote(self, request: pb.DeleteNoteRequest, context) -> pb.DeleteNoteResponse:
        try:
            if not request.tenant_id:
                raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", "tenant_id is required")
            if not request.note_id:
                raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NOTE_ID", "Invalid note_id format")
            return await self.handlers.delete_note(request.tenant_id, request.note_id)
        except ServiceError as exc:
            await abort(context, exc)


async def _metadata_then_chunks(requests: AsyncIterator[Any]) -> tuple[Any, AsyncIterator[bytes]]:
    """A client stream of one ``metadata`` message then ``chunk`` messages (UploadAudio,
    StoreFile): the metadata, and the chunks as they arrive. INVALID_ARGUMENT otherwise."""
    first = await anext(aiter(requests), None)
    if first is None or first.WhichOneof("content") != "metadata":
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", "the first message must carry the metadata")

    async def chunks() -> AsyncIterator[bytes]:
        async for message in requests:
            if message.WhichOneof("content") != "chunk":
                raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", "metadata may only come first")
            yield message.chunk

    return first.metadata, chunks()
