"""Triage: language, module and priority for a new ticket, plus what the workflow needs next."""

from __future__ import annotations

from datetime import datetime

import asyncpg
from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.calendars import clock_calendar
from activities.language import CONFIDENCE_THRESHOLD, LanguageDetectorService
from db import directory, escalations
from domain.enums import CustomerTier, Priority
from domain.escalation import EscalationPolicy
from domain.sla import ClockCalendar, SlaTargets
from domain.triage import classify_module, decide_priority


class TriageRequest(BaseModel):
    ticket_id: int
    customer_id: str
    subject: str
    body: str
    declared_priority: Priority | None = None
    created_at: datetime | None = None


class TriageResult(BaseModel):
    language: str
    language_confidence: float
    language_uncertain: bool
    language_method: str
    module: str
    module_keywords: list[str]
    priority: Priority
    priority_reasons: list[str]
    customer_tier: CustomerTier
    home_region: str | None
    policies: dict[Priority, SlaTargets]
    sla_calendar: ClockCalendar | None = None
    escalation_policies: dict[Priority, EscalationPolicy] = Field(default_factory=dict)


class TriageActivities:
    def __init__(self, pool: asyncpg.Pool, detector: LanguageDetectorService):
        self.pool = pool
        self.detector = detector

    @activity.defn(name="triage_ticket")
    async def triage_ticket(self, request: TriageRequest) -> TriageResult:
        async with self.pool.acquire() as conn:
            customer = await directory.get_customer(conn, request.customer_id)
            if customer is None:
                raise ApplicationError(
                    f"customer {request.customer_id!r} does not exist",
                    type="UnknownCustomer",
                    non_retryable=True,
                )
            taxonomy = await directory.list_modules(conn)
            escalation_policies = await escalations.policies_by_priority(conn)
            policies = await directory.sla_policies(conn, customer.tier, customer.calendar_id)
            if len(policies) != len(Priority):
                raise ApplicationError(
                    f"sla_policies must define P1..P4 for the {customer.tier.value} tier",
                    type="IncompleteSlaPolicy",
                )
            decision = decide_priority(
                customer.tier, request.declared_priority, f"{request.subject}\n{request.body}"
            )
            sla_calendar = None
            if request.created_at is not None:
                sla_calendar = await clock_calendar(
                    conn, policies[decision.priority].calendar_id, request.created_at
                )

        text = f"{request.subject}\n{request.body}"
        detected = self.detector.detect(text)
        uncertain = detected is None or detected.confidence < CONFIDENCE_THRESHOLD
        language = customer.language if uncertain else detected.code
        module = classify_module(text, taxonomy)
        return TriageResult(
            language=language,
            language_confidence=detected.confidence if detected else 0.0,
            language_uncertain=uncertain,
            language_method="customer profile" if uncertain else detected.method,
            module=module.module,
            module_keywords=module.matched,
            priority=decision.priority,
            priority_reasons=decision.reasons,
            customer_tier=customer.tier,
            home_region=customer.region_id,
            policies=policies,
            sla_calendar=sla_calendar,
            escalation_policies=escalation_policies,
        )
