"""After resolution: the survey link, recovery of an unhappy customer, and praise passed on.

The survey token never enters a workflow history: this activity signs it (with a key kept in
PostgreSQL) and hands the link straight to the notification. Every notification id is derived
from what it is about, so a retried activity delivers once.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
from pydantic import BaseModel, Field
from temporalio import activity

from activities.notifications import NotificationActivities
from db import escalations, surveys
from domain.escalation import EscalationTarget
from domain.messages import Phrase, say
from domain.notifications import Notification
from domain.surveys import sign_survey

NOTIFICATION_NAMESPACE = uuid.UUID("6f1c7f5e-1b7a-4a55-9d0e-3f1e2b9c4d21")


class SurveySettings(BaseModel):
    public_url: str = "http://127.0.0.1:8000"
    survey_reasons: list[str] = Field(
        default_factory=lambda: ["response time", "solution", "communication", "language", "other"]
    )
    survey_questions: list[str] = Field(default_factory=list)  # extra free-text questions


class SendSurveyRequest(BaseModel):
    ticket_id: int
    survey_id: str
    customer_id: str
    language: str
    subject: str
    expires_at: datetime
    at: datetime
    reminder: bool = False


class PraiseRequest(BaseModel):
    ticket_id: int
    region: str | None
    score: int
    comment: str
    at: datetime


class RecoveryRequest(BaseModel):
    ticket_id: int
    region: str | None
    score: int
    comment: str | None
    due_at: datetime
    at: datetime


def _notification_id(*parts: object) -> str:
    return str(uuid.uuid5(NOTIFICATION_NAMESPACE, "/".join(str(p) for p in parts)))


class SurveyActivities:
    def __init__(self, pool: asyncpg.Pool, notifications: NotificationActivities, settings: SurveySettings):
        self.pool = pool
        self.notifications = notifications
        self.settings = settings

    async def _notify(
        self,
        key: tuple,
        ticket_id: int,
        kind: str,
        recipient: tuple[str, str | None],
        data: dict,
        at: datetime,
    ) -> None:
        await self.notifications.deliver_notification(
            Notification(
                id=_notification_id(*key),
                ticket_id=ticket_id,
                kind=kind,
                recipient_type=recipient[0],
                recipient_id=recipient[1],
                at=at,
                data=data,
            )
        )

    @activity.defn(name="send_survey")
    async def send_survey(self, request: SendSurveyRequest) -> None:
        survey_id = uuid.UUID(request.survey_id)
        async with self.pool.acquire() as conn:
            await surveys.save_survey(
                conn, survey_id, request.ticket_id, request.customer_id, request.language, request.expires_at
            )
            key = await surveys.secret(conn)
        token = sign_survey(key, survey_id, request.expires_at)
        question, language = say(Phrase.SURVEY_SCORE, request.language)
        kind = "csat_reminder" if request.reminder else "csat_survey"
        await self._notify(
            (request.survey_id, kind),
            request.ticket_id,
            kind,
            ("customer", request.customer_id),
            {
                "subject": request.subject,
                "link": f"{self.settings.public_url.rstrip('/')}/v1/surveys/{token}",
                "question": question,
                "language": language,
                "expires_at": request.expires_at.isoformat(),
            },
            request.at,
        )

    @activity.defn(name="praise_engineers")
    async def praise_engineers(self, request: PraiseRequest) -> list[str]:
        """Records the praise on each engineer who answered and tells them and their region's lead."""
        async with self.pool.acquire() as conn:
            engineers = await surveys.ticket_engineers(conn, request.ticket_id)
            for agent_id in engineers:
                await surveys.record_praise(conn, request.ticket_id, agent_id, request.score, request.comment)
            leads = await escalations.recipients(
                conn,
                region=request.region,
                assignee_id=None,
                targets=[EscalationTarget.TEAM_LEAD],
                at=request.at,
            )
        data = {"score": request.score, "comment": request.comment, "engineers": engineers}
        for agent_id in dict.fromkeys([*engineers, *(lead.agent_id for lead in leads)]):
            await self._notify(
                (request.ticket_id, "praise", agent_id),
                request.ticket_id,
                "praise",
                ("agent", agent_id),
                data,
                request.at,
            )
        return engineers

    @activity.defn(name="open_recovery")
    async def open_recovery(self, request: RecoveryRequest) -> str | None:
        """A recovery task for the on-shift team lead of the ticket's region; returns the lead."""
        async with self.pool.acquire() as conn:
            leads = await escalations.recipients(
                conn,
                region=request.region,
                assignee_id=None,
                targets=[EscalationTarget.TEAM_LEAD],
                at=request.at,
            )
            lead = leads[0].agent_id if leads else None
            await surveys.open_recovery(
                conn, request.ticket_id, request.region, lead, request.score, request.comment, request.due_at
            )
        await self._notify(
            (request.ticket_id, "csat_recovery"),
            request.ticket_id,
            "csat_recovery",
            ("agent", lead) if lead else ("region", request.region),
            {"score": request.score, "comment": request.comment, "due_at": request.due_at.isoformat()},
            request.at,
        )
        return lead

    @activity.defn(name="recovery_overdue")
    async def recovery_overdue(self, request: RecoveryRequest) -> list[str]:
        """The lead did not close the recovery in time: the regional manager hears of it."""
        async with self.pool.acquire() as conn:
            await surveys.set_recovery_status(conn, request.ticket_id, "overdue")
            managers = await escalations.recipients(
                conn,
                region=request.region,
                assignee_id=None,
                targets=[EscalationTarget.REGIONAL_MANAGER],
                at=request.at,
            )
        for manager in managers or [None]:
            recipient = ("agent", manager.agent_id) if manager else ("region", request.region)
            await self._notify(
                (request.ticket_id, "csat_recovery_overdue", recipient[1]),
                request.ticket_id,
                "csat_recovery_overdue",
                recipient,
                {"score": request.score, "comment": request.comment, "due_at": request.due_at.isoformat()},
                request.at,
            )
        return [m.agent_id for m in managers]
