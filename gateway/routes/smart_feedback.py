"""Seed 003's Smart Feedback: ``POST /api/externalAPIs/public/smartFeedback`` queues, for each
conversation (a note of the caller's tenant), the asynchronous writing of a follow-up message to
the owner / patient from the consultation's note; notegen writes them.

The answer is exactly the seed's ``{code: 200, message: "Success", data: {message, queuedCount}}``;
unknown or foreign ids are neither queued nor counted. The batch's id comes in the ``X-Batch-Id``
header (and ``Location`` names its progress endpoint), so the body stays the seed's. Errors on
this surface are the seed's shape ``{code, message, data: null}`` (see gateway.errors); a request
not answered within ``smart_feedback_timeout_s`` (60 s) is 408.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from gateway.dependencies import BackendStubs, NoteId, Settings
from gateway.errors import ApiError
from gateway.ratelimit import Limited, LimitedEditor
from gateway.schemas import error_responses
from scribe.notegen.v1 import notegen_pb2 as pb

router = APIRouter(tags=["smart feedback"])

PATH = "/api/externalAPIs/public/smartFeedback"
QUEUED_MESSAGE = "Conversas enviadas para processamento"
MAX_IDS = 1000


class ReasoningConfig(BaseModel):
    rebounce: bool = Field(default=False, description="Resume the conversation from its original context.")
    rebounceInstructions: str = Field(  # noqa: N815 (the seed's name)
        default="", max_length=4000, description="How to write the message (used by an LLM generator)."
    )


class SmartFeedbackRequest(BaseModel):
    conversationIds: list[str] = Field(  # noqa: N815 (the seed's name)
        min_length=1, max_length=MAX_IDS, examples=[["5893c3b4-7cfd-4348-a190-b228a5381d7a"]]
    )
    reasoningConfig: ReasoningConfig | None = None  # noqa: N815


class SmartFeedbackData(BaseModel):
    message: str = Field(examples=[QUEUED_MESSAGE])
    queuedCount: int  # noqa: N815


class SmartFeedbackResponse(BaseModel):
    code: Literal[200] = 200
    message: Literal["Success"] = "Success"
    data: SmartFeedbackData


class SeedError(BaseModel):
    """This surface's error body."""

    code: int = Field(examples=[401])
    message: str
    data: None = None


class FollowUpItem(BaseModel):
    conversationId: str  # noqa: N815
    status: Literal["pending", "completed", "failed"]
    language: str | None = None
    message: str | None = Field(default=None, description="The follow-up message (completed only).")
    generator: str | None = None
    failure: dict | None = None


class BatchProgress(BaseModel):
    batchId: str  # noqa: N815
    requestedCount: int  # noqa: N815
    queuedCount: int  # noqa: N815
    completedCount: int  # noqa: N815
    failedCount: int  # noqa: N815
    followUps: list[FollowUpItem]  # noqa: N815


class BatchProgressResponse(BaseModel):
    code: Literal[200] = 200
    message: Literal["Success"] = "Success"
    data: BatchProgress


class FollowUpResponse(BaseModel):
    data: FollowUpItem
    meta: dict = Field(default_factory=dict)


def _seed_errors(*statuses: int) -> dict[int | str, dict]:
    descriptions = {
        400: "Invalid body", 401: "Invalid or missing API key", 403: "The key's role may not do this",
        404: "No such batch", 408: "Not answered within 60 seconds", 429: "Too many requests",
        500: "Internal error", 503: "A backend service is unavailable",
    }
    return {status: {"model": SeedError, "description": descriptions[status]} for status in statuses}


def _item(follow_up: pb.FollowUp) -> FollowUpItem:
    return FollowUpItem(
        conversationId=follow_up.note_id,
        status=follow_up.status,  # type: ignore[arg-type]
        language=follow_up.language or None,
        message=follow_up.message or None,
        generator=follow_up.generator or None,
        failure={"code": follow_up.failure.code, "message": follow_up.failure.message}
        if follow_up.HasField("failure")
        else None,
    )


