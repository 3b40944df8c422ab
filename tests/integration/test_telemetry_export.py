"""Spans reach an OTLP collector when one is configured: a stand-in collector on a real gRPC port."""

from __future__ import annotations

import asyncio

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from common.telemetry import tracer_provider


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def Export(self, request, context):
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


async def test_spans_are_exported_by_otlp_to_the_configured_endpoint():
    collector = _Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        provider = tracer_provider("transcription", f"http://127.0.0.1:{port}")
        with provider.get_tracer("tests").start_as_current_span("transcribe"):
            pass
        # The exporter is synchronous: flush it off the loop that serves the collector.
        assert await asyncio.to_thread(provider.force_flush, 10_000)
        await asyncio.to_thread(provider.shutdown)
    finally:
        await server.stop(None)
    (request,) = collector.requests
    (resource_spans,) = request.resource_spans
    attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert attributes["service.name"] == "transcription"
    assert [span.name for scope in resource_spans.scope_spans for span in scope.spans] == ["transcribe"]


def test_without_an_endpoint_nothing_is_exported_but_spans_still_have_ids(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    provider = tracer_provider("gateway")
    assert provider._active_span_processor._span_processors == ()  # no exporter, no export thread
    with provider.get_tracer("tests").start_as_current_span("request") as span:
        assert span.get_span_context().is_valid  # the ids the log lines carry
