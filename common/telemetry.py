"""Metrics and traces, the same way in every service and the gateway.

Metrics are Prometheus metrics in the process's default registry (process metrics included),
served on ``SCRIBE_METRICS_PORT`` by :func:`start_metrics_server` (0: not served). Counters and
histograms are updated where the work happens; gauges that describe state (consumer lag, outbox
backlog, queue depth, notes by status) are read on scrape from the sources a service registers
with :func:`register_gauges`, so a scrape always sees the state as it is.

Traces are OpenTelemetry spans: a server span per REST request and per gRPC call (context in gRPC
metadata), a client span per gRPC call, and across Kafka the W3C ``traceparent`` stored with the
outbox row when the event is written, sent as a message header by the relay, and continued by a
consumer span in every consumer. :func:`setup_tracing` installs the SDK, exporting by OTLP only
when an endpoint is configured; without one spans still carry trace ids into the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

TRACER_NAME = "scribe"
# On every span Scribe starts: which service did the work (one process may host several in tests).
SERVICE_ATTRIBUTE = "scribe.service"
# Health checks and reflection are counted but not traced: probes would bury the traces that matter.
_UNTRACED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

GRPC_SERVER_REQUESTS = Counter(
    "scribe_grpc_server_requests", "gRPC calls handled, by final status code.", ["service", "method", "code"]
)
GRPC_SERVER_LATENCY = Histogram(
    "scribe_grpc_server_latency_seconds", "Time to handle a gRPC call.", ["service", "method"],
    buckets=_LATENCY_BUCKETS,
)
HTTP_REQUESTS = Counter(
    "scribe_http_requests", "REST requests answered, by route template and status.", ["route", "method", "status"]
)
HTTP_REQUEST_DURATION = Histogram(
    "scribe_http_request_duration_seconds", "Time to answer a REST request.", ["route", "method"],
    buckets=_LATENCY_BUCKETS,
)
TRANSCRIPTION_REALTIME_FACTOR = Histogram(
    "scribe_transcription_realtime_factor",
    "Seconds of audio transcribed per second of processing, per job (higher is faster).",
    buckets=(0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0),
)

# Gauges read on scrape: name -> (help, label names).
SAMPLED_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "scribe_consumer_lag": (
        "Events published but not yet consumed (high-water mark - position), per assigned partition.",
        ("service", "group", "topic", "partition"),
    ),
    "scribe_outbox_backlog": ("Outbox rows not yet published.", ("service",)),
    "scribe_outbox_oldest_age_seconds": ("Age of the oldest unpublished outbox row (0 when none).", ("service",)),
    "scribe_transcription_queue_depth": ("Transcription jobs waiting (queued) or leased (running).", ("state",)),
    "scribe_notes": ("Notes in the query service's read model, by status.", ("status",)),
}

Sample = tuple[str, Mapping[str, str], float]
"""One gauge value: metric name, labels, value."""

GaugeSource = Callable[[], Awaitable[list[Sample]]]

SAMPLE_TIMEOUT_S = 3.0


class _SampledGauges(Collector):
    """Collects gauges on scrape by running each registered source on its own event loop."""

    def __init__(self) -> None:
        self._sources: dict[int, tuple[asyncio.AbstractEventLoop, str, GaugeSource]] = {}
        self._lock = threading.Lock()
        self._next = 0

    def add(self, loop: asyncio.AbstractEventLoop, name: str, source: GaugeSource) -> Callable[[], None]:
        with self._lock:
            key, self._next = self._next, self._next + 1
            self._sources[key] = (loop, name, source)

        def remove() -> None:
            with self._lock:
                self._sources.pop(key, None)

        return remove

    def describe(self) -> Iterator[GaugeMetricFamily]:
        for name, (documentation, labels) in SAMPLED_GAUGES.items():
            yield GaugeMetricFamily(name, documentation, labels=labels)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {
            name: GaugeMetricFamily(name, documentation, labels=labels)
            for name, (documentation, labels) in SAMPLED_GAUGES.items()
        }
        with self._lock:
            sources = list(self._sources.values())
        try:
            current_loop = asyncio.get_running_loop()
        except RuntimeError:
            current_loop = None
        for loop, name, source in sources:
            if loop is current_loop or loop.is_closed():
                continue  # waiting on our own loop would deadlock; scrapes come from the server thread
            future = asyncio.run_coroutine_threadsafe(source(), loop)
            try:
                samples = future.result(SAMPLE_TIMEOUT_S)
            except Exception as exc:  # a busy database or a stopping service: leave its gauges out
                future.cancel()
                log.warning("metrics source %s failed: %s: %s", name, type(exc).__name__, exc)
                continue
            for metric, labels, value in samples:
                family = families[metric]
                family.add_metric([str(labels[label]) for label in SAMPLED_GAUGES[metric][1]], float(value))
        yield from families.values()


_SAMPLED = _SampledGauges()
REGISTRY.register(_SAMPLED)


def register_gauges(name: str, source: GaugeSource) -> Callable[[], None]:
    """Read ``source`` (on the running event loop) at every scrape; returns the unregister callable."""
    return _SAMPLED.add(asyncio.get_running_loop(), name, source)


def start_metrics_server(port: int, host: str = "127.0.0.1") -> Callable[[], None] | None:
    """Serve ``/metrics`` of the default registry on ``host:port`` in a thread; None when port is 0."""
    if not port:
        return None
    server, thread = start_http_server(port, addr=host)
    log.info("serving metrics on %s:%d/metrics", host, port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop


# -- traces ------------------------------------------------------------------------------------


def tracer_provider(service_name: str, otlp_endpoint: str | None = None):
    """An SDK tracer provider for ``service_name``, exporting by OTLP/gRPC when an endpoint is set.

    The endpoint is ``otlp_endpoint`` (``SCRIBE_OTLP_ENDPOINT``) or else the standard
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (with the exporter's
    other ``OTEL_EXPORTER_OTLP_*`` variables: headers, certificates, timeout). Sampling follows
    ``OTEL_TRACES_SAMPLER`` (default: every trace, or as the caller's traceparent says).
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint or None)))
        log.info("exporting traces by OTLP to %s", otlp_endpoint or "the OTEL_EXPORTER_OTLP_* endpoint")
    return provider


