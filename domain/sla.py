"""SLA clocks: budgets that run, pause, stop and move, measured in calendar time.

The clock stores how much budget was consumed before the current running stretch, so a pause
or a retarget never needs the history of the ticket to recompute where the clock stands.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel

from domain.enums import Priority


class SlaTarget(StrEnum):
    FIRST_RESPONSE = "first_response"
    RESOLUTION = "resolution"


class SlaClockState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    MET = "met"
    WARNING = "warning"
    BREACHED = "breached"


class SlaTargets(BaseModel):
    """One row of the SLA policy table (`sla_policies`)."""

    priority: Priority
    first_response: timedelta
    resolution: timedelta

    def budget(self, target: SlaTarget) -> timedelta:
        return self.first_response if target is SlaTarget.FIRST_RESPONSE else self.resolution


class SlaClock(BaseModel):
    target: SlaTarget
    budget: timedelta
    consumed: timedelta = timedelta(0)
    running_since: datetime | None = None
    stopped_at: datetime | None = None
    warning_sent: bool = False
    breach_sent: bool = False

    @classmethod
    def start(cls, target: SlaTarget, budget: timedelta, at: datetime) -> SlaClock:
        return cls(target=target, budget=budget, running_since=at)

    @property
    def is_running(self) -> bool:
        return self.running_since is not None

    @property
    def is_stopped(self) -> bool:
        return self.stopped_at is not None

    def elapsed(self, now: datetime) -> timedelta:
        if self.running_since is None:
            return self.consumed
        return self.consumed + max(now - self.running_since, timedelta(0))

    def due_at(self) -> datetime | None:
        """When the budget runs out if the clock keeps running; None while paused or stopped."""
        if self.running_since is None:
            return None
        return self.running_since + (self.budget - self.consumed)

    def warning_at(self, ratio: float) -> datetime | None:
        if self.running_since is None:
            return None
        return self.running_since + (self.budget * ratio - self.consumed)

    def state(self, now: datetime, ratio: float) -> SlaClockState:
        elapsed = self.elapsed(now)
        if elapsed >= self.budget:
            return SlaClockState.BREACHED
        if self.is_stopped:
            return SlaClockState.MET
        if self.running_since is None:
            return SlaClockState.PAUSED
        if elapsed >= self.budget * ratio:
            return SlaClockState.WARNING
        return SlaClockState.RUNNING

    def pause(self, now: datetime) -> None:
        if self.running_since is not None:
            self.consumed = self.elapsed(now)
            self.running_since = None

    def resume(self, now: datetime) -> None:
        if self.running_since is None and not self.is_stopped:
            self.running_since = now

    def stop(self, now: datetime) -> None:
        if not self.is_stopped:
            self.pause(now)
            self.stopped_at = now

    def restart(self, now: datetime) -> None:
        """Continue a stopped clock (a reopened ticket keeps the time it already used)."""
        if self.is_stopped:
            self.stopped_at = None
            self.running_since = now

    def retarget(self, budget: timedelta, now: datetime, ratio: float) -> None:
        """Move the deadline; a warning or breach that no longer holds may be raised again later."""
        self.budget = budget
        elapsed = self.elapsed(now)
        if elapsed < budget:
            self.breach_sent = False
        if elapsed < budget * ratio:
            self.warning_sent = False


def worst_state(states: list[SlaClockState]) -> SlaClockState:
    order = [
        SlaClockState.BREACHED,
        SlaClockState.WARNING,
        SlaClockState.RUNNING,
        SlaClockState.PAUSED,
        SlaClockState.MET,
    ]
    for candidate in order:
        if candidate in states:
            return candidate
    return SlaClockState.MET
