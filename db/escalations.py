"""SQL for escalation policies and the people each level reaches."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import asyncpg

from db.assignment import agent_candidate
from domain.enums import Priority
from domain.escalation import EscalationLevel, EscalationPolicy, EscalationTarget, Recipient

ROLE_OF = {
    EscalationTarget.TEAM_LEAD: "lead",
    EscalationTarget.REGIONAL_MANAGER: "manager",
    EscalationTarget.SRE_ONCALL: "sre",
}


async def policies_by_priority(conn: asyncpg.Connection) -> dict[Priority, EscalationPolicy]:
    found: dict[Priority, EscalationPolicy] = {}
    for row in await conn.fetch("SELECT * FROM escalation_policies ORDER BY id"):
        policy = EscalationPolicy(
            id=row["id"],
            name=row["name"],
            priorities=row["priorities"],
            levels=[EscalationLevel(**level) for level in row["levels"]],
            quiet_priorities=row["quiet_priorities"],
            quiet_start=row["quiet_start"],
            quiet_end=row["quiet_end"],
        )
        for priority in policy.priorities:
            found.setdefault(priority, policy)
    return found


async def recipients(
    conn: asyncpg.Connection,
    *,
    region: str | None,
    assignee_id: str | None,
    targets: list[EscalationTarget],
    at: datetime,
) -> list[Recipient]:
    """Who each target means right now. Leads and SREs must be on shift; managers are always reachable."""
    rows = await conn.fetch(
        """SELECT a.id, a.name, a.email, a.region_id, a.roles, r.timezone
           FROM agents a JOIN regions r ON r.id = a.region_id WHERE a.active ORDER BY a.id"""
    )
    found: list[Recipient] = []
    for target in targets:
        for row in rows:
            if target is EscalationTarget.ASSIGNEE:
                wanted = row["id"] == assignee_id
            else:
                in_scope = target is EscalationTarget.SRE_ONCALL or row["region_id"] == region
                wanted = in_scope and ROLE_OF[target] in row["roles"]
                if wanted and target is not EscalationTarget.REGIONAL_MANAGER:
                    candidate = await agent_candidate(conn, row["id"], at)
                    wanted = candidate is not None and candidate.on_shift(at)
            if wanted:
                found.append(
                    Recipient(
                        target=target,
                        agent_id=row["id"],
                        name=row["name"],
                        email=row["email"],
                        local_time=at.astimezone(ZoneInfo(row["timezone"])).time().replace(tzinfo=None),
                    )
                )
    return found
