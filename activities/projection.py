"""Projects a ticket workflow's state and new timeline events into PostgreSQL, then the
ticket's KPI facts derived from its timeline."""

from __future__ import annotations

import asyncpg
from temporalio import activity

from activities.heartbeats import beating
from db import kpis, tickets
from domain.tickets import ProjectionBatch


class ProjectionActivities:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    @activity.defn(name="project_ticket")
    async def project_ticket(self, batch: ProjectionBatch) -> bool:
        async with self.pool.acquire() as conn:
            applied = await tickets.apply_projection(conn, batch)
            if batch.events:
                # Its own transaction, after the projection's: KPIs never undo or hold up a ticket.
                await kpis.refresh_ticket_facts_quietly(conn, batch.snapshot.ticket_id)
            return applied

    @activity.defn(name="refresh_kpi_rollups")
    async def refresh_kpi_rollups(self, max_days: int) -> int:
        """Brings the daily KPI rollups up to date with the tickets changed since the last run;
        a run that finds another one under way skips its turn."""
        async with beating(), self.pool.acquire() as conn:
            return await kpis.refresh_rollups(conn, max_days=max_days)
