"""Smart Feedback (seed 003): a follow-up message to the owner / patient, written from a
consultation's note, for many notes at once, asynchronously.

``queue`` keeps, of the ids asked for, the tenant's notes that have a generated note (the others
are not queued and not counted) and stores one pending follow-up per note in a batch, in one
transaction. A worker in this process writes them: from the note's structured facts (patient
name, findings, medications as prescribed, follow-up interval) in the consultation's language,
with a localised template (``template-v1``). Rows are claimed with a lease, so replicas share the
work and a crashed worker's rows are taken over.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from typing import Any

import grpc
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.db import utcnow
from common.grpc_errors import ServiceError
from common.logs import log_context
from common.outbox import Outbox
from scribe.events.v1 import events_pb2 as ev
from scribe.notegen.v1 import notegen_pb2 as pb
from scribe.types.v1 import types_pb2 as types
from services.notegen.llm import LlmGenerator, write_follow_up
from services.notegen.models import FollowUpBatchRow, FollowUpRow, GenerationRow

log = logging.getLogger(__name__)

GENERATOR = "template-v1"
MAX_IDS = 1000
MAX_INSTRUCTIONS = 4000
LEASE_S = 60

_TEXT = {
    "pt": {
        "hello": "Olá! Aqui é da clínica.",
        "how_named": "Estamos passando para saber como {name} está desde a consulta.",
        "how": "Estamos passando para saber como estão as coisas desde a consulta.",
        "found": "Na consulta, vimos: {items}.",
        "meds": "Lembrete do tratamento: {items}.",
        "back": "O retorno está previsto para daqui a {days} dias.",
        "bye": "Se tiver qualquer dúvida ou algo não estiver bem, é só responder esta mensagem.",
    },
    "en": {
        "hello": "Hello from the clinic!",
        "how_named": "We are checking in to see how {name} is doing since the visit.",
        "how": "We are checking in to see how things are going since the visit.",
        "found": "At the visit we found: {items}.",
        "meds": "A reminder of the treatment: {items}.",
        "back": "The follow-up visit is due in {days} days.",
        "bye": "If you have any question or something is not right, just reply to this message.",
    },
    "es": {
        "hello": "¡Hola! Le escribimos de la clínica.",
        "how_named": "Queremos saber cómo está {name} desde la consulta.",
        "how": "Queremos saber cómo van las cosas desde la consulta.",
        "found": "En la consulta vimos: {items}.",
        "meds": "Recordatorio del tratamiento: {items}.",
        "back": "La consulta de control está prevista dentro de {days} días.",
        "bye": "Si tiene cualquier duda o algo no va bien, responda a este mensaje.",
    },
}


def _fact_value(fact: Any) -> Any:
    return fact.get("value") if isinstance(fact, dict) else None


_DOSING = {
    "pt": {"every": "a cada {n} horas", "for": "por {n} dias", "as_needed": "se necessário"},
    "en": {"every": "every {n} hours", "for": "for {n} days", "as_needed": "as needed"},
    "es": {"every": "cada {n} horas", "for": "durante {n} días", "as_needed": "si es necesario"},
}


def _number(value: float, language: str) -> str:
    text = f"{value:g}"
    return text.replace(".", ",") if language in ("pt", "es") else text


def _medication(medication: dict[str, Any], language: str) -> str:
    """``metronidazol 200 mg, a cada 12 horas, por 5 dias``: what was prescribed, as prescribed."""
    words = _DOSING.get(language, _DOSING["en"])
    name = str(medication.get("name") or medication.get("drug") or "").strip()
    if not name:
        return ""
    parts = [name]
    dose, unit = medication.get("dose"), medication.get("unit")
    if isinstance(dose, (int, float)) and dose > 0:
        parts[0] += f" {_number(dose, language)}" + (f" {unit}" if unit else "")
    if isinstance(medication.get("frequency"), str) and medication["frequency"].strip():
        parts.append(medication["frequency"].strip())
    elif isinstance(medication.get("interval_hours"), (int, float)) and medication["interval_hours"] > 0:
        parts.append(words["every"].format(n=_number(medication["interval_hours"], language)))
    if medication.get("as_needed"):
        parts.append(words["as_needed"])
    if isinstance(medication.get("duration_days"), (int, float)) and medication["duration_days"] > 0:
        parts.append(words["for"].format(n=_number(medication["duration_days"], language)))
    return ", ".join(parts)


def compose_follow_up(structured: dict[str, Any] | None, language: str) -> str:
    """The follow-up message, in ``language`` (pt, en or es; en otherwise), from the note's facts."""
    text = _TEXT.get(language, _TEXT["en"])
    structured = structured or {}
    name = _fact_value((structured.get("patient") or {}).get("name"))
    parts = [text["hello"], text["how_named"].format(name=name) if name else text["how"]]
    findings = [str(item.get("text", "")).strip().rstrip(".") for item in structured.get("diagnoses") or []]
    findings = [item for item in findings if item]
    if findings:
        parts.append(text["found"].format(items="; ".join(findings)))
    medications = [_medication(item, language) for item in structured.get("medications") or []]
    medications = [item for item in medications if item]
    if medications:
        parts.append(text["meds"].format(items="; ".join(medications)))
    days = _fact_value(structured.get("follow_up_days"))
    if isinstance(days, (int, float)) and days > 0:
        parts.append(text["back"].format(days=int(days)))
    parts.append(text["bye"])
    return " ".join(parts)