def _canonical_ids(ids: list[str]) -> list[str]:
    """Each id in canonical UUID form; one that is no UUID is passed on as is (bounded), to be
    counted as asked for and found unknown."""
    canonical = []
    for raw in ids:
        try:
            canonical.append(str(uuid.UUID(raw)))
        except (ValueError, AttributeError, TypeError):
            canonical.append(str(raw)[:64])
    return canonical


@router.post(
    PATH,
    response_model=SmartFeedbackResponse,
    summary="Queue follow-up messages for many conversations (Smart Feedback)",
    responses={
        200: {
            "description": "Queued; X-Batch-Id names the batch, Location its progress",
            "headers": {
                "X-Batch-Id": {"schema": {"type": "string"}, "description": "The batch's id."},
                "Location": {"schema": {"type": "string"}, "description": "The batch's progress endpoint."},
            },
        },
        **_seed_errors(400, 401, 403, 408, 429, 500, 503),
    },
)
async def smart_feedback(
    principal: LimitedEditor, body: SmartFeedbackRequest, backends: BackendStubs, settings: Settings
) -> JSONResponse:
    config = body.reasoningConfig or ReasoningConfig()
    request = pb.QueueFollowUpsRequest(
        tenant_id=principal.tenant_id,
        note_ids=_canonical_ids(body.conversationIds),
        rebounce=config.rebounce,
        instructions=config.rebounceInstructions,
    )
    try:
        answer = await asyncio.wait_for(
            backends.notegen.QueueFollowUps(request, timeout=settings.smart_feedback_timeout_s + 5),
            settings.smart_feedback_timeout_s,
        )
    except TimeoutError:
        raise ApiError(408, "REQUEST_TIMEOUT", "Request Timeout") from None
    response = SmartFeedbackResponse(
        data=SmartFeedbackData(message=QUEUED_MESSAGE, queuedCount=len(answer.queued_note_ids))
    )
    return JSONResponse(
        response.model_dump(),
        headers={"X-Batch-Id": answer.batch_id, "Location": f"{PATH}/{answer.batch_id}"},
    )


@router.get(
    PATH + "/{batch_id}",
    response_model=BatchProgressResponse,
    response_model_exclude_none=True,
    summary="A Smart Feedback batch's progress and its follow-up messages",
    responses=_seed_errors(400, 401, 404, 429, 500, 503),
)
async def smart_feedback_batch(
    principal: Limited, batch_id: Annotated[str, Path(max_length=36)], backends: BackendStubs, settings: Settings
) -> BatchProgressResponse:
    answer = await backends.notegen.GetFollowUpBatch(
        pb.GetFollowUpBatchRequest(tenant_id=principal.tenant_id, batch_id=batch_id), timeout=settings.rpc_timeout_s
    )
    return BatchProgressResponse(
        data=BatchProgress(
            batchId=answer.batch_id,
            requestedCount=answer.requested_count,
            queuedCount=answer.queued_count,
            completedCount=answer.completed_count,
            failedCount=answer.failed_count,
            followUps=[_item(item) for item in answer.follow_ups],
        )
    )


@router.get(
    "/notes/v1/notes/{note_id}/follow-up",
    response_model=FollowUpResponse,
    response_model_exclude_none=True,
    tags=["notes"],
    summary="The note's latest Smart Feedback follow-up message",
    responses=error_responses(400, 401, 404, 429, 500, 503, 504),
)
async def get_note_follow_up(
    principal: Limited, note_id: NoteId, backends: BackendStubs, settings: Settings
) -> FollowUpResponse:
    answer = await backends.notegen.GetFollowUp(
        pb.GetFollowUpRequest(tenant_id=principal.tenant_id, note_id=note_id), timeout=settings.rpc_timeout_s
    )
    return FollowUpResponse(data=_item(answer.follow_up))