def setup_tracing(service_name: str, otlp_endpoint: str | None = None) -> Callable[[], None]:
    """Install :func:`tracer_provider` for this process; returns the shutdown callable that flushes
    what is left to export. A provider installed before (a test's) is kept."""
    from opentelemetry.sdk.trace import TracerProvider

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return lambda: None
    provider = tracer_provider(service_name, otlp_endpoint)
    trace.set_tracer_provider(provider)
    return provider.shutdown


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def current_trace_headers() -> dict[str, str]:
    """The current trace context as W3C headers (``traceparent``, ``tracestate``); empty outside a span."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def context_from(carrier: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context carried by headers or metadata (a fresh root when they carry none)."""
    return propagate.extract(dict(carrier or {}))


@contextlib.contextmanager
def continued_from(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Make the context in ``carrier`` current for the block (work resumed from a stored context)."""
    token = otel_context.attach(context_from(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


def log_trace_ids() -> dict[str, str]:
    """``trace_id`` and ``span_id`` of the current span in hex, for log lines; empty outside a span."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return {}
    return {"trace_id": format(span_context.trace_id, "032x"), "span_id": format(span_context.span_id, "016x")}


# -- gRPC ----------------------------------------------------------------------------------------


def _method_name(method: str | bytes) -> str:
    return method.decode() if isinstance(method, bytes) else method


def _traced(method: str) -> bool:
    return not method.startswith(_UNTRACED_PREFIXES)


class ServerTelemetryInterceptor(grpc.aio.ServerInterceptor):
    """Counts, times and traces every call a grpc.aio server handles (context from the metadata)."""

    def __init__(self, service: str) -> None:
        self.service = service

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = _method_name(handler_call_details.method)
        metadata = {
            key: value for key, value in (handler_call_details.invocation_metadata or ()) if isinstance(value, str)
        }
        observe = functools.partial(self._observe, method, metadata)
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary_unary(request, context):
                with observe(context):
                    return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)
        if handler.stream_unary:
            inner_su = handler.stream_unary

            async def stream_unary(request_iterator, context):
                with observe(context):
                    return await inner_su(request_iterator, context)

            return grpc.stream_unary_rpc_method_handler(stream_unary, **kwargs)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(_streaming(handler.unary_stream, observe), **kwargs)
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(_streaming(handler.stream_stream, observe), **kwargs)
        return handler

    @contextlib.contextmanager
    def _observe(self, method: str, metadata: dict[str, str], context) -> Iterator[None]:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        span_scope = (
            tracer().start_as_current_span(
                method.lstrip("/"),
                context=context_from(metadata),
                kind=SpanKind.SERVER,
                attributes={SERVICE_ATTRIBUTE: self.service, "rpc.system": "grpc", "rpc.method": method},
                record_exception=False,
                set_status_on_exception=False,
            )
            if _traced(method)
            else contextlib.nullcontext(None)
        )
        with span_scope as span:
            try:
                yield
                code = context.code() or grpc.StatusCode.OK
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                code = grpc.StatusCode.UNKNOWN
                if span is not None:
                    span.record_exception(exc)
                raise
            finally:
                if not isinstance(code, grpc.StatusCode):
                    code = grpc.StatusCode.UNKNOWN
                if span is not None:
                    span.set_attribute("rpc.grpc.status_code", code.value[0])
                    if code is not grpc.StatusCode.OK:
                        span.set_status(Status(StatusCode.ERROR, code.name))
                GRPC_SERVER_REQUESTS.labels(self.service, method, code.name).inc()
                GRPC_SERVER_LATENCY.labels(self.service, method).observe(time.perf_counter() - started)


