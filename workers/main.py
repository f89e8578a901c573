"""The Meridian worker: runs ticket workflows and every activity on one task queue.

`build_worker` is shared by the `meridian worker` command and the tests, so both run the
same registrations.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import py_compile
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import structlog
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from activities.assignment import AssignmentActivities
from activities.calendars import CalendarActivities
from activities.channels import ChannelActivities, ChannelSettings
from activities.embeddings import EmbeddingActivities, EmbeddingSettings, embedder_from_settings
from activities.escalations import EscalationActivities
from activities.intake import IntakeActivities
from activities.knowledge import KnowledgeActivities, KnowledgeSettings
from activities.language import LanguageDetectorService
from activities.notifications import NotificationActivities
from activities.problems import ProblemActivities, TrackerSettings
from activities.projection import ProjectionActivities
from activities.quality import QualityActivities
from activities.surveys import SurveyActivities, SurveySettings
from activities.translation import TranslationActivities, TranslationSettings, translator_from_settings
from activities.triage import TriageActivities
from db import directory
from db.pool import create_pool
from domain.directory import delivery_task_queue, regional_task_queue
from meridian import temporal
from meridian.settings import Settings
from workflows.housekeeping import HousekeepingWorkflow
from workflows.knowledge import ArticleFromTicketWorkflow, PublishTranslationWorkflow
from workflows.problems import RepeatIssuesWorkflow
from workflows.quality import QualityAlertsWorkflow
from workflows.recovery import RecoveryWorkflow
from workflows.ticket import TicketWorkflow

log = structlog.get_logger(__name__)

WORKFLOWS = [
    TicketWorkflow,
    HousekeepingWorkflow,
    RepeatIssuesWorkflow,
    ArticleFromTicketWorkflow,
    PublishTranslationWorkflow,
    RecoveryWorkflow,
    QualityAlertsWorkflow,
]


@dataclass
class WorkerDependencies:
    pool: asyncpg.Pool
    http: httpx.AsyncClient
    detector: LanguageDetectorService


def notification_activities(deps: WorkerDependencies, settings: Settings) -> NotificationActivities:
    return NotificationActivities(
        deps.pool,
        deps.http,
        settings.webhook_url,
        settings.webhook_secret,
        timeout=settings.notify_timeout,
        attempts=settings.notify_attempts,
    )


def regional_activities_for(deps: WorkerDependencies, settings: Settings) -> list:
    """Activities that reach a region's own systems (its notification channels): run near them."""
    notifications = notification_activities(deps, settings)
    channels = ChannelActivities(
        deps.pool,
        deps.http,
        settings.section(ChannelSettings),
        notifications,
    )
    return [notifications.deliver_notification, channels.send_page]


def activities_for(client: Client, deps: WorkerDependencies, settings: Settings) -> list:
    triage = TriageActivities(deps.pool, deps.detector)
    assignment = AssignmentActivities(deps.pool, client, settings.handoff_lead)
    projection = ProjectionActivities(deps.pool)
    notifications = notification_activities(deps, settings)
    intake = IntakeActivities(
        deps.pool, client, settings.task_queue, settings.lifecycle(), settings.unstarted_after
    )
    calendars = CalendarActivities(deps.pool)
    channels = ChannelActivities(
        deps.pool,
        deps.http,
        settings.section(ChannelSettings),
        notifications,
    )
    escalations = EscalationActivities(deps.pool)
    problems = ProblemActivities(deps.pool, deps.http, settings.section(TrackerSettings))
    embedder = embedder_from_settings(deps.http, settings.section(EmbeddingSettings))
    embeddings = EmbeddingActivities(deps.pool, embedder)
    translation = TranslationActivities(
        deps.pool, translator_from_settings(deps.http, settings.section(TranslationSettings))
    )
    quality = QualityActivities(deps.pool, notifications)
    surveys = SurveyActivities(deps.pool, notifications, settings.section(SurveySettings))
    knowledge = KnowledgeActivities(
        deps.pool, embedder, translation.service, settings.section(KnowledgeSettings)
    )
    # The central queue serves the regional activities too: a ticket without a region uses it,
    # and so does a regional page that no regional worker picked up in time.
    return [
        triage.triage_ticket,
        assignment.claim_best_agent,
        assignment.claim_agent,
        assignment.release_agent,
        assignment.decline_offer,
        assignment.dispatch_queue,
        assignment.hand_off,
        assignment.current_shift,
        projection.project_ticket,
        projection.refresh_kpi_rollups,
        notifications.deliver_notification,
        intake.start_unstarted_tickets,
        calendars.sla_calendar,
        calendars.current_sla_rules,
        channels.send_page,
        escalations.escalation_recipients,
        problems.find_repeat_issues,
        problems.unsent_problems,
        problems.file_problem,
        embeddings.embed_translation,
        embeddings.embed_pending_translations,
        translation.translate_text,
        knowledge.ticket_insights,
        surveys.send_survey,
        quality.evaluate_quality_rules,
        quality.notify_quality_alert,
        surveys.praise_engineers,
        surveys.open_recovery,
        surveys.recovery_overdue,
        knowledge.draft_article_from_ticket,
        knowledge.open_machine_translations,
    ]


