"""gRPC handlers of the query service: thin shells over :mod:`services.query.handlers`."""

from __future__ import annotations

from common.grpc_errors import ServiceError, abort
from scribe.query.v1 import query_pb2 as pb
from scribe.query.v1 import query_pb2_grpc
from services.query.handlers import NoteReader


class QueryServicer(query_pb2_grpc.QueryServiceServicer):
    def __init__(self, reader: NoteReader) -> None:
        self.reader = reader

    async def GetNote(self, request: pb.GetNoteRequest, context) -> pb.GetNoteResponse:
        try:
            return pb.GetNoteResponse(note=await self.reader.get_note(request.tenant_id, request.note_id))
        except ServiceError as exc:
            await abort(context, exc)

    async def ListNotes(self, request: pb.ListNotesRequest, context) -> pb.ListNotesResponse:
        try:
            return await self.reader.list_notes(request)
        except ServiceError as exc:
            await abort(context, exc)

    async def GetNoteStatus(self, request: pb.GetNoteStatusRequest, context) -> pb.GetNoteStatusResponse:
        try:
            return await self.reader.get_status(request.tenant_id, request.note_id)
        except ServiceError as exc:
            await abort(context, exc)

    async def ExportNote(self, request: pb.ExportNoteRequest, context) -> pb.ExportNoteResponse:
        try:
            return await self.reader.export_note(request.tenant_id, request.note_id, request.format)
        except ServiceError as exc:
            await abort(context, exc)
