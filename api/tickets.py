"""Ticket endpoints. Reads come from PostgreSQL; every change goes through the ticket's workflow."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, Field
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError

from api.auth import ANYONE, STAFF, Principal, actor_for, require
from api.errors import RETRY_LATER, http_error_from_rpc, http_error_from_update
from api.schemas import (
    AgentOnly,
    AssignBody,
    CsatBody,
    HandoffNoteBody,
    MessageAccepted,
    MessageCreate,
    PriorityBody,
    ReopenBody,
    ReplyCreate,
    ReplyOut,
    ResolveBody,
    SolvedBody,
    StatusBody,
    TicketCreate,
    TicketLink,
    TicketOut,
    TicketPage,
    Timeline,
)
from db import directory, kb, problems, tickets
from db.tickets import IdempotencyConflict, TicketFilters
from domain.directory import IDENT, LANGUAGE_CODE, SLUG
from domain.enums import ActorType, Priority, Role, TicketStatus
from domain.escalation import Escalation
from domain.text import PlainText
from domain.tickets import (
    Actor,
    AgentRef,
    AgentReply,
    AssignRequest,
    CsatAnswer,
    CustomerMessage,
    EscalationAck,
    Handoff,
    HandoffAck,
    HandoffNote,
    HandoffNoteInput,
    PriorityChange,
    ReopenRequest,
    ReplyAccepted,
    ResolveRequest,
    SelfServiceRequest,
    StatusChange,
    Survey,
    TicketInput,
    ticket_workflow_id,
)
from meridian.temporal import start_ticket_workflow

router = APIRouter(prefix="/v1/tickets", tags=["tickets"])
# A request never hangs on a ticket's workflow (a worker down, a stuck activity): it answers 504.
UPDATE_PATIENCE_SECONDS = 30.0

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
TicketId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the ticket's number")]


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


async def _visible_ticket(request: Request, principal: Principal, ticket_id: int) -> asyncpg.Record:
    async with _pool(request).acquire() as conn:
        row = await tickets.get_ticket(conn, ticket_id)
    # A customer learns nothing about other customers' tickets, not even that they exist.
    if row is None or (principal.role is Role.CUSTOMER and row["customer_id"] != principal.subject_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"ticket {ticket_id} not found")
    return row


def _request_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TicketOut)
async def create_ticket(
    body: TicketCreate,
    request: Request,
    response: Response,
    principal: Principal = Depends(require(*ANYONE)),
    idempotency_key: IdempotencyKey = None,
) -> TicketOut:
    if principal.role is Role.CUSTOMER:
        if body.customer_id not in (None, principal.subject_id):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "customers file tickets only for themselves")
        customer_id = principal.subject_id
    elif body.customer_id is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "customer_id is required for this token")
    else:
        customer_id = body.customer_id
    actor = await actor_for(request, principal)
    settings = request.app.state.settings
    created_at = datetime.now(UTC)
    async with _pool(request).acquire() as conn:
        if await directory.get_customer(conn, customer_id) is None:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown customer {customer_id!r}")
        try:
            row, created = await tickets.create_ticket(
                conn,
                customer_id=customer_id,
                subject=body.subject,
                body=body.body,
                channel=body.channel,
                declared_priority=body.priority,
                created_at=created_at,
                actor=actor,
                idempotency_scope=principal.idempotency_scope if idempotency_key else None,
                idempotency_key=idempotency_key,
                request_hash=_request_hash({**body.model_dump(mode="json"), "customer_id": customer_id}),
            )
        except IdempotencyConflict as conflict:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(conflict)) from None
    ticket_input = TicketInput(
        ticket_id=row["id"],
        customer_id=customer_id,
        subject=body.subject,
        body=body.body,
        channel=body.channel,
        declared_priority=body.priority,
        created_at=row["created_at"],
        lifecycle=settings.lifecycle(),
    )
    try:
        # Also on a replay: the first attempt may have saved the ticket and then failed to start it.
        await start_ticket_workflow(request.app.state.client, settings.task_queue, ticket_input)
    except RPCError as err:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"ticket {row['id']} is saved but its workflow could not start yet ({err.message}); "
            "it will start automatically, or retry with the same Idempotency-Key",
            headers=RETRY_LATER,
        ) from None
    if created:
        request.app.state.metrics.tickets_created.labels(body.channel).inc()
    response.headers["Location"] = f"/v1/tickets/{row['id']}"
    if not created:
        response.status_code = status.HTTP_200_OK
        async with _pool(request).acquire() as conn:
            row = await tickets.get_ticket(conn, row["id"])
    return TicketOut.from_row(row)


@router.get("", response_model=TicketPage)
async def list_tickets(
    request: Request,
    principal: Principal = Depends(require(*ANYONE)),
    status_: Annotated[TicketStatus | None, Query(alias="status")] = None,
    region: Annotated[str | None, Query(pattern=SLUG)] = None,
    assignee: Annotated[str | None, Query(pattern=IDENT)] = None,
    priority: Priority | None = None,
    language: Annotated[str | None, Query(pattern=LANGUAGE_CODE)] = None,
    q: Annotated[
        PlainText | None, Query(min_length=1, max_length=200, description="text the subject contains")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> TicketPage:
    filters = TicketFilters(
        status=status_,
        region=region,
        assignee_id=assignee,
        priority=priority,
        language=language,
        customer_id=principal.subject_id if principal.role is Role.CUSTOMER else None,
    )
    async with _pool(request).acquire() as conn:
        try:
            rows, next_cursor = await tickets.list_tickets(
                conn, filters, limit=limit, cursor=cursor, subject_contains=q
            )
        except ValueError as err:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from None
    return TicketPage(items=[TicketOut.from_row(r) for r in rows], next_cursor=next_cursor)


@router.get("/{ticket_id}", response_model=TicketOut)
async def get_ticket(
    ticket_id: TicketId, request: Request, principal: Principal = Depends(require(*ANYONE))
) -> TicketOut:
    return TicketOut.from_row(await _visible_ticket(request, principal, ticket_id))


@router.get("/{ticket_id}/timeline", response_model=Timeline)
async def get_timeline(
    ticket_id: TicketId, request: Request, principal: Principal = Depends(require(*ANYONE))
) -> Timeline:
    await _visible_ticket(request, principal, ticket_id)
    async with _pool(request).acquire() as conn:
        events = await tickets.timeline(conn, ticket_id, include_internal=principal.role is not Role.CUSTOMER)
    return Timeline(ticket_id=ticket_id, events=events)


# --- changes, through the workflow --------------------------------------------------------


async def _open_ticket(request: Request, principal: Principal, ticket_id: int) -> asyncpg.Record:
    row = await _visible_ticket(request, principal, ticket_id)
    if row["status"] == TicketStatus.CLOSED.value:
        raise HTTPException(status.HTTP_409_CONFLICT, f"ticket {ticket_id} is closed")
    return row


async def _update(
    request: Request,
    ticket_id: TicketId,
    name: str,
    arg: Any,
    result_type: type,
    update_id: str | None = None,
):
    handle = request.app.state.client.get_workflow_handle(ticket_workflow_id(ticket_id))
    try:
        return await asyncio.wait_for(
            handle.execute_update(name, arg, result_type=result_type, id=update_id), UPDATE_PATIENCE_SECONDS
        )
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        # wait_for cancels the update's call, which the SDK turns into its own error, not TimeoutError.
        raise HTTPException(
            status.HTTP_504_GATEWAY_TIMEOUT,
            f"ticket {ticket_id} did not answer within {UPDATE_PATIENCE_SECONDS:.0f} s; the change may "
            "still be applied: check the timeline, or retry with the same Idempotency-Key",
        ) from None
    except WorkflowUpdateFailedError as err:
        raise http_error_from_update(err) from None
    except RPCError as err:
        raise http_error_from_rpc(err, ticket_id) from None


@router.post("/{ticket_id}/messages", status_code=status.HTTP_202_ACCEPTED, response_model=MessageAccepted)
async def post_message(
    ticket_id: TicketId,
    body: MessageCreate,
    request: Request,
    principal: Principal = Depends(require(Role.CUSTOMER, Role.INTEGRATION, Role.ADMIN)),
) -> MessageAccepted:
    """A customer message. Accepted at once; it appears on the timeline moments later."""
    row = await _open_ticket(request, principal, ticket_id)
    actor = await actor_for(request, principal)
    if principal.role is not Role.CUSTOMER:
        actor = Actor(type=ActorType.CUSTOMER, id=row["customer_id"], region=None, name=f"via {actor.id}")
    message_id = body.message_id or str(uuid.uuid4())
    if body.message_id is not None:
        await _same_as_before(request, ticket_id, ["customer_message"], "message_id", message_id, body.body)
    handle = request.app.state.client.get_workflow_handle(ticket_workflow_id(ticket_id))
    try:
        await handle.signal(
            "customer_message", CustomerMessage(message_id=message_id, body=body.body, actor=actor)
        )
    except RPCError as err:
        raise http_error_from_rpc(err, ticket_id) from None
    return MessageAccepted(ticket_id=ticket_id, message_id=message_id)


async def _same_as_before(
    request: Request, ticket_id: int, kinds: list[str], field: str, key: str, text: str, agent_id: str = ""
) -> None:
    """A client's id for a message or reply used again: a retry of the same thing is answered as
    the first was; anything else under that id is refused rather than silently dropped."""
    async with _pool(request).acquire() as conn:
        earlier = await tickets.event_with_id(conn, ticket_id, kinds, field, key)
    if earlier is None:
        return
    data = earlier["data"]
    said = data.get("original_body", data.get("body"))  # a translated reply keeps the agent's words
    if said != text or data.get("agent_id", "") != agent_id or earlier["kind"] != kinds[0]:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"{key!r} was already used on this ticket for a different {kinds[0].replace('_', ' ')}; "
            "use a new id for a new one",
        )


async def _acting_agent(
    request: Request, principal: Principal, agent_id: str | None
) -> tuple[AgentRef, Actor]:
    """The agent a staff request acts as (agents only as themselves), and how the timeline names them."""
    if principal.role is Role.AGENT:
        if agent_id not in (None, principal.subject_id):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "agents act only as themselves")
        agent_id = principal.subject_id
    elif agent_id is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "agent_id is required for this token")
    async with _pool(request).acquire() as conn:
        agent = await directory.get_agent(conn, agent_id)
    if agent is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown agent {agent_id!r}")
    ref = AgentRef(id=agent.id, name=agent.name, region=agent.region_id)
    return ref, Actor(type=ActorType.AGENT, id=agent.id, name=agent.name, region=agent.region_id)


@router.post("/{ticket_id}/replies", status_code=status.HTTP_201_CREATED, response_model=ReplyOut)
async def post_reply(
    ticket_id: TicketId,
    body: ReplyCreate,
    request: Request,
    principal: Principal = Depends(require(*STAFF)),
    idempotency_key: IdempotencyKey = None,
) -> ReplyOut:
    """An agent's reply to the customer, or an internal note (`internal: true`)."""
    await _open_ticket(request, principal, ticket_id)
    agent, actor = await _acting_agent(request, principal, body.agent_id)
    reply_id = idempotency_key or str(uuid.uuid4())
    if idempotency_key is not None:
        kinds = ["internal_note", "agent_reply"] if body.internal else ["agent_reply", "internal_note"]
        await _same_as_before(request, ticket_id, kinds, "reply_id", reply_id, body.body, agent.id)
    accepted = await _update(
        request,
        ticket_id,
        "reply",
        AgentReply(reply_id=reply_id, agent=agent, body=body.body, internal=body.internal, actor=actor),
        ReplyAccepted,
        update_id=f"reply-{reply_id}",
    )
    return ReplyOut(ticket_id=ticket_id, seq=accepted.seq, first_response=accepted.first_response)


