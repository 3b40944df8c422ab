"""The gateway's long-lived gRPC channels, one per backend service, and their health checks."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.runtime import open_channel
from gateway.config import GatewaySettings
from scribe.ingestion.v1 import ingestion_pb2_grpc
from scribe.notegen.v1 import notegen_pb2_grpc
from scribe.query.v1 import query_pb2_grpc
from scribe.transcription.v1 import transcription_pb2_grpc

log = logging.getLogger(__name__)

@dataclass
class Backends:
    """A stub per backend over channels opened once for the process."""

    channels: dict[str, grpc.aio.Channel]
    ingestion: ingestion_pb2_grpc.IngestionServiceStub
    query: query_pb2_grpc.QueryServiceStub
    notegen: notegen_pb2_grpc.NoteGenServiceStub
    transcription: transcription_pb2_grpc.TranscriptionServiceStub

    @classmethod
    def open(cls, settings: GatewaySettings) -> Backends:
        """Open a channel to every backend (connections are made lazily, on first use)."""
        channels = {
            name: open_channel(address)
            for name, address in settings.backend_addresses().items()
        }
        return cls(
            channels=channels,
            ingestion=ingestion_pb2_grpc.IngestionServiceStub(channels["ingestion"]),
            query=query_pb2_grpc.QueryServiceStub(channels["query"]),
            notegen=notegen_pb2_grpc.NoteGenServiceStub(channels["notegen"]),
            transcription=transcription_pb2_grpc.TranscriptionServiceStub(channels["transcription"]),
        )

    async def health(self, timeout_s: float) -> dict[str, str]:
        """Each backend's standard gRPC health state ("serving", "not_serving", "unavailable", ...)."""

        async def check(name: str, channel: grpc.aio.Channel) -> tuple[str, str]:
            try:
                response = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
                )
            except grpc.aio.AioRpcError as exc:
                return name, exc.code().name.lower()
            return name, health_pb2.HealthCheckResponse.ServingStatus.Name(response.status).lower()

        results = await asyncio.gather(*(check(name, channel) for name, channel in self.channels.items()))
        return dict(results)

    async def close(self) -> None:
        """Close every channel; calls still in flight are cancelled."""
        await asyncio.gather(*(channel.close() for channel in self.channels.values()), return_exceptions=True)
