"""A ticket's state, its timeline events, and the messages the API sends its workflow.

Everything here is built inside workflow code too, so no field has a clock or random default:
callers pass times and ids in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from domain.enums import ActorType, CustomerTier, Priority, TicketStatus
from domain.escalation import Escalation, EscalationPolicy
from domain.lifecycle import LifecyclePolicy
from domain.routing import LanguageMatch
from domain.sla import ClockCalendar, SlaClock, SlaClockState, SlaTarget, SlaTargets

MAX_BODY_CHARS = 20_000
MAX_SUBJECT_CHARS = 300


class Actor(BaseModel):
    type: ActorType
    id: str | None = None
    name: str | None = None
    region: str | None = None

    @classmethod
    def system(cls, region: str | None = None) -> Actor:
        return cls(type=ActorType.SYSTEM, id="meridian", name="Meridian", region=region)


class TimelineEvent(BaseModel):
    """One immutable line of a ticket's history. `seq` is dense per ticket, starting at 1."""

    seq: int
    at: datetime
    kind: str
    actor: Actor
    region: str | None = None
    internal: bool = False
    data: dict[str, Any] = Field(default_factory=dict)


class AgentRef(BaseModel):
    id: str
    name: str
    region: str
    shift_ends_at: datetime | None = Field(default=None, description="None: on call without end in sight")
    languages: list[str] = Field(
        default_factory=list, description="the languages the agent works in, native first; empty if unknown"
    )


class SlaView(BaseModel):
    """What the API shows of one SLA clock."""

    target: SlaTarget
    state: SlaClockState
    due_at: datetime | None
    target_minutes: float
    elapsed_minutes: float


class HandoffNote(BaseModel):
    """What the outgoing engineer tells the next one; filled in by them or left to the defaults."""

    what_was_tried: str | None = Field(default=None, max_length=5_000)
    next_action: str | None = Field(default=None, max_length=2_000)
    promised_update: str | None = Field(
        default=None, max_length=500, description="what the customer was promised"
    )


class Handoff(BaseModel):
    from_agent_id: str
    to_agent_id: str
    at: datetime
    ack_deadline: datetime
    acknowledged_at: datetime | None = None
    escalated: bool = False


class Survey(BaseModel):
    survey_id: str | None = None  # the signed link's survey; None for tickets from before links
    sent_at: datetime | None = None
    reminded_at: datetime | None = None
    answered_at: datetime | None = None
    expired_at: datetime | None = None
    score: int | None = None
    comment: str | None = None

    @property
    def finished(self) -> bool:
        return self.answered_at is not None or self.expired_at is not None


class TicketState(BaseModel):
    """All a ticket workflow knows; carried whole through continue-as-new."""

    ticket_id: int
    customer_id: str
    subject: str
    channel: str
    created_at: datetime
    status: TicketStatus = TicketStatus.NEW
    declared_priority: Priority | None = None
    language: str | None = None
    language_confidence: float | None = None
    module: str | None = None
    priority: Priority | None = None
    customer_tier: CustomerTier | None = None
    home_region: str | None = None
    region: str | None = None
    assignee: AgentRef | None = None
    queued_since: datetime | None = None
    policies: dict[Priority, SlaTargets] = Field(default_factory=dict)
    clocks: dict[SlaTarget, SlaClock] = Field(default_factory=dict)
    sla_calendar: ClockCalendar | None = None  # None: the clocks count every minute
    first_response_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    reopen_count: int = 0
    survey: Survey = Field(default_factory=Survey)
    handoff: Handoff | None = None
    handoff_note: HandoffNote | None = None
    last_customer_message: str | None = None
    language_match: LanguageMatch = LanguageMatch.FLUENT
    escalation_policies: dict[Priority, EscalationPolicy] = Field(default_factory=dict)
    escalation: Escalation | None = None
    machine_translation: bool = False
    suggested_articles: list[int] = Field(default_factory=list, description="shown to the customer at triage")
    next_seq: int = 1
    revision: int = 0
    recent_message_ids: list[str] = Field(default_factory=list)
    recent_replies: dict[str, int] = Field(default_factory=dict, description="reply id -> timeline seq")
    pending_events: list[TimelineEvent] = Field(default_factory=list)