async def _changed(request: Request, ticket_id: int) -> TicketOut:
    async with _pool(request).acquire() as conn:
        return TicketOut.from_row(await tickets.get_ticket(conn, ticket_id))


@router.post("/{ticket_id}/resolve", response_model=TicketOut)
async def resolve(
    ticket_id: TicketId, body: ResolveBody, request: Request, principal: Principal = Depends(require(*STAFF))
) -> TicketOut:
    await _open_ticket(request, principal, ticket_id)
    actor = await actor_for(request, principal)
    if body.article_id is not None:
        async with _pool(request).acquire() as conn:
            if await kb.get_article(conn, body.article_id) is None:
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"no article {body.article_id}")
    resolution = ResolveRequest(resolution=body.resolution, article_id=body.article_id, actor=actor)
    await _update(request, ticket_id, "resolve", resolution, TicketStatus)
    return await _changed(request, ticket_id)


@router.post("/{ticket_id}/solved-by-article", response_model=TicketOut)
async def solved_by_article(
    ticket_id: TicketId,
    body: SolvedBody,
    request: Request,
    principal: Principal = Depends(require(Role.CUSTOMER)),
) -> TicketOut:
    """ "This solved it": the customer closes the loop on a suggested article (self-service)."""
    await _open_ticket(request, principal, ticket_id)
    actor = await actor_for(request, principal)
    await _update(
        request,
        ticket_id,
        "solved_by_article",
        SelfServiceRequest(article_id=body.article_id, actor=actor),
        TicketStatus,
    )
    return await _changed(request, ticket_id)


