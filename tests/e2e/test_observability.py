"""/metrics of every service and of the gateway, scraped while the system runs a note end to end.

The system is started as ``make run`` starts it; the launcher gives each process its own metrics
port (in run/stack.json). One note goes through; then each process's metrics must tell that story:
requests counted by route template and RPC, the real-time factor observed, the note counted as
completed, and every consumer lag and outbox backlog back to 0.
"""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.system import RunningSystem, start_system, wait_terminal

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SERVICES = ("ingestion", "transcription", "notegen", "query")

Samples = dict[str, list[tuple[dict[str, str], float]]]


@pytest.fixture(scope="module")
def system(tmp_path_factory, model_dir) -> RunningSystem:
    running = start_system(tmp_path_factory.mktemp("observed"), model_dir)
    yield running
    assert running.stop() == 0, running.logs("launcher")


def upload(client: httpx.Client, audio, language: str) -> httpx.Response:
    with open(audio, "rb") as handle:
        return client.post(
            "/notes/v1/notes",
            files={"audio": (audio.name, handle, "audio/wav")},
            data={"name": "Observed", "gender": "male", "language": language},
        )


def scrape(system: RunningSystem, component: str) -> Samples:
    """Every sample of a process's /metrics, by sample name."""
    port = system.state()["children"][component]["metrics_port"]
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
    return sum(v for sample_labels, v in samples.get(name, []) if labels.items() <= sample_labels.items())


def test_every_process_reports_the_run_of_a_note(system, consultation_audio):
    with system.client() as client:
        created = upload(client, consultation_audio["en"], "en")
        assert created.status_code == 201, created.text
        note_id = created.json()["data"]["id"]
        assert wait_terminal(client, note_id) == "completed"
        assert client.get(f"/notes/v1/notes/{note_id}").status_code == 200

    gateway = scrape(system, "gateway")
    assert value(gateway, "scribe_http_requests_total", route="/notes/v1/notes", method="POST", status="201") == 1
    assert value(gateway, "scribe_http_requests_total", route="/notes/v1/notes/{note_id}/status", method="GET") >= 1
    assert value(gateway, "scribe_http_requests_total", route="/notes/v1/notes/{note_id}", status="200") >= 1
    assert value(gateway, "scribe_http_request_duration_seconds_count", route="/notes/v1/notes", method="POST") == 1
    routes = {labels["route"] for labels, _ in gateway["scribe_http_requests_total"]}
    assert not any(note_id in route for route in routes), routes  # templates, never raw paths
    assert value(gateway, "process_resident_memory_bytes") > 0

    ingestion = scrape(system, "ingestion")
    upload_rpc = "/scribe.ingestion.v1.IngestionService/UploadAudio"
    assert value(ingestion, "scribe_grpc_server_requests_total", service="ingestion", method=upload_rpc, code="OK") == 1
    assert value(ingestion, "scribe_grpc_server_latency_seconds_count", method=upload_rpc) == 1

    query = scrape(system, "query")
    assert value(query, "scribe_grpc_server_requests_total", service="query", code="OK") >= 2
    assert value(query, "scribe_notes", status="completed") >= 1
    assert value(query, "scribe_notes", status="processing") == 0

    transcription = scrape(system, "transcription")
    assert value(transcription, "scribe_transcription_realtime_factor_count") >= 1
    assert value(transcription, "scribe_transcription_realtime_factor_sum") > 0
    assert {labels["state"] for labels, _ in transcription["scribe_transcription_queue_depth"]} == {"queued", "running"}
    assert value(transcription, "scribe_transcription_queue_depth") == 0

    # The last events (the note's own, the ingestion's bookkeeping) settle within moments.
    deadline = time.monotonic() + 30
    while True:
        scraped = {name: scrape(system, name) for name in SERVICES}
        lags = {
            (name, labels["group"], labels["topic"], labels["partition"]): v
            for name, samples in scraped.items()
            for labels, v in samples.get("scribe_consumer_lag", [])
        }
        backlogs = {name: value(samples, "scribe_outbox_backlog", service=name) for name, samples in scraped.items()}
        settled = (
            {name for name, _, _, _ in lags} == set(SERVICES)
            and not any(lags.values())
            and not any(backlogs.values())
        )
        if settled:
            break
        assert time.monotonic() < deadline, (
            {key: lag for key, lag in lags.items() if lag}, backlogs, {name for name, *_ in lags}
        )
        time.sleep(0.5)
    for name, samples in scraped.items():
        assert value(samples, "scribe_outbox_oldest_age_seconds", service=name) == 0
