"""JSON log lines with the note, tenant, event ids of the work at hand and its trace and span ids.

``configure_logging`` is called once by each entry point; libraries only use
``logging.getLogger(__name__)``. Context ids are carried in context variables so that every line
written while handling a note carries them without passing them around.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator

from pythonjsonlogger.json import JsonFormatter

from common.telemetry import log_trace_ids

_CONTEXT_KEYS = ("note_id", "tenant_id", "event_id", "run_id")
_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("scribe_log_context", default={})


class _ContextFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        # The current span's ids: a line can be found from its trace, and its trace from a line.
        for key, value in log_trace_ids().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send JSON lines to stdout for the whole process."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
            timestamp=False,
        )
    )
    handler.addFilter(_ContextFilter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka reports every broker reconnect at ERROR/WARNING; keep them but not their chatter.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


@contextlib.contextmanager
def log_context(**ids: str | None) -> Iterator[None]:
    """Attach ids (note_id, tenant_id, event_id, run_id) to every line in the block.

    ``trace_id`` and ``span_id`` need no attaching: every line carries those of the current span.
    """
    merged = dict(_context.get())
    merged.update({k: v for k, v in ids.items() if k in _CONTEXT_KEYS and v})
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)