@router.get("/{ticket_id}/links", response_model=list[TicketLink])
async def ticket_links(
    ticket_id: TicketId, request: Request, principal: Principal = Depends(require(*STAFF))
) -> list[TicketLink]:
    """Possible duplicates: open tickets of the same customer that say the same thing."""
    await _visible_ticket(request, principal, ticket_id)
    async with _pool(request).acquire() as conn:
        return [TicketLink(**link) for link in await problems.linked_tickets(conn, ticket_id)]


@router.post("/{ticket_id}/reopen", response_model=TicketOut)
async def reopen(
    ticket_id: TicketId, body: ReopenBody, request: Request, principal: Principal = Depends(require(*ANYONE))
) -> TicketOut:
    await _open_ticket(request, principal, ticket_id)
    actor = await actor_for(request, principal)
    await _update(request, ticket_id, "reopen", ReopenRequest(reason=body.reason, actor=actor), TicketStatus)
    return await _changed(request, ticket_id)


@router.post("/{ticket_id}/status", response_model=TicketOut)
async def set_status(
    ticket_id: TicketId, body: StatusBody, request: Request, principal: Principal = Depends(require(*STAFF))
) -> TicketOut:
    await _open_ticket(request, principal, ticket_id)
    actor = await actor_for(request, principal)
    change = StatusChange(status=body.status, reason=body.reason, actor=actor)
    await _update(request, ticket_id, "set_status", change, TicketStatus)
    return await _changed(request, ticket_id)


