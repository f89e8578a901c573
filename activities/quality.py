"""Quality alerts: measure each rule, open or resolve its alert, and tell the region's lead.

One activity evaluates every rule and records the transitions; a second tells people about
each transition. Notification ids derive from the alert and the transition, so a retried
activity (or a rerun of the schedule) never tells anyone twice.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
import structlog
from pydantic import BaseModel
from temporalio import activity

from activities.notifications import NotificationActivities
from db import escalations, quality
from domain.escalation import EscalationTarget
from domain.notifications import Notification
from domain.quality import Decision, decide, describe

log = structlog.get_logger(__name__)
NOTIFICATION_NAMESPACE = uuid.UUID("0b9e4c44-7c43-4d8e-8d0c-6a8f0f0b5e77")


class AlertChange(BaseModel):
    alert_id: int
    rule_id: str
    region: str | None
    change: str  # "opened" or "resolved"
    message: str
    value: float | None


class QualityActivities:
    def __init__(self, pool: asyncpg.Pool, notifications: NotificationActivities):
        self.pool = pool
        self.notifications = notifications

    @activity.defn(name="evaluate_quality_rules")
    async def evaluate_quality_rules(self, now: datetime) -> list[AlertChange]:
        """Opens and resolves alerts, then returns every change nobody was told about yet
        (this run's, and any a failed run left behind)."""
        async with self.pool.acquire() as conn:
            open_alerts = await quality.open_alert(conn)
            for rule in await quality.list_rules(conn, enabled_only=True):
                measured = await quality.measure(conn, rule, now)
                decision, since = decide(rule, measured, rule.id in open_alerts, now)
                async with conn.transaction():
                    await quality.set_breaching_since(conn, rule.id, since)
                    if decision is Decision.OPEN:
                        await quality.fire(
                            conn, rule.id, now, measured.value, describe(rule, measured), measured.details
                        )
                    elif decision is Decision.RESOLVE:
                        await quality.resolve(conn, rule.id, now)
            untold = await quality.untold(conn)
        changes = [
            AlertChange(
                alert_id=r["id"],
                rule_id=r["rule_id"],
                region=r["region"],
                change=r["change"],
                message=r["message"] if r["change"] == "opened" else f"Resolved: {r['message']}",
                value=r["value"],
            )
            for r in untold
        ]
        for change in changes:
            log.info("quality alert", rule_id=change.rule_id, change=change.change, value=change.value)
        return changes

    @activity.defn(name="notify_quality_alert")
    async def notify_quality_alert(self, change: AlertChange) -> list[str]:
        """The on-shift team lead of the rule's region (its manager if no lead is on shift)."""
        now = activity.info().current_attempt_scheduled_time
        async with self.pool.acquire() as conn:
            people = await escalations.recipients(
                conn,
                region=change.region,
                assignee_id=None,
                targets=[EscalationTarget.TEAM_LEAD, EscalationTarget.REGIONAL_MANAGER],
                at=now,
            )
        leads = [p for p in people if p.target is EscalationTarget.TEAM_LEAD] or people
        recipients = [("agent", p.agent_id) for p in leads] or [("region", change.region)]
        for kind, recipient in recipients:
            await self.notifications.deliver_notification(
                Notification(
                    id=str(
                        uuid.uuid5(NOTIFICATION_NAMESPACE, f"{change.alert_id}/{change.change}/{recipient}")
                    ),
                    ticket_id=None,
                    kind=f"quality_alert_{change.change}",
                    recipient_type=kind,
                    recipient_id=recipient,
                    at=now,
                    data=change.model_dump(mode="json"),
                )
            )
        async with self.pool.acquire() as conn:
            await quality.mark_told(conn, change.alert_id, change.change)
        return [r for _, r in recipients if r]
