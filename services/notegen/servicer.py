"""gRPC handlers of the note generation service: thin shells over :mod:`services.notegen.handlers`."""

from __future__ import annotations

import uuid

import grpc

from common.grpc_errors import ServiceError, abort
from scribe.notegen.v1 import notegen_pb2 as pb
from scribe.notegen.v1 import notegen_pb2_grpc
from scribe.types.v1 import types_pb2 as types
from services.notegen.followups import FollowUps
from services.notegen.handlers import NotegenHandlers, sentence_ref, sentences_list, structured_dict


class NotegenServicer(notegen_pb2_grpc.NoteGenServiceServicer):
    def __init__(self, handlers: NotegenHandlers, follow_ups: FollowUps | None = None) -> None:
        self.handlers = handlers
        self.follow_ups = follow_ups

    async def GenerateNote(self, request: pb.GenerateNoteRequest, context) -> pb.GenerateNoteResponse:
        try:
            note = await self.handlers.generate_sync(request.transcript, request.domain)
        except ServiceError as exc:
            await abort(context, exc)
        response = pb.GenerateNoteResponse(
            language=note.language,
            generator=note.generator,
            sections=[
                types.NoteSection(
                    id=str(uuid.uuid4()),
                    label=s.label,
                    title=s.title,
                    content=s.content,
                    order=s.order,
                    source_segments=s.source_segments,
                    version=1,
                    sentences=[sentence_ref(sentence) for sentence in sentences_list(s)],
                )
                for s in note.sections
            ],
        )
        structured = structured_dict(note)
        if structured:
            response.structured.update(structured)
        return response

    async def UpdateSection(self, request: pb.UpdateSectionRequest, context) -> pb.UpdateSectionResponse:
        try:
            return await self.handlers.update_section(request)
        except ServiceError as exc:
            await abort(context, exc)

    async def RegenerateNote(self, request: pb.RegenerateNoteRequest, context) -> pb.RegenerateNoteResponse:
        try:
            return await self.handlers.regenerate(request)
        except ServiceError as exc:
            await abort(context, exc)

    async def QueueFollowUps(self, request: pb.QueueFollowUpsRequest, context) -> pb.QueueFollowUpsResponse:
        try:
            return await self._follow_ups().queue(request)
        except ServiceError as exc:
            await abort(context, exc)

    async def GetFollowUpBatch(self, request: pb.GetFollowUpBatchRequest, context) -> pb.GetFollowUpBatchResponse:
        try:
            return await self._follow_ups().get_batch(request.tenant_id, request.batch_id)
        except ServiceError as exc:
            await abort(context, exc)

    async def GetFollowUp(self, request: pb.GetFollowUpRequest, context) -> pb.GetFollowUpResponse:
        try:
            return pb.GetFollowUpResponse(follow_up=await self._follow_ups().get_latest(request.tenant_id, request.note_id))
        except ServiceError as exc:
            await abort(context, exc)

    def _follow_ups(self) -> FollowUps:
        if self.follow_ups is None:
            raise ServiceError(grpc.StatusCode.UNIMPLEMENTED, "NOT_IMPLEMENTED", "follow-ups are not enabled")
        return self.follow_ups