class TicketSnapshot(BaseModel):
    """The read-model row the workflow projects into PostgreSQL (`tickets`)."""

    ticket_id: int
    revision: int
    status: TicketStatus
    subject: str
    customer_id: str
    channel: str
    language: str | None
    language_confidence: float | None
    module: str | None
    priority: Priority | None
    region: str | None
    assignee_id: str | None
    created_at: datetime
    updated_at: datetime
    first_response_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    reopen_count: int
    sla: list[SlaView]
    sla_state: SlaClockState | None
    csat_score: int | None
    csat_comment: str | None
    machine_translation: bool = False


class ProjectionBatch(BaseModel):
    snapshot: TicketSnapshot
    events: list[TimelineEvent]


# --- What the API sends a ticket workflow -------------------------------------------------


class TicketInput(BaseModel):
    ticket_id: int
    customer_id: str
    subject: str = Field(max_length=MAX_SUBJECT_CHARS)
    body: str = Field(max_length=MAX_BODY_CHARS)
    channel: str = "api"
    declared_priority: Priority | None = None
    created_at: datetime
    lifecycle: LifecyclePolicy = Field(default_factory=LifecyclePolicy)
    state: TicketState | None = None


class CustomerMessage(BaseModel):
    message_id: str
    body: str = Field(max_length=MAX_BODY_CHARS)
    actor: Actor


class AgentReply(BaseModel):
    reply_id: str
    agent: AgentRef
    body: str = Field(min_length=1, max_length=MAX_BODY_CHARS)
    internal: bool = False
    actor: Actor


class ReplyAccepted(BaseModel):
    seq: int
    first_response: bool


class StatusChange(BaseModel):
    status: Literal[TicketStatus.OPEN, TicketStatus.PENDING_CUSTOMER]
    reason: str | None = None
    actor: Actor


class AssignRequest(BaseModel):
    agent_id: str
    reason: str | None = None
    actor: Actor


class PriorityChange(BaseModel):
    priority: Priority
    reason: str | None = None
    actor: Actor


class ResolveRequest(BaseModel):
    resolution: str | None = Field(default=None, max_length=MAX_BODY_CHARS)
    article_id: int | None = Field(
        default=None, ge=1, description="the knowledge-base article that answers it"
    )
    actor: Actor


class SelfServiceRequest(BaseModel):
    """The customer says a suggested article solved it: resolved as self-service (deflection)."""

    article_id: int = Field(ge=1)
    actor: Actor


class ReopenRequest(BaseModel):
    reason: str | None = None
    actor: Actor


class HandoffNoteInput(BaseModel):
    agent: AgentRef
    note: HandoffNote
    actor: Actor


class HandoffAck(BaseModel):
    agent: AgentRef
    actor: Actor


class EscalationAck(BaseModel):
    actor: Actor
    note: str | None = Field(default=None, max_length=2_000)


class CsatAnswer(BaseModel):
    score: int = Field(ge=1, le=5)
    comment: str | None = Field(default=None, max_length=5_000)
    reason: str | None = Field(default=None, max_length=200)
    answers: dict[str, str] = Field(default_factory=dict)
    actor: Actor


class AssignmentOffer(BaseModel):
    """Sent by the dispatcher after it claimed an agent for a queued ticket."""

    offer_id: str
    ticket_id: int
    agent: AgentRef
    machine_translation: bool = False


class TicketOutcome(BaseModel):
    ticket_id: int
    status: TicketStatus
    csat_score: int | None


OFFER_SIGNAL = "offer_assignment"


def ticket_workflow_id(ticket_id: int) -> str:
    return f"ticket-{ticket_id}"