@router.post("/{ticket_id}/assign", response_model=TicketOut)
async def assign(
    ticket_id: TicketId, body: AssignBody, request: Request, principal: Principal = Depends(require(*STAFF))
) -> TicketOut:
    await _open_ticket(request, principal, ticket_id)
    actor = await actor_for(request, principal)
    await _update(
        request,
        ticket_id,
        "assign",
        AssignRequest(agent_id=body.agent_id, reason=body.reason, actor=actor),
        AgentRef,
    )
    return await _changed(request, ticket_id)


@router.post("/{ticket_id}/priority", response_model=TicketOut)
async def change_priority(
    ticket_id: TicketId, body: PriorityBody, request: Request, principal: Principal = Depends(require(*STAFF))
) -> TicketOut:
    await _open_ticket(request, principal, ticket_id)
    actor = await actor_for(request, principal)
    change = PriorityChange(priority=body.priority, reason=body.reason, actor=actor)
    await _update(request, ticket_id, "change_priority", change, list)
    return await _changed(request, ticket_id)


@router.post("/{ticket_id}/csat", response_model=TicketOut)
async def submit_csat(
    ticket_id: TicketId,
    body: CsatBody,
    request: Request,
    principal: Principal = Depends(require(Role.CUSTOMER, Role.INTEGRATION, Role.ADMIN)),
) -> TicketOut:
    row = await _open_ticket(request, principal, ticket_id)
    actor = await actor_for(request, principal)
    if principal.role is not Role.CUSTOMER:
        actor = Actor(type=ActorType.CUSTOMER, id=row["customer_id"], name=f"via {actor.id}")
    await _update(
        request,
        ticket_id,
        "submit_csat",
        CsatAnswer(score=body.score, comment=body.comment, actor=actor),
        Survey,
    )
    return await _changed(request, ticket_id)


@router.post("/{ticket_id}/handoff-note", response_model=TicketOut)
async def write_handoff_note(
    ticket_id: TicketId,
    body: HandoffNoteBody,
    request: Request,
    principal: Principal = Depends(require(*STAFF)),
) -> TicketOut:
    """What was tried, what comes next, what the customer was promised: read at the next handoff."""
    await _open_ticket(request, principal, ticket_id)
    agent, actor = await _acting_agent(request, principal, body.agent_id)
    note = HandoffNote(**body.model_dump(exclude={"agent_id"}))
    await _update(
        request, ticket_id, "write_handoff_note", HandoffNoteInput(agent=agent, note=note, actor=actor), int
    )
    return await _changed(request, ticket_id)


@router.post("/{ticket_id}/handoff/ack", response_model=Handoff)
async def acknowledge_handoff(
    ticket_id: TicketId, body: AgentOnly, request: Request, principal: Principal = Depends(require(*STAFF))
) -> Handoff:
    """The receiving engineer confirms they have the ticket; stops the handoff's escalation."""
    await _open_ticket(request, principal, ticket_id)
    agent, actor = await _acting_agent(request, principal, body.agent_id)
    return await _update(
        request, ticket_id, "acknowledge_handoff", HandoffAck(agent=agent, actor=actor), Handoff
    )


class EscalationAckBody(BaseModel):
    note: PlainText | None = Field(default=None, max_length=2_000)


@router.post("/{ticket_id}/escalation/ack", response_model=Escalation)
async def acknowledge_escalation(
    ticket_id: TicketId,
    body: EscalationAckBody,
    request: Request,
    principal: Principal = Depends(require(*STAFF)),
) -> Escalation:
    """Someone has the breach in hand: the chain stops, and a PagerDuty incident is acknowledged."""
    await _open_ticket(request, principal, ticket_id)
    actor = await actor_for(request, principal)
    return await _update(
        request, ticket_id, "acknowledge_escalation", EscalationAck(actor=actor, note=body.note), Escalation
    )