def follow_up_facts(structured: dict[str, Any]) -> dict[str, Any]:
    """What the model may use: the note's facts, without provenance."""
    return {
        "patient_name": _fact_value((structured.get("patient") or {}).get("name")),
        "species": _fact_value((structured.get("patient") or {}).get("species")),
        "findings": [item.get("text") for item in structured.get("diagnoses") or [] if item.get("text")],
        "medications": [
            {key: item.get(key) for key in ("name", "dose", "unit", "frequency", "interval_hours", "duration_days")}
            for item in structured.get("medications") or []
        ],
        "follow_up_days": _fact_value(structured.get("follow_up_days")),
    }


def _follow_up_proto(row: FollowUpRow) -> pb.FollowUp:
    proto = pb.FollowUp(
        note_id=row.note_id,
        batch_id=row.batch_id,
        status=row.status if row.status != "running" else "pending",
        language=row.language,
        message=row.message,
        generator=row.generator,
    )
    if row.status == "failed":
        proto.failure.CopyFrom(types.Failure(code=row.failure_code, message=row.failure_message))
    return proto


class FollowUps:
    """The queue, the reads and the worker of follow-up messages."""

    def __init__(
        self,
        session_maker: async_sessionmaker[AsyncSession],
        outbox: Outbox | None = None,
        poll_s: float = 1.0,
        llm: LlmGenerator | None = None,
    ) -> None:
        self.session_maker = session_maker
        # With an LLM endpoint, a follow-up with instructions is written by the model (checked).
        self.llm = llm
        # FollowUpWritten goes out with each message, so that the query service can send webhooks.
        self.outbox = outbox
        self.poll_s = poll_s
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None

    # -- queue and reads ---------------------------------------------------------------------

    async def queue(self, request: pb.QueueFollowUpsRequest) -> pb.QueueFollowUpsResponse:
        if not request.tenant_id:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", "tenant_id is required")
        if len(request.note_ids) > MAX_IDS or len(request.instructions) > MAX_INSTRUCTIONS:
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "VALIDATION_ERROR",
                f"at most {MAX_IDS} ids and {MAX_INSTRUCTIONS} characters of instructions",
            )
        wanted = list(dict.fromkeys(note_id for note_id in request.note_ids if note_id))
        now = utcnow()
        batch_id = str(uuid.uuid4())
        async with self.session_maker() as session, session.begin():
            rows = (
                await session.execute(
                    select(GenerationRow.note_id, GenerationRow.run_id, GenerationRow.attempt)
                    .where(
                        GenerationRow.tenant_id == request.tenant_id,
                        GenerationRow.note_id.in_(wanted),
                        GenerationRow.status == "completed",
                    )
                )
            ).all() if wanted else []
            latest: dict[str, tuple[int, str]] = {}
            for note_id, run_id, attempt in rows:
                if note_id not in latest or attempt > latest[note_id][0]:
                    latest[note_id] = (attempt, run_id)
            queued = [note_id for note_id in wanted if note_id in latest]
            session.add(
                FollowUpBatchRow(
                    batch_id=batch_id, tenant_id=request.tenant_id, requested_count=len(request.note_ids),
                    queued_count=len(queued), created_at=now,
                )
            )
            await session.flush()
            for note_id in queued:
                session.add(
                    FollowUpRow(
                        id=str(uuid.uuid4()), batch_id=batch_id, tenant_id=request.tenant_id, note_id=note_id,
                        run_id=latest[note_id][1], instructions=request.instructions if request.rebounce else "",
                        status="pending", created_at=now,
                    )
                )
        log.info(
            "follow-ups queued",
            extra={"tenant_id": request.tenant_id, "batch_id": batch_id, "requested": len(request.note_ids),
                   "queued": len(queued)},
        )
        self._wake.set()
        return pb.QueueFollowUpsResponse(batch_id=batch_id, queued_note_ids=queued)

    async def get_batch(self, tenant_id: str, batch_id: str) -> pb.GetFollowUpBatchResponse:
        async with self.session_maker() as session:
            batch = await session.get(FollowUpBatchRow, batch_id) if batch_id else None
            if batch is None or batch.tenant_id != tenant_id:
                raise ServiceError(grpc.StatusCode.NOT_FOUND, "BATCH_NOT_FOUND", "Batch not found")
            rows = (
                await session.scalars(
                    select(FollowUpRow).where(FollowUpRow.batch_id == batch_id).order_by(FollowUpRow.created_at,
                                                                                          FollowUpRow.note_id)
                )
            ).all()
        return pb.GetFollowUpBatchResponse(
            batch_id=batch_id,
            requested_count=batch.requested_count,
            queued_count=batch.queued_count,
            completed_count=sum(1 for row in rows if row.status == "completed"),
            failed_count=sum(1 for row in rows if row.status == "failed"),
            follow_ups=[_follow_up_proto(row) for row in rows],
        )

    async def get_latest(self, tenant_id: str, note_id: str) -> pb.FollowUp:
        async with self.session_maker() as session:
            row = await session.scalar(
                select(FollowUpRow)
                .where(FollowUpRow.note_id == note_id, FollowUpRow.tenant_id == tenant_id)
                .order_by(FollowUpRow.created_at.desc())
                .limit(1)
            )
        if row is None:
            raise ServiceError(grpc.StatusCode.NOT_FOUND, "FOLLOW_UP_NOT_FOUND", "No follow-up for this note")
        return _follow_up_proto(row)

    # -- worker ------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="follow-up-writer")

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                while await self.write_due() and not self._stopping.is_set():
                    pass
            except Exception:
                log.exception("follow-up pass failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            self._wake.clear()

    async def write_due(self, limit: int = 20) -> int:
        """Write up to ``limit`` due follow-ups; returns how many were written."""
        now = utcnow()
        async with self.session_maker() as session:
            ids = (
                await session.scalars(
                    select(FollowUpRow.id)
                    .where(
                        or_(
                            FollowUpRow.status == "pending",
                            (FollowUpRow.status == "running") & (FollowUpRow.lease_until < now),
                        )
                    )
                    .order_by(FollowUpRow.created_at)
                    .limit(limit)
                )
            ).all()
        written = 0
        for follow_up_id in ids:
            async with self.session_maker() as session, session.begin():
                claimed = await session.execute(
                    update(FollowUpRow)
                    .where(
                        FollowUpRow.id == follow_up_id,
                        or_(
                            FollowUpRow.status == "pending",
                            (FollowUpRow.status == "running") & (FollowUpRow.lease_until < now),
                        ),
                    )
                    .values(status="running", lease_until=now + dt.timedelta(seconds=LEASE_S))
                )
            if claimed.rowcount != 1:
                continue
            await self._write(follow_up_id)
            written += 1
        return written

    async def _llm_message(self, row: FollowUpRow, generation: GenerationRow, draft: str) -> str | None:
        """The model's message when it names what it must (the patient, every medication); else None."""
        if self.llm is None or not row.instructions:
            return None
        structured = generation.structured or {}
        facts = follow_up_facts(structured)
        message = await write_follow_up(self.llm, facts, draft, generation.language or "en", row.instructions)
        if message is None:
            return None
        folded = message.casefold()
        required = [facts["patient_name"]] if facts.get("patient_name") else []
        required += [medication["name"] for medication in facts["medications"] if medication.get("name")]
        if any(str(word).casefold() not in folded for word in required):
            log.warning("llm follow-up left out the patient or a medication; using the template")
            return None
        return message

    async def _write(self, follow_up_id: str) -> None:
        async with self.session_maker() as session:
            row = await session.get(FollowUpRow, follow_up_id)
            generation = await session.get(GenerationRow, row.run_id) if row is not None else None
        llm_message = None
        if row is not None and generation is not None and generation.status == "completed":
            # Outside the transaction: the model may take seconds.
            draft = compose_follow_up(generation.structured, generation.language or "en")
            llm_message = await self._llm_message(row, generation, draft)
        async with self.session_maker() as session, session.begin():
            row = await session.get(FollowUpRow, follow_up_id)
            assert row is not None
            generation = await session.get(GenerationRow, row.run_id)
            with log_context(note_id=row.note_id, tenant_id=row.tenant_id):
                if generation is None or generation.status != "completed":
                    row.status = "failed"
                    row.failure_code = "NOTE_NOT_AVAILABLE"
                    row.failure_message = "The consultation's note is no longer available"
                else:
                    row.language = generation.language or "en"
                    if llm_message is not None and self.llm is not None:
                        row.message, row.generator = llm_message, self.llm.name
                    else:
                        row.message = compose_follow_up(generation.structured, row.language)
                        row.generator = GENERATOR
                    row.status = "completed"
                row.lease_until = None
                row.finished_at = utcnow()
                if self.outbox is not None:
                    written = ev.FollowUpWritten(
                        follow_up_id=row.id, batch_id=row.batch_id, status=row.status, language=row.language,
                        message=row.message, generator=row.generator,
                    )
                    if row.status == "failed":
                        written.failure.CopyFrom(types.Failure(code=row.failure_code, message=row.failure_message))
                    await self.outbox.enqueue(session, written, tenant_id=row.tenant_id, note_id=row.note_id)
                log.info("follow-up written", extra={"batch_id": row.batch_id, "status": row.status})