@contextlib.asynccontextmanager
async def worker_dependencies(
    settings: Settings, database_url: str, warm: bool = True
) -> AsyncIterator[WorkerDependencies]:
    detector = LanguageDetectorService(settings.languages)
    if warm:  # loaded before polling so the first ticket does not pay for it; regional workers never use it
        await asyncio.to_thread(detector.warm_up)
    pool = await create_pool(database_url)
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as http:
            yield WorkerDependencies(pool=pool, http=http, detector=detector)
    finally:
        await pool.close()


def worker_tuning(settings: Settings) -> dict:
    """Cache and concurrency options of the central worker (see docs/performance.md)."""
    return {
        "max_cached_workflows": settings.worker_max_cached_workflows,
        "max_concurrent_workflow_tasks": settings.worker_max_concurrent_workflow_tasks,
        "max_concurrent_activities": settings.worker_max_concurrent_activities,
    }


def cache_workflow_bytecode() -> list[str]:
    """Write the .pyc of the workflow modules' files if missing or stale; return the files compiled.

    The sandbox executes a workflow's module afresh for every workflow it creates (a new ticket, or
    one evicted from the cache). Without a .pyc — PYTHONDONTWRITEBYTECODE=1, an editable install —
    each of those compiles workflows/ticket.py from source again: a fifth of the worker's CPU at
    intake (docs/performance.md). A read-only install (pip compiled it already) is left as it is."""
    compiled = []
    folders = {os.path.dirname(sys.modules[w.__module__].__file__ or "") for w in WORKFLOWS}
    for source in sorted(os.path.join(f, name) for f in folders if f for name in os.listdir(f)):
        if not source.endswith(".py"):
            continue
        cached = importlib.util.cache_from_source(source)
        with contextlib.suppress(OSError, py_compile.PyCompileError):
            if not os.path.exists(cached) or os.path.getmtime(cached) < os.path.getmtime(source):
                py_compile.compile(source, cfile=cached, doraise=True)
                compiled.append(source)
    return compiled


def build_worker(client: Client, deps: WorkerDependencies, settings: Settings) -> Worker:
    cache_workflow_bytecode()
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=WORKFLOWS,
        activities=activities_for(client, deps, settings),
        **worker_tuning(settings),
    )


def build_regional_worker(
    client: Client, deps: WorkerDependencies, settings: Settings, region: str
) -> Worker:
    return build_delivery_worker(client, deps, settings, regional_task_queue(settings.task_queue, region))


def build_delivery_worker(client: Client, deps: WorkerDependencies, settings: Settings, queue: str) -> Worker:
    """Notifications and pages on a queue of their own (a region's, or the central delivery queue),
    with slots of their own: a receiver that hangs can fill them, never the ticket lifecycles'."""
    return Worker(
        client,
        task_queue=queue,
        activities=regional_activities_for(deps, settings),
        max_concurrent_activities=settings.delivery_concurrency,
    )


async def build_workers(
    client: Client, deps: WorkerDependencies, settings: Settings, region: str | None = None
) -> list[Worker]:
    """`--region R`: only R's regional queue. Otherwise the central queue and every region's queue,
    so a small team runs one worker and nothing waits for a regional worker that does not exist."""
    if region is not None:
        return [build_regional_worker(client, deps, settings, region)]
    async with deps.pool.acquire() as conn:
        regions = [r.id for r in await directory.list_regions(conn)]
    return [
        build_worker(client, deps, settings),
        build_delivery_worker(client, deps, settings, delivery_task_queue(settings.task_queue)),
    ] + [build_regional_worker(client, deps, settings, r) for r in regions]


def metrics_runtime(bind_address: str | None) -> Runtime | None:
    """One Runtime per process, exporting SDK and workflow metrics for Prometheus to scrape."""
    if not bind_address:
        return None
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind_address)))


async def run_worker(settings: Settings, region: str | None = None) -> None:
    if not settings.database_url:
        raise SystemExit("DATABASE_URL is not set (meridian dev sets it for you)")
    client = await temporal.connect(settings, metrics_runtime(settings.worker_metrics_address))
    if region is None:
        await temporal.ensure_search_attributes(client, settings.temporal_namespace)
        await temporal.ensure_schedules(client, settings)
    async with worker_dependencies(settings, settings.database_url, warm=region is None) as deps:
        workers = await build_workers(client, deps, settings, region)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with contextlib.AsyncExitStack() as running:
            for worker in workers:
                await running.enter_async_context(worker)
            log.info(
                "worker started",
                task_queues=[w.task_queue for w in workers],
                metrics=settings.worker_metrics_address,
            )
            await stop.wait()
            log.info("worker stopping")
