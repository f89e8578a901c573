"""Runs from a Temporal Schedule every few minutes: evaluates the quality rules stored in
PostgreSQL and tells the right lead when an alert opens or resolves."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.quality import QualityActivities

QUALITY_RETRY = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=2))


class QualityReport(BaseModel):
    opened: list[str]
    resolved: list[str]


@workflow.defn(name="QualityAlertsWorkflow")
class QualityAlertsWorkflow:
    @workflow.run
    async def run(self) -> QualityReport:
        changes = await workflow.execute_activity_method(
            QualityActivities.evaluate_quality_rules,
            workflow.now(),
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=QUALITY_RETRY,
        )
        for change in changes:
            try:
                await workflow.execute_activity_method(
                    QualityActivities.notify_quality_alert,
                    change,
                    start_to_close_timeout=timedelta(seconds=60),
                    retry_policy=QUALITY_RETRY,
                )
            except ActivityError:
                workflow.logger.exception("telling the lead about %s failed", change.rule_id)
        return QualityReport(
            opened=[c.rule_id for c in changes if c.change == "opened"],
            resolved=[c.rule_id for c in changes if c.change == "resolved"],
        )
