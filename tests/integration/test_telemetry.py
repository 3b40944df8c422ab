"""One trace from the REST upload to the query service's NoteGenerated consumer, across every service.

Every service runs in this process on the real broker with the real model (a few seconds of
speech), and the gateway app serves the upload; an in-memory span exporter collects what each
would export by OTLP. The services tell their spans apart by the ``scribe.service`` attribute
(in a deployment, each process's resource names it too).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from common.telemetry import SERVICE_ATTRIBUTE
from services.ingestion.config import IngestionSettings
from services.ingestion.server import build_service as build_ingestion
from services.notegen.config import NotegenSettings
from services.notegen.server import build_service as build_notegen
from services.query.config import QuerySettings
from services.query.server import build_service as build_query
from services.transcription.config import TranscriptionSettings
from services.transcription.server import build_service as build_transcription
from services.transcription.server import load_engine
from tests.support.gateway import TEST_API_KEY, gateway_settings, running_gateway
from tests.support.speech import synthesize

pytestmark = [pytest.mark.model, pytest.mark.slow]

NOTE_GENERATED = "scribe.events.v1.NoteGenerated"


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span this process ends from now on, kept in memory."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return load_engine(TranscriptionSettings(data_dir=tmp_path_factory.mktemp("engine")))


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    text = (
        "Good morning. My dog Rex has had a fever and a cough since Monday and he does not want to eat. "
        "His temperature is thirty nine degrees. I will prescribe amoxicillin twice a day for seven days."
    )
    return synthesize(text, "en", tmp_path_factory.mktemp("speech") / "consultation.wav")


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    """``span`` and its parents up to the first one not in ``by_id`` (the root, when all are there)."""
    chain = [span]
    while chain[-1].parent is not None and chain[-1].parent.span_id in by_id:
        chain.append(by_id[chain[-1].parent.span_id])
    return chain


async def test_one_trace_from_post_notes_to_the_note_generated_consumer(
    tmp_path, broker, topic_prefix, spans, engine, speech
):
    shared = {"data_dir": tmp_path, "kafka_bootstrap": broker, "topic_prefix": topic_prefix, "shutdown_grace_s": 5}
    async with AsyncExitStack() as stack:
        ingestion = await build_ingestion(IngestionSettings(**shared))
        stack.push_async_callback(ingestion.runtime.shutdown, "test over")
        transcription = await build_transcription(TranscriptionSettings(**shared, diarization=False), engine=engine)
        stack.push_async_callback(transcription.runtime.shutdown, "test over")
        notegen = await build_notegen(NotegenSettings(**shared))
        stack.push_async_callback(notegen.runtime.shutdown, "test over")
        ingestion_addr = f"127.0.0.1:{ingestion.runtime.port}"
        query = await build_query(QuerySettings(**shared, ingestion_addr=ingestion_addr))
        stack.push_async_callback(query.runtime.shutdown, "test over")
        addresses = {
            "ingestion": ingestion_addr,
            "transcription": f"127.0.0.1:{transcription.runtime.port}",
            "notegen": f"127.0.0.1:{notegen.runtime.port}",
            "query": f"127.0.0.1:{query.runtime.port}",
        }
        async with running_gateway(gateway_settings(tmp_path / "gateway", addresses)) as (_, client):
            created = await client.post(
                "/notes/v1/notes",
                headers={"X-API-KEY": TEST_API_KEY},
                files={"audio": ("consultation.wav", speech.read_bytes(), "audio/wav")},
                data={"name": "Rex", "gender": "male", "language": "en"},
            )
            assert created.status_code == 201, created.text
            note_id = created.json()["data"]["id"]

            deadline = time.monotonic() + 120
            consumed: list[ReadableSpan] = []
            while not consumed:
                assert time.monotonic() < deadline, "the query service never consumed NoteGenerated"
                await asyncio.sleep(0.2)
                consumed = [
                    span
                    for span in spans.get_finished_spans()
                    if span.attributes.get(SERVICE_ATTRIBUTE) == "query"
                    and span.attributes.get("scribe.event_type") == NOTE_GENERATED
                    and span.attributes.get("scribe.note_id") == note_id
                ]

    finished = spans.get_finished_spans()
    (request,) = [
        span for span in finished if span.name == "POST /notes/v1/notes" and span.kind is SpanKind.SERVER
    ]
    assert request.attributes[SERVICE_ATTRIBUTE] == "gateway"
    assert request.attributes["http.response.status_code"] == 201
    in_trace = {span.context.span_id: span for span in finished if span.context.trace_id == request.context.trace_id}

    # The NoteGenerated consumer span descends, link by link, from the REST request's span.
    (note_generated,) = consumed
    chain = _ancestors(note_generated, in_trace)
    assert chain[-1] is request, [span.name for span in chain]
    steps = [(span.attributes.get(SERVICE_ATTRIBUTE), span.kind) for span in reversed(chain)]
    assert ("gateway", SpanKind.SERVER) == steps[0]
    for step in [
        ("ingestion", SpanKind.SERVER),  # the upload RPC, which writes the AudioIngested outbox row
        ("transcription", SpanKind.CONSUMER),  # AudioIngested queues the job
        ("transcription", SpanKind.INTERNAL),  # the worker's transcription
        ("notegen", SpanKind.CONSUMER),  # TranscriptionCompleted becomes a note
        ("query", SpanKind.CONSUMER),  # NoteGenerated in the read model
    ]:
        assert step in steps, (step, steps)
    assert {span.attributes.get(SERVICE_ATTRIBUTE) for span in in_trace.values()} >= {
        "gateway", "ingestion", "transcription", "notegen", "query"
    }
    # Every message hop has its producer span: the relay published in the same trace.
    assert sum(1 for span in chain if span.kind is SpanKind.PRODUCER) >= 3
