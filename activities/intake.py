"""Intake: starting ticket workflows, and restarting any whose start was lost."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import structlog
from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError

from db import tickets
from domain.lifecycle import LifecyclePolicy
from domain.tickets import TicketInput
from meridian.temporal import start_ticket_workflow

log = structlog.get_logger(__name__)


async def ticket_input_from_row(
    conn: asyncpg.Connection, row: asyncpg.Record, lifecycle: LifecyclePolicy
) -> TicketInput:
    first = await tickets.first_message(conn, row["id"]) or {}
    return TicketInput(
        ticket_id=row["id"],
        customer_id=row["customer_id"],
        subject=row["subject"],
        body=first.get("body", ""),
        channel=row["channel"],
        declared_priority=first.get("declared_priority"),
        created_at=row["created_at"],
        lifecycle=lifecycle,
    )


class IntakeActivities:
    def __init__(
        self,
        pool: asyncpg.Pool,
        client: Client,
        task_queue: str,
        lifecycle: LifecyclePolicy,
        unstarted_after: timedelta = timedelta(minutes=1),
    ):
        self.pool = pool
        self.client = client
        self.task_queue = task_queue
        self.lifecycle = lifecycle
        # A ticket row older than this with nothing projected means its workflow start was lost.
        self.unstarted_after = unstarted_after

    @activity.defn(name="start_unstarted_tickets")
    async def start_unstarted_tickets(self) -> int:
        async with self.pool.acquire() as conn:
            rows = await tickets.tickets_never_started(conn, self.unstarted_after.total_seconds())
            inputs = [await ticket_input_from_row(conn, row, self.lifecycle) for row in rows]
        started = 0
        for ticket in inputs:
            try:
                await start_ticket_workflow(self.client, self.task_queue, ticket)
            except RPCError as err:
                log.error("ticket workflow could not start", ticket_id=ticket.ticket_id, error=err.message)
                continue
            started += 1
            log.warning("ticket workflow started late", ticket_id=ticket.ticket_id)
        return started
