"""Connecting to Temporal, registering what Meridian needs there, and starting ticket workflows."""

from __future__ import annotations

from datetime import timedelta

import structlog
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.runtime import Runtime

from domain.tickets import TicketInput, ticket_workflow_id
from meridian.settings import Settings
from workflows import search_attributes as sa

log = structlog.get_logger(__name__)

HOUSEKEEPING_SCHEDULE_ID = "meridian-housekeeping"
REPEAT_ISSUES_SCHEDULE_ID = "meridian-repeat-issues"
QUALITY_ALERTS_SCHEDULE_ID = "meridian-quality-alerts"


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    return await Client.connect(
        settings.temporal_address or f"127.0.0.1:{settings.temporal_port}",
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Register Meridian's search attributes if the cluster lacks them (the dev server gets them as flags)."""
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = {
        key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        for key in sa.ALL
        if key.name not in existing.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
        log.info("search attributes registered", names=sorted(missing))


async def ensure_schedules(client: Client, settings: Settings) -> None:
    """The housekeeping sweep, the repeat-issue finder and the quality alerts, created or brought up
    to date with the settings (a changed interval or rule takes effect when the worker restarts)."""
    from workflows.housekeeping import HousekeepingWorkflow
    from workflows.problems import RepeatIssuesWorkflow
    from workflows.quality import QualityAlertsWorkflow

    def every(interval: timedelta, action: ScheduleActionStartWorkflow) -> Schedule:
        return Schedule(
            action=action,
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=interval)]),
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        )

    schedules = {
        HOUSEKEEPING_SCHEDULE_ID: every(
            settings.dispatch_interval,
            ScheduleActionStartWorkflow(
                HousekeepingWorkflow.run,
                id="meridian-housekeeping-run",
                task_queue=settings.task_queue,
                execution_timeout=timedelta(minutes=5),
            ),
        ),
        REPEAT_ISSUES_SCHEDULE_ID: every(
            settings.repeat_issue_every,
            ScheduleActionStartWorkflow(
                RepeatIssuesWorkflow.run,
                settings.repeat_issue_rules(),
                id="meridian-repeat-issues-run",
                task_queue=settings.task_queue,
                execution_timeout=timedelta(minutes=30),
            ),
        ),
        QUALITY_ALERTS_SCHEDULE_ID: every(
            settings.quality_check_every,
            ScheduleActionStartWorkflow(
                QualityAlertsWorkflow.run,
                id="meridian-quality-alerts-run",
                task_queue=settings.task_queue,
                execution_timeout=timedelta(minutes=10),
            ),
        ),
    }
    for schedule_id, schedule in schedules.items():
        try:
            await client.create_schedule(schedule_id, schedule)
            log.info("schedule created", schedule_id=schedule_id)
        except ScheduleAlreadyRunningError:
            await client.get_schedule_handle(schedule_id).update(
                lambda _current, wanted=schedule: ScheduleUpdate(schedule=wanted)
            )


async def start_ticket_workflow(client: Client, task_queue: str, ticket: TicketInput) -> WorkflowHandle:
    """Start the ticket's workflow; one that runs or already ran is left as it is."""
    from workflows.ticket import TicketWorkflow

    try:
        return await client.start_workflow(
            TicketWorkflow.run,
            ticket,
            id=ticket_workflow_id(ticket.ticket_id),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        # The ticket's workflow ran and closed; a ticket id is never given a second life.
        return client.get_workflow_handle(ticket_workflow_id(ticket.ticket_id))
