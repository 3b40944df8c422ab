"""gRPC handlers of the query service: thin shells over :mod:`services.query.handlers`."""

from __future__ import annotations

import grpc

from common.grpc_errors import ServiceError, abort
from scribe.query.v1 import query_pb2 as pb
from scribe.query.v1 import query_pb2_grpc
from services.query.handlers import NoteReader
from services.query.webhooks import WebhookAdmin


class QueryServicer(query_pb2_grpc.QueryServiceServicer):
    def __init__(self, reader: NoteReader, webhooks: WebhookAdmin | None = None) -> None:
        self.reader = reader
        self.webhooks = webhooks

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

    async def GetAsyncTranscription(
        self, request: pb.GetAsyncTranscriptionRequest, context
    ) -> pb.GetAsyncTranscriptionResponse:
        try:
            body = await self.reader.get_async_transcription(request.tenant_id, request.request_id)
        except ServiceError as exc:
            await abort(context, exc)
        return pb.GetAsyncTranscriptionResponse(body_json=body)

    def _admin(self) -> WebhookAdmin:
        if self.webhooks is None:
            raise ServiceError(grpc.StatusCode.UNIMPLEMENTED, "NOT_IMPLEMENTED", "webhooks are not enabled")
        return self.webhooks

    async def PutWebhookConfig(self, request: pb.PutWebhookConfigRequest, context) -> pb.PutWebhookConfigResponse:
        try:
            _require_tenant(request.tenant_id)
            config, secret = await self._admin().put_config(request.tenant_id, request.url.strip())
        except ServiceError as exc:
            await abort(context, exc)
        return pb.PutWebhookConfigResponse(config=config, secret=secret)

    async def GetWebhookConfig(self, request: pb.GetWebhookConfigRequest, context) -> pb.GetWebhookConfigResponse:
        try:
            _require_tenant(request.tenant_id)
            return pb.GetWebhookConfigResponse(config=await self._admin().get_config(request.tenant_id))
        except ServiceError as exc:
            await abort(context, exc)

    async def RotateWebhookSecret(
        self, request: pb.RotateWebhookSecretRequest, context
    ) -> pb.RotateWebhookSecretResponse:
        try:
            _require_tenant(request.tenant_id)
            config, secret = await self._admin().rotate(request.tenant_id, request.overlap_s)
        except ServiceError as exc:
            await abort(context, exc)
        return pb.RotateWebhookSecretResponse(config=config, secret=secret)

    async def ListWebhookDeliveries(
        self, request: pb.ListWebhookDeliveriesRequest, context
    ) -> pb.ListWebhookDeliveriesResponse:
        try:
            _require_tenant(request.tenant_id)
            return pb.ListWebhookDeliveriesResponse(deliveries=await self._admin().list_deliveries(request))
        except ServiceError as exc:
            await abort(context, exc)

    async def GetWebhookDelivery(self, request: pb.GetWebhookDeliveryRequest, context) -> pb.GetWebhookDeliveryResponse:
        try:
            _require_tenant(request.tenant_id)
            delivery = await self._admin().get_delivery(request.tenant_id, request.delivery_id)
        except ServiceError as exc:
            await abort(context, exc)
        return pb.GetWebhookDeliveryResponse(delivery=delivery)

    async def ReplayWebhookDelivery(
        self, request: pb.ReplayWebhookDeliveryRequest, context
    ) -> pb.ReplayWebhookDeliveryResponse:
        try:
            _require_tenant(request.tenant_id)
            delivery = await self._admin().replay(request.tenant_id, request.delivery_id)
        except ServiceError as exc:
            await abort(context, exc)
        return pb.ReplayWebhookDeliveryResponse(delivery=delivery)


def _require_tenant(tenant_id: str) -> None:
    if not tenant_id:
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", "tenant_id is required")
