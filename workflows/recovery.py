"""An unhappy customer (CSAT of 2 or less) gets a recovery task for the on-shift team lead of the
ticket's region. It has its own deadline: when it passes with the task still open, the regional
manager is told. Started by the ticket as a child that outlives it (the ticket closes on its
own schedule; the recovery is a person's job and may take longer).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.surveys import RecoveryRequest, SurveyActivities

RECOVERY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=5))
# After the manager is told, the task stays open for them this long before the workflow ends.
MANAGER_GRACE = timedelta(days=7)


def recovery_workflow_id(ticket_id: int) -> str:
    return f"csat-recovery-{ticket_id}"


@workflow.defn(name="RecoveryWorkflow")
class RecoveryWorkflow:
    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self, request: RecoveryRequest) -> str:
        await workflow.execute_activity_method(
            SurveyActivities.open_recovery,
            request,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RECOVERY_RETRY,
        )
        if await self._done_by(request.due_at - workflow.now()):
            return "done"
        await workflow.execute_activity_method(
            SurveyActivities.recovery_overdue,
            request.model_copy(update={"at": workflow.now()}),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RECOVERY_RETRY,
        )
        return "done late" if await self._done_by(MANAGER_GRACE) else "overdue"

    async def _done_by(self, within: timedelta) -> bool:
        try:
            await workflow.wait_condition(lambda: self.done, timeout=max(within, timedelta(seconds=1)))
        except TimeoutError:
            return False
        return True

    @workflow.signal(name="recovered")
    def recovered(self) -> None:
        """The lead (or manager) closed the task through the API, which recorded who and how."""
        self.done = True
