"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.auth import Scope
from domain.directory import IDENT
from domain.enums import Priority, Role, TicketStatus
from domain.sla import SlaTarget
from domain.text import PlainText
from domain.tickets import MAX_BODY_CHARS, MAX_SUBJECT_CHARS, SlaView, TimelineEvent


class TicketCreate(BaseModel):
    subject: PlainText = Field(min_length=1, max_length=MAX_SUBJECT_CHARS)
    body: PlainText = Field(min_length=1, max_length=MAX_BODY_CHARS)
    customer_id: str | None = Field(
        default=None, pattern=IDENT, description="required unless a customer files it"
    )
    channel: Literal["api", "email", "web", "chat", "phone"] = "api"
    priority: Priority | None = Field(default=None, description="the priority the customer declares")


class SlaOut(BaseModel):
    state: str
    due_at: datetime | None
    target_minutes: float
    elapsed_minutes: float


class TicketOut(BaseModel):
    id: int
    status: TicketStatus
    subject: str
    customer_id: str
    channel: str
    language: str | None
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
    sla: dict[SlaTarget, SlaOut]
    sla_state: str | None
    csat_score: int | None
    csat_comment: str | None
    machine_translation: bool = Field(description="the assignee does not speak the ticket's language")

    @classmethod
    def from_row(cls, row: Any) -> TicketOut:
        data = dict(row)
        views = [SlaView(**v) for v in data.pop("sla") or []]
        return cls(
            **{k: v for k, v in data.items() if k in cls.model_fields},
            sla={v.target: SlaOut(**v.model_dump(exclude={"target"})) for v in views},
        )


class TicketPage(BaseModel):
    items: list[TicketOut]
    next_cursor: str | None


class Timeline(BaseModel):
    ticket_id: int
    events: list[TimelineEvent]


class MessageCreate(BaseModel):
    body: PlainText = Field(min_length=1, max_length=MAX_BODY_CHARS)
    message_id: PlainText | None = Field(
        default=None, max_length=100, description="your id, to make retries safe"
    )


class MessageAccepted(BaseModel):
    ticket_id: int
    message_id: str


class ReplyCreate(BaseModel):
    body: PlainText = Field(min_length=1, max_length=MAX_BODY_CHARS)
    internal: bool = Field(default=False, description="an internal note, never shown to the customer")
    agent_id: str | None = Field(
        default=None, pattern=IDENT, description="required for admin/integration tokens"
    )


class ReplyOut(BaseModel):
    ticket_id: int
    seq: int
    first_response: bool


class ResolveBody(BaseModel):
    resolution: PlainText | None = Field(default=None, max_length=MAX_BODY_CHARS)
    article_id: int | None = Field(
        default=None,
        ge=1,
        le=2**63 - 1,
        description="the article that answers it; without one, a draft is made",
    )


class TicketLink(BaseModel):
    ticket_id: int
    kind: str
    similarity: float
    subject: str
    status: str


class SolvedBody(BaseModel):
    article_id: int = Field(ge=1, le=2**63 - 1, description="one of the articles suggested on the ticket")


class ReopenBody(BaseModel):
    reason: PlainText | None = Field(default=None, max_length=2_000)


class StatusBody(BaseModel):
    status: Literal[TicketStatus.OPEN, TicketStatus.PENDING_CUSTOMER]
    reason: PlainText | None = Field(default=None, max_length=2_000)


class AssignBody(BaseModel):
    agent_id: str = Field(pattern=IDENT)
    reason: PlainText | None = Field(default=None, max_length=2_000)


class PriorityBody(BaseModel):
    priority: Priority
    reason: PlainText | None = Field(default=None, max_length=2_000)


class AgentOnly(BaseModel):
    agent_id: str | None = Field(
        default=None, pattern=IDENT, description="required for admin/integration tokens"
    )


class HandoffNoteBody(AgentOnly):
    what_was_tried: PlainText | None = Field(default=None, max_length=5_000)
    next_action: PlainText | None = Field(default=None, max_length=2_000)
    promised_update: PlainText | None = Field(default=None, max_length=500)


class CsatBody(BaseModel):
    score: int = Field(ge=1, le=5, strict=True, description="a whole number from 1 to 5")
    comment: PlainText | None = Field(default=None, max_length=5_000)


class TokenCreate(BaseModel):
    role: Role
    subject_id: str | None = Field(default=None, pattern=IDENT)
    label: PlainText | None = Field(default=None, max_length=200)
    scopes: list[Scope] = Field(
        default_factory=list,
        max_length=len(Scope),
        description="what an integration token may do (required for integration tokens, only for them)",
    )


class TokenOut(BaseModel):
    token: str = Field(description="shown once; store it")
    role: Role
    subject_id: str | None
    scopes: list[Scope] = []
