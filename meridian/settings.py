"""Process configuration, read from the environment (and `.meridian/env` written by `meridian dev`)."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.lifecycle import LifecyclePolicy


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
    # Where the worker serves Prometheus metrics (Temporal SDK metrics and Meridian's own).
    worker_metrics_address: str | None = "127.0.0.1:9464"

    webhook_url: str | None = None
    webhook_secret: str | None = None
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

    # Lifecycle timings handed to each new ticket workflow (ISO 8601 durations or seconds).
    csat_delay: timedelta = timedelta(hours=1)
    csat_reminder_after: timedelta = timedelta(hours=24)
    csat_expires_after: timedelta = timedelta(hours=72)
    reopen_window: timedelta = timedelta(days=3)
    sla_warning_ratios: list[float] = [0.5, 0.75, 0.9]
    dispatch_interval: timedelta = timedelta(minutes=1)
    handoff_lead: timedelta = timedelta(minutes=15)
    handoff_ack_timeout: timedelta = timedelta(minutes=15)
    pending_customer_handoff: Literal["move", "stay"] = "move"
    native_wait: timedelta = timedelta(minutes=5)
    fluent_wait: timedelta = timedelta(minutes=10)
    regional_pickup_timeout: timedelta = timedelta(minutes=2)

    languages: list[str] = ["en", "es", "pt", "fr", "de", "zh", "ja", "ko"]

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
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()
