"""Runs every minute from a Temporal Schedule: what no single ticket's event would trigger.

Queued tickets wait for capacity; most capacity frees when another ticket is resolved or
reassigned, and that path dispatches at once. Capacity that appears with the clock (a shift
starting) has no such event, so this sweep catches it; it also resends assignment offers
whose signal was lost and starts workflows for tickets whose start failed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.assignment import AssignmentActivities
    from activities.embeddings import EmbeddingActivities
    from activities.intake import IntakeActivities
    from activities.projection import ProjectionActivities


CHORE_RETRY = RetryPolicy(maximum_attempts=3)
EMBEDDING_SWEEP = "embedding-sweep"  # workflow.patched: knowledge-base translations left unindexed
KPI_REFRESH = "kpi-rollup-refresh"  # workflow.patched: the daily KPI rollups follow changed tickets
# workflow.patched: the long chores heartbeat, so an attempt lost with its worker (or with Temporal)
# is retried after CHORE_HEARTBEAT instead of holding the whole run, and the schedule skipping every
# run after it, for minutes.
CHORE_HEARTBEATS = "chore-heartbeats"
CHORE_HEARTBEAT = timedelta(seconds=30)
SWEEP_BATCH = 20
# Zone-days one run may rebuild: a day's changes touch a few; a new time zone's year is spread
# over runs instead of holding one activity for minutes.
KPI_REFRESH_DAYS = 120


class HousekeepingReport(BaseModel):
    offered: int
    resent: int
    started: int
    embedded: int = 0
    kpi_days: int = 0


@workflow.defn(name="HousekeepingWorkflow")
class HousekeepingWorkflow:
    @workflow.run
    async def run(self) -> HousekeepingReport:
        # Each chore gets a few tries; one failing must not keep the other from running.
        dispatched = await workflow.execute_activity_method(
            AssignmentActivities.dispatch_queue,
            workflow.now(),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=CHORE_RETRY,
        )
        try:
            started = await workflow.execute_activity_method(
                IntakeActivities.start_unstarted_tickets,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=CHORE_RETRY,
            )
        except ActivityError:
            workflow.logger.exception("starting lost tickets failed; the next run tries again")
            started = 0
        # Options of the long chores (keyword arguments for execute_activity_method).
        beats = {"heartbeat_timeout": CHORE_HEARTBEAT} if workflow.patched(CHORE_HEARTBEATS) else {}
        embedded = kpi_days = 0
        if workflow.patched(EMBEDDING_SWEEP):
            embedded = await _long_chore(
                "embedding sweep", EmbeddingActivities.embed_pending_translations, SWEEP_BATCH, 3, beats
            )
        if workflow.patched(KPI_REFRESH):
            kpi_days = await _long_chore(
                "KPI rollup refresh", ProjectionActivities.refresh_kpi_rollups, KPI_REFRESH_DAYS, 5, beats
            )
        return HousekeepingReport(
            offered=dispatched.offered,
            resent=dispatched.resent,
            started=started,
            embedded=embedded,
            kpi_days=kpi_days,
        )


async def _long_chore(name: str, activity: Any, arg: int, minutes: int, options: dict[str, Any]) -> int:
    """A chore whose failure only waits for the next run (which tries again): its count, or 0."""
    try:
        return await workflow.execute_activity_method(
            activity,
            arg,
            start_to_close_timeout=timedelta(minutes=minutes),
            retry_policy=CHORE_RETRY,
            **options,
        )
    except ActivityError:
        workflow.logger.exception("%s failed; the next run tries again", name)
        return 0
