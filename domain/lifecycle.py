"""Timings of a ticket's life after resolution, handed to each workflow at start so they stay fixed for it."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field


class LifecyclePolicy(BaseModel):
    csat_delay: timedelta = timedelta(hours=1)
    csat_reminder_after: timedelta = timedelta(hours=24)
    csat_expires_after: timedelta = timedelta(hours=72)
    reopen_window: timedelta = timedelta(days=3)
    sla_warning_ratio: float = Field(default=0.75, gt=0, lt=1)
