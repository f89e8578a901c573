"""Escalation recipients: resolving a level's targets to people, with their local time."""

from __future__ import annotations

from datetime import datetime

import asyncpg
from pydantic import BaseModel
from temporalio import activity

from db import escalations
from domain.escalation import EscalationTarget, Recipient


class RecipientsRequest(BaseModel):
    region: str | None
    assignee_id: str | None
    targets: list[EscalationTarget]
    at: datetime


class EscalationActivities:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    @activity.defn(name="escalation_recipients")
    async def escalation_recipients(self, request: RecipientsRequest) -> list[Recipient]:
        async with self.pool.acquire() as conn:
            return await escalations.recipients(conn, **request.model_dump())
