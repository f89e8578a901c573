"""Projects a ticket workflow's state and new timeline events into PostgreSQL."""

from __future__ import annotations

import asyncpg
from temporalio import activity

from db import tickets
from domain.tickets import ProjectionBatch


class ProjectionActivities:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    @activity.defn(name="project_ticket")
    async def project_ticket(self, batch: ProjectionBatch) -> bool:
        async with self.pool.acquire() as conn:
            return await tickets.apply_projection(conn, batch)
