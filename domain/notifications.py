"""Outbound notifications: what the workflow asks to tell whom."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class Notification(BaseModel):
    id: str = Field(description="workflow.uuid4() of the sender, so retries deliver once")
    ticket_id: int | None = Field(description="None for notifications about no single ticket")
    kind: str
    recipient_type: str
    recipient_id: str | None = None
    at: datetime
    data: dict[str, Any] = Field(default_factory=dict)
