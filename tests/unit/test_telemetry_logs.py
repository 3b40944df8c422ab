"""Every log line written inside a span carries its trace and span ids; outside one, none."""

from __future__ import annotations

import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from common.logs import configure_logging, log_context


def test_log_lines_carry_the_trace_id_of_the_current_span(capsys):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("tests")
        tracer = TracerProvider().get_tracer("tests")
        log = logging.getLogger("tests.telemetry")
        with tracer.start_as_current_span("work") as span, log_context(note_id="n-1"):
            log.info("inside")
        log.info("outside")
    finally:
        root.handlers[:], root.level = handlers, level
    inside, outside = [json.loads(line) for line in capsys.readouterr().out.splitlines()[-2:]]
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert inside["span_id"] == format(span.get_span_context().span_id, "016x")
    assert inside["note_id"] == "n-1" and inside["service"] == "tests"
    assert "trace_id" not in outside and "span_id" not in outside
