"""Runs from a Temporal Schedule (hourly by default): finds repeat issues among recently resolved
tickets and files each new problem in the engineering tracker.

Problems that could not be filed earlier (the tracker was down) are retried on every run, so a
tracker outage delays the issue but never loses it.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.problems import FindRepeatsRequest, ProblemActivities
    from domain.problems import RepeatIssueRules

FILE_RETRY = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=5))


class RepeatIssuesReport(BaseModel):
    created: list[int]
    filed: dict[int, str | None]  # problem id -> tracker key (None: no tracker configured)
    failed: list[int]


@workflow.defn(name="RepeatIssuesWorkflow")
class RepeatIssuesWorkflow:
    @workflow.run
    async def run(self, rules: RepeatIssueRules) -> RepeatIssuesReport:
        created = await workflow.execute_activity_method(
            ProblemActivities.find_repeat_issues,
            FindRepeatsRequest(now=workflow.now(), rules=rules),
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
        unsent = await workflow.execute_activity_method(
            ProblemActivities.unsent_problems,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
        report = RepeatIssuesReport(created=created, filed={}, failed=[])
        for problem_id in unsent:
            try:
                filed = await workflow.execute_activity_method(
                    ProblemActivities.file_problem,
                    problem_id,
                    start_to_close_timeout=timedelta(seconds=60),
                    retry_policy=FILE_RETRY,
                )
                report.filed[problem_id] = filed.tracker_key
            except ActivityError:
                workflow.logger.exception("filing problem %s failed; the next run tries again", problem_id)
                report.failed.append(problem_id)
        return report
