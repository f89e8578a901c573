"""Pages: an urgent message to a person or a channel, over webhook, Slack, PagerDuty or email."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field


class PageChannel(StrEnum):
    WEBHOOK = "webhook"
    SLACK = "slack"
    PAGERDUTY = "pagerduty"
    EMAIL = "email"


class PageAction(StrEnum):
    TRIGGER = "trigger"
    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"


class Page(BaseModel):
    """Built inside workflows, so nothing here defaults from a clock or a random source."""

    id: str = Field(description="workflow.uuid4() of the sender: delivery is idempotent on it")
    ticket_id: int
    channel: PageChannel
    action: PageAction = PageAction.TRIGGER
    recipient_id: str | None = Field(default=None, description="an agent id, or None for a channel-wide page")
    recipient_email: str | None = None
    summary: str = Field(description='one line, e.g. "P1 ticket 42 breached first response (APAC)"')
    severity: Literal["critical", "error", "warning", "info"] = "error"
    at: datetime
    details: dict[str, Any] = Field(default_factory=dict)