def _streaming(inner, observe):
    """Wrap a response-streaming handler (an async generator, or a coroutine that writes)."""

    async def handler(request, context) -> AsyncIterator[Any]:
        with observe(context):
            result = inner(request, context)
            if inspect.isasyncgen(result):
                async for response in result:
                    yield response
            else:
                await result

    return handler


class _ClientTelemetry:
    """Starts a client span per call and puts its context into the call's metadata."""

    _pending: set[asyncio.Task] = set()

    def _begin(self, client_call_details):
        method = _method_name(client_call_details.method)
        if not _traced(method):
            return None, client_call_details
        span = tracer().start_span(
            method.lstrip("/"),
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.method": method},
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()), *carrier.items())
        return span, client_call_details._replace(metadata=metadata)

    def _end_when_done(self, span, call) -> None:
        if span is None:
            return

        async def finish(done_call) -> None:
            try:
                code = await done_call.code()
            except BaseException:  # noqa: BLE001 - a cancelled call still ends its span
                code = grpc.StatusCode.CANCELLED
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, code.name))
            span.end()

        def on_done(done_call) -> None:
            task = asyncio.get_running_loop().create_task(finish(done_call))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

        call.add_done_callback(on_done)

    async def _intercept(self, continuation, client_call_details, request):
        span, details = self._begin(client_call_details)
        try:
            call = await continuation(details, request)
        except BaseException:
            if span is not None:
                span.set_status(Status(StatusCode.ERROR))
                span.end()
            raise
        self._end_when_done(span, call)
        return call


class _UnaryUnaryClient(_ClientTelemetry, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await self._intercept(continuation, client_call_details, request)


class _UnaryStreamClient(_ClientTelemetry, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await self._intercept(continuation, client_call_details, request)


class _StreamUnaryClient(_ClientTelemetry, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await self._intercept(continuation, client_call_details, request_iterator)


class _StreamStreamClient(_ClientTelemetry, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await self._intercept(continuation, client_call_details, request_iterator)


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """One interceptor per call shape (grpc.aio files each interceptor under one shape only)."""
    return [_UnaryUnaryClient(), _UnaryStreamClient(), _StreamUnaryClient(), _StreamStreamClient()]
