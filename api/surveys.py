"""CSAT that closes the loop: survey links (no login), recovery tasks, praise, and open feedback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, Field
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError

from api.auth import ANYONE, STAFF, Principal, require
from api.errors import http_error_from_update
from db import directory, surveys
from domain.directory import IDENT, LANGUAGE_CODE, SLUG
from domain.enums import ActorType, Role
from domain.messages import Phrase, say
from domain.surveys import InvalidToken, SurveyAnswer, SurveyForm, SurveyQuestion, read_survey_token
from domain.text import Instant, PlainText
from domain.tickets import Actor, CsatAnswer, Survey, ticket_workflow_id
from domain.triage import classify_module
from workflows.recovery import recovery_workflow_id

router = APIRouter(prefix="/v1", tags=["satisfaction"])
Token = Annotated[str, Path(min_length=10, max_length=200, pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")]
MAX_FEEDBACK_SPAN = timedelta(days=366)


class SurveyRecorded(BaseModel):
    ticket_id: int
    score: int


class FeedbackCreate(BaseModel):
    body: PlainText = Field(min_length=1, max_length=5_000)
    module: str | None = Field(
        default=None, pattern=SLUG, description="classified from the text when omitted"
    )
    language: str | None = Field(default=None, pattern=LANGUAGE_CODE)


class Feedback(BaseModel):
    id: int
    customer_id: str | None
    module: str
    language: str | None
    body: str
    created_at: datetime


class FeedbackCounts(BaseModel):
    start: datetime
    end: datetime
    by_module: dict[str, int]


class RecoveryDone(BaseModel):
    note: PlainText | None = Field(default=None, max_length=5_000)


class Recovery(BaseModel):
    ticket_id: int
    region: str | None
    lead_id: str | None
    score: int
    comment: str | None
    status: str
    due_at: datetime
    done_at: datetime | None
    done_by: str | None
    note: str | None
    created_at: datetime


class Praise(BaseModel):
    ticket_id: int
    agent_id: str
    score: int
    comment: str
    created_at: datetime


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


async def _survey(request: Request, token: str) -> asyncpg.Record:
    async with _pool(request).acquire() as conn:
        key = await surveys.secret(conn)
        try:
            survey_id, expires_at = read_survey_token(key, token)
        except InvalidToken:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "this survey link is not valid") from None
        row = await surveys.get_survey(conn, survey_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this survey no longer exists")
    if row["used_at"] is not None:
        raise HTTPException(status.HTTP_410_GONE, "this survey was already answered")
    if min(expires_at, row["expires_at"]) <= datetime.now(UTC):
        raise HTTPException(status.HTTP_410_GONE, "this survey has expired")
    return row


# --- surveys (no login: the signed link is the credential) ------------------------------------------


@router.get("/surveys/{token}", response_model=SurveyForm)
async def survey_form(token: Token, request: Request) -> SurveyForm:
    row = await _survey(request, token)
    settings = request.app.state.settings
    language = row["language"]
    questions = [
        SurveyQuestion(id="score", label=say(Phrase.SURVEY_SCORE, language)[0], kind="score", required=True),
        SurveyQuestion(
            id="reason",
            label=say(Phrase.SURVEY_REASON, language)[0],
            kind="choice",
            options=settings.survey_reasons,
        ),
        SurveyQuestion(id="comment", label=say(Phrase.SURVEY_COMMENT, language)[0], kind="text"),
        *(
            SurveyQuestion(id=f"q{n}", label=q, kind="text")
            for n, q in enumerate(settings.survey_questions, 1)
        ),
    ]
    return SurveyForm(
        ticket_id=row["ticket_id"],
        subject=row["subject"],
        language=language,
        expires_at=row["expires_at"],
        questions=questions,
    )


@router.post("/surveys/{token}", response_model=SurveyRecorded)
async def answer_survey(token: Token, body: SurveyAnswer, request: Request) -> SurveyRecorded:
    """Works once: the link is spent the moment an answer is accepted."""
    row = await _survey(request, token)
    settings = request.app.state.settings
    if body.reason is not None and body.reason not in settings.survey_reasons:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"reason must be one of {', '.join(settings.survey_reasons)}",
        )
    extra = {f"q{n}" for n in range(1, len(settings.survey_questions) + 1)}
    if unknown := set(body.answers) - extra:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"no such questions: {', '.join(sorted(unknown))}"
        )
    async with _pool(request).acquire() as conn:
        if not await surveys.use_survey(conn, row["id"]):
            raise HTTPException(status.HTTP_410_GONE, "this survey was already answered")
    answer = CsatAnswer(
        score=body.score,
        comment=body.comment,
        reason=body.reason,
        answers=body.answers,
        actor=Actor(type=ActorType.CUSTOMER, id=row["customer_id"], name="survey link"),
    )
    handle = request.app.state.client.get_workflow_handle(ticket_workflow_id(row["ticket_id"]))
    try:
        await handle.execute_update("submit_csat", answer, result_type=Survey)
    except WorkflowUpdateFailedError as err:
        raise http_error_from_update(err) from None  # answered another way, or expired: spent anyway
    except RPCError as err:
        async with _pool(request).acquire() as conn:
            await surveys.release_survey(conn, row["id"])  # the desk was unreachable: the link still works
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"could not record the answer: {err.message}"
        ) from None
    return SurveyRecorded(ticket_id=row["ticket_id"], score=body.score)


# --- recovery and praise ------------------------------------------------------------------------------


@router.get("/recoveries", response_model=list[Recovery])
async def list_recoveries(
    request: Request,
    state: Annotated[Literal["open", "overdue", "done"] | None, Query(alias="status")] = None,
    _: Principal = Depends(require(*STAFF)),
) -> list[Recovery]:
    """Unhappy customers to call back, earliest due first."""
    async with _pool(request).acquire() as conn:
        return [Recovery(**dict(r)) for r in await surveys.list_recoveries(conn, state)]


@router.post("/tickets/{ticket_id}/recovery", response_model=Recovery)
async def finish_recovery(
    ticket_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    body: RecoveryDone,
    request: Request,
    principal: Principal = Depends(require(Role.AGENT, Role.ADMIN)),
) -> Recovery:
    done_by = principal.subject_id or "admin"
    async with _pool(request).acquire() as conn:
        if await surveys.get_recovery(conn, ticket_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"ticket {ticket_id} has no recovery task")
        if not await surveys.finish_recovery(conn, ticket_id, done_by, body.note):
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"the recovery of ticket {ticket_id} is already done"
            )
        recovery = await surveys.get_recovery(conn, ticket_id)
    try:
        await request.app.state.client.get_workflow_handle(recovery_workflow_id(ticket_id)).signal(
            "recovered"
        )
    except RPCError:
        pass  # the workflow already ended (overdue and past the manager's grace): the record is what counts
    return Recovery(**dict(recovery))


@router.get("/agents/{agent_id}/praise", response_model=list[Praise])
async def agent_praise(
    agent_id: Annotated[str, Path(pattern=IDENT)], request: Request, _: Principal = Depends(require(*STAFF))
) -> list[Praise]:
    """What customers said when they rated this engineer's tickets 4 or 5 with a comment."""
    async with _pool(request).acquire() as conn:
        if await directory.get_agent(conn, agent_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"agent {agent_id!r} not found")
        return [Praise(**dict(r)) for r in await surveys.praise_of(conn, agent_id)]


