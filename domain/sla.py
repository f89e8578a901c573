"""SLA clocks: budgets that run, pause, stop and move, in calendar or business time.

The clock stores how much budget was consumed before the current running stretch, so a pause
or a retarget never needs the history of the ticket to recompute where the clock stands.

Business time comes from a `ClockCalendar`: the open windows (UTC) of the policy's calendar
over a horizon, computed by an activity from `domain.calendars` and carried in the workflow's
state, so the workflow itself never reads time-zone data. Without one, every minute counts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, model_validator

from domain.enums import Priority


class SlaTarget(StrEnum):
    FIRST_RESPONSE = "first_response"
    RESOLUTION = "resolution"
    NEXT_RESPONSE = "next_response"  # to each customer message after the first response
    PERIODIC_UPDATE = "periodic_update"  # keep the customer informed every N hours while open


class SlaClockState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    MET = "met"
    WARNING = "warning"
    BREACHED = "breached"


class SlaTargets(BaseModel):
    """One row of the SLA policy table (`sla_policies`, per priority and customer tier)."""

    priority: Priority
    first_response: timedelta
    resolution: timedelta
    next_response: timedelta | None = None
    periodic_update: timedelta | None = None
    calendar_id: str | None = None  # the calendar the clocks run on; None: every minute counts

    def budget(self, target: SlaTarget) -> timedelta | None:
        return {
            SlaTarget.FIRST_RESPONSE: self.first_response,
            SlaTarget.RESOLUTION: self.resolution,
            SlaTarget.NEXT_RESPONSE: self.next_response,
            SlaTarget.PERIODIC_UPDATE: self.periodic_update,
        }[target]


class ClockCalendar(BaseModel):
    """Open windows of a business calendar between `start` and `end` (UTC, sorted, merged)."""

    calendar_id: str
    start: datetime
    end: datetime
    windows: list[tuple[datetime, datetime]]

    def between(self, a: datetime, b: datetime) -> timedelta:
        total = timedelta(0)
        for w_start, w_end in self.windows:
            lo, hi = max(w_start, a), min(w_end, b)
            if hi > lo:
                total += hi - lo
        return total

    def add(self, start: datetime, amount: timedelta) -> datetime | None:
        """When `amount` of open time has passed after `start`; None beyond the horizon."""
        if amount <= timedelta(0):
            return start
        remaining = amount
        for w_start, w_end in self.windows:
            lo = max(w_start, start)
            if w_end <= lo:
                continue
            if w_end - lo >= remaining:
                return lo + remaining
            remaining -= w_end - lo
        return None


class SlaClock(BaseModel):
    target: SlaTarget
    budget: timedelta
    consumed: timedelta = timedelta(0)
    running_since: datetime | None = None
    stopped_at: datetime | None = None
    warning_sent: bool = False  # before several thresholds: whether the one warning went out
    warnings_sent: int = 0  # how many of the (ascending) warning thresholds have been announced
    breach_sent: bool = False

    @model_validator(mode="after")
    def _count_old_warning(self) -> SlaClock:
        if self.warning_sent and self.warnings_sent == 0:
            self.warnings_sent = 1
        return self

    def next_warning_at(self, ratios: list[float], calendar: ClockCalendar | None = None) -> datetime | None:
        """When the next unannounced warning threshold is crossed; None when all are announced."""
        if self.warnings_sent >= len(ratios):
            return None
        return self.warning_at(ratios[self.warnings_sent], calendar)

    @classmethod
    def start(cls, target: SlaTarget, budget: timedelta, at: datetime) -> SlaClock:
        return cls(target=target, budget=budget, running_since=at)

    @property
    def is_running(self) -> bool:
        return self.running_since is not None

    @property
    def is_stopped(self) -> bool:
        return self.stopped_at is not None

    def elapsed(self, now: datetime, calendar: ClockCalendar | None = None) -> timedelta:
        if self.running_since is None:
            return self.consumed
        if calendar is None:
            return self.consumed + max(now - self.running_since, timedelta(0))
        return self.consumed + calendar.between(self.running_since, now)

    def _when_consumed(self, amount: timedelta, calendar: ClockCalendar | None) -> datetime | None:
        if self.running_since is None:
            return None
        if calendar is None:
            return self.running_since + (amount - self.consumed)
        return calendar.add(self.running_since, amount - self.consumed)

    def due_at(self, calendar: ClockCalendar | None = None) -> datetime | None:
        """When the budget runs out if the clock keeps running; None while paused or stopped
        (or, in business time, beyond the calendar's horizon)."""
        return self._when_consumed(self.budget, calendar)

    def warning_at(self, ratio: float, calendar: ClockCalendar | None = None) -> datetime | None:
        return self._when_consumed(self.budget * ratio, calendar)

    def state(self, now: datetime, ratio: float, calendar: ClockCalendar | None = None) -> SlaClockState:
        elapsed = self.elapsed(now, calendar)
        if elapsed >= self.budget:
            return SlaClockState.BREACHED
        if self.is_stopped:
            return SlaClockState.MET
        if self.running_since is None:
            return SlaClockState.PAUSED
        if elapsed >= self.budget * ratio:
            return SlaClockState.WARNING
        return SlaClockState.RUNNING

    def pause(self, now: datetime, calendar: ClockCalendar | None = None) -> None:
        if self.running_since is not None:
            self.consumed = self.elapsed(now, calendar)
            self.running_since = None

    def resume(self, now: datetime) -> None:
        if self.running_since is None and not self.is_stopped:
            self.running_since = now

    def stop(self, now: datetime, calendar: ClockCalendar | None = None) -> None:
        if not self.is_stopped:
            self.pause(now, calendar)
            self.stopped_at = now

    def restart(self, now: datetime) -> None:
        """Continue a stopped clock (a reopened ticket keeps the time it already used)."""
        if self.is_stopped:
            self.stopped_at = None
            self.running_since = now

    def reset(self, now: datetime) -> None:
        """Start a fresh budget (a new customer message, a new update period)."""
        self.consumed, self.running_since, self.stopped_at = timedelta(0), now, None
        self.warning_sent = self.breach_sent = False
        self.warnings_sent = 0

    def retarget(
        self, budget: timedelta, now: datetime, ratios: list[float], calendar: ClockCalendar | None = None
    ) -> None:
        """Move the deadline; a warning or breach that no longer holds may be raised again later."""
        self.budget = budget
        elapsed = self.elapsed(now, calendar)
        if elapsed < budget:
            self.breach_sent = False
        still_true = sum(1 for ratio in ratios if elapsed >= budget * ratio)
        announced = max(self.warnings_sent, 1 if self.warning_sent else 0)
        self.warnings_sent = min(announced, still_true)
        self.warning_sent = self.warnings_sent > 0


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
