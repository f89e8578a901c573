"""Escalation chains: who is told, how, and when, while an SLA breach goes unacknowledged."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from enum import StrEnum

from pydantic import BaseModel, Field

from domain.enums import Priority
from domain.pages import PageChannel
from domain.text import LocalTime


class EscalationTarget(StrEnum):
    ASSIGNEE = "assignee"
    TEAM_LEAD = "team_lead"  # an on-shift agent with the `lead` role in the ticket's region
    REGIONAL_MANAGER = "regional_manager"  # an agent with the `manager` role in the ticket's region
    SRE_ONCALL = "sre_oncall"  # an on-shift agent with the `sre` role, any region


class EscalationLevel(BaseModel):
    after_minutes: int = Field(ge=0, description="from the start of the chain")
    targets: list[EscalationTarget] = Field(min_length=1)
    channels: list[PageChannel] = Field(min_length=1)
    repeat: int = Field(default=0, ge=0, le=10)
    repeat_every_minutes: int = Field(default=15, ge=1)

    def firings(self, started_at: datetime) -> list[datetime]:
        first = started_at + timedelta(minutes=self.after_minutes)
        return [first + timedelta(minutes=self.repeat_every_minutes * n) for n in range(self.repeat + 1)]


class EscalationPolicy(BaseModel):
    id: str
    name: str
    priorities: list[Priority]
    levels: list[EscalationLevel]
    quiet_priorities: list[Priority] = Field(default_factory=lambda: [Priority.P3, Priority.P4])
    quiet_start: LocalTime = time(22)
    quiet_end: LocalTime = time(7)

    def schedule(self, started_at: datetime) -> list[tuple[int, datetime]]:
        """(level index, instant) of every page the chain would send, in order."""
        fired = [(i, at) for i, level in enumerate(self.levels) for at in level.firings(started_at)]
        return sorted(fired, key=lambda pair: (pair[1], pair[0]))

    def quiet_for(self, priority: Priority, local: time) -> bool:
        if priority not in self.quiet_priorities:
            return False
        if self.quiet_start <= self.quiet_end:
            return self.quiet_start <= local < self.quiet_end
        return local >= self.quiet_start or local < self.quiet_end


class Recipient(BaseModel):
    target: EscalationTarget
    agent_id: str
    name: str
    email: str | None
    local_time: LocalTime


class Escalation(BaseModel):
    """A running chain in a ticket's state."""

    policy: EscalationPolicy
    trigger: str
    started_at: datetime
    fired: int = 0  # how many entries of policy.schedule() have been sent
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    paged_pagerduty: bool = False  # so an acknowledgement or resolution is sent there too

    def next_due(self) -> datetime | None:
        if self.acknowledged_at is not None:
            return None
        schedule = self.policy.schedule(self.started_at)
        return schedule[self.fired][1] if self.fired < len(schedule) else None
