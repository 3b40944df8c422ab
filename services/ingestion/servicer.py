"""gRPC handlers of the ingestion service: thin shells over :mod:`services.ingestion.handlers`."""

from __future__ import annotations

from collections.abc import AsyncIterator

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
            first = await anext(aiter(request_iterator), None)
            if first is None or first.WhichOneof("content") != "metadata":
                raise ServiceError(
                    grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", "the first message must carry the metadata"
                )

            async def chunks() -> AsyncIterator[bytes]:
                async for message in request_iterator:
                    if message.WhichOneof("content") != "chunk":
                        raise ServiceError(
                            grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", "metadata may only come first"
                        )
                    yield message.chunk

            upload, replayed = await self.handlers.upload(first.metadata, chunks())
        except ServiceError as exc:
            await abort(context, exc)
        return pb.UploadAudioResponse(upload=upload, replayed=replayed)

    async def StoreFile(self, request_iterator: AsyncIterator[pb.StoreFileRequest], context) -> pb.StoreFileResponse:
        try:
            first = await anext(aiter(request_iterator), None)
            if first is None or first.WhichOneof("content") != "metadata":
                raise ServiceError(
                    grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", "the first message must carry the metadata"
                )

            async def chunks() -> AsyncIterator[bytes]:
                async for message in request_iterator:
                    if message.WhichOneof("content") != "chunk":
                        raise ServiceError(
                            grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", "metadata may only come first"
                        )
                    yield message.chunk

            stored = await self.handlers.store_file(first.metadata, chunks())
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
