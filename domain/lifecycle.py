"""Timings of a ticket's life after resolution, handed to each workflow at start so they stay fixed for it."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, Field


class LifecyclePolicy(BaseModel):
    csat_delay: timedelta = timedelta(hours=1)
    csat_reminder_after: timedelta = timedelta(hours=24)
    csat_expires_after: timedelta = timedelta(hours=72)
    reopen_window: timedelta = timedelta(days=3)
    sla_warning_ratio: float = Field(default=0.75, gt=0, lt=1)  # tickets started before several thresholds
    sla_warning_ratios: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: [0.5, 0.75, 0.9], min_length=1, description="warn at each share of a target"
    )
    # Shift-end handoff: how long before the shift ends, how long the receiver has to acknowledge,
    # and whether tickets waiting on the customer move too or stay with their owner.
    handoff_lead: timedelta = timedelta(minutes=15)
    handoff_ack_timeout: timedelta = timedelta(minutes=15)
    pending_customer_handoff: Literal["move", "stay"] = "move"
    # Routing fallback: how long a queued ticket waits for a native speaker, then for a fluent
    # one, before any skilled agent takes it with machine translation.
    native_wait: timedelta = timedelta(minutes=5)
    fluent_wait: timedelta = timedelta(minutes=10)
    # A region's notifications wait this long for its regional worker, then go through the central one.
    regional_pickup_timeout: timedelta = timedelta(minutes=2)
    # A ticket resolved without a linked article drafts one for review.
    draft_articles: bool = True
    # A CSAT of 2 or less opens a recovery task for the region's team lead, due after this.
    csat_recovery: bool = True
    recovery_deadline: timedelta = timedelta(hours=24)