# --- open feedback ------------------------------------------------------------------------------------


@router.post("/feedback", status_code=status.HTTP_201_CREATED, response_model=Feedback)
async def give_feedback(
    body: FeedbackCreate, request: Request, principal: Principal = Depends(require(*ANYONE))
) -> Feedback:
    """Feedback that belongs to no ticket ("the new dashboard is slow"), counted by module."""
    customer_id = principal.subject_id if principal.role is Role.CUSTOMER else None
    async with _pool(request).acquire() as conn:
        module = body.module or classify_module(body.body, await directory.list_modules(conn)).module
        try:
            row = await surveys.add_feedback(conn, customer_id, module, body.language, body.body)
        except asyncpg.ForeignKeyViolationError:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown module {module!r}") from None
    return Feedback(**dict(row))


@router.get("/feedback", response_model=list[Feedback])
async def list_feedback(
    request: Request,
    module: Annotated[str | None, Query(pattern=SLUG)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    _: Principal = Depends(require(*STAFF)),
) -> list[Feedback]:
    async with _pool(request).acquire() as conn:
        return [Feedback(**dict(r)) for r in await surveys.list_feedback(conn, module, limit)]


@router.get("/feedback/counts", response_model=FeedbackCounts)
async def feedback_counts(
    request: Request,
    start: Annotated[Instant, Query(alias="from")],
    end: Annotated[Instant, Query(alias="to")],
    _: Principal = Depends(require(*STAFF)),
) -> FeedbackCounts:
    if end <= start or end - start > MAX_FEEDBACK_SPAN:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "'to' must be after 'from', at most a year later"
        )
    async with _pool(request).acquire() as conn:
        counts = await surveys.feedback_counts(conn, start, end)
    return FeedbackCounts(start=start, end=end, by_module=counts)
