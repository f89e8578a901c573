"""SQL for the directory: regions, agents, customers, modules, SLA policies and API tokens."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import asyncpg

from domain.directory import Agent, AgentFields, Customer, CustomerFields, Region, RegionFields
from domain.enums import CustomerTier, Priority, Role
from domain.routing import Shift
from domain.sla import SlaTargets
from domain.triage import ModuleDefinition


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- regions --------------------------------------------------------------------------------


def _region(row: asyncpg.Record) -> Region:
    return Region(**dict(row))


async def list_regions(conn: asyncpg.Connection) -> list[Region]:
    rows = await conn.fetch("SELECT * FROM regions ORDER BY id")
    return [_region(r) for r in rows]


async def get_region(conn: asyncpg.Connection, region_id: str) -> Region | None:
    row = await conn.fetchrow("SELECT * FROM regions WHERE id = $1", region_id)
    return _region(row) if row else None


async def upsert_region(conn: asyncpg.Connection, region: Region) -> Region:
    row = await conn.fetchrow(
        """INSERT INTO regions (id, name, timezone) VALUES ($1, $2, $3)
           ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, timezone = EXCLUDED.timezone,
                                          updated_at = now()
           RETURNING *""",
        region.id,
        region.name,
        region.timezone,
    )
    return _region(row)


async def update_region(conn: asyncpg.Connection, region_id: str, fields: RegionFields) -> Region | None:
    row = await conn.fetchrow(
        "UPDATE regions SET name = $2, timezone = $3, updated_at = now() WHERE id = $1 RETURNING *",
        region_id,
        fields.name,
        fields.timezone,
    )
    return _region(row) if row else None


async def delete_region(conn: asyncpg.Connection, region_id: str) -> bool:
    return await conn.execute("DELETE FROM regions WHERE id = $1", region_id) == "DELETE 1"


# --- agents ---------------------------------------------------------------------------------


def _agent(row: asyncpg.Record) -> Agent:
    data: dict[str, Any] = dict(row)
    data["shift"] = Shift(
        days=data.pop("shift_days"), start=data.pop("shift_start"), end=data.pop("shift_end")
    )
    return Agent(**data)


def _agent_args(fields: AgentFields) -> tuple:
    return (
        fields.name,
        fields.email,
        fields.region_id,
        [lang.model_dump(mode="json") for lang in fields.languages],
        fields.skills,
        fields.capacity,
        fields.shift.days,
        fields.shift.start,
        fields.shift.end,
        fields.active,
        fields.roles,
        fields.shift_pattern_id,
        fields.rotation_offset,
    )


async def list_agents(conn: asyncpg.Connection, region_id: str | None = None) -> list[Agent]:
    rows = await conn.fetch(
        "SELECT * FROM agents WHERE $1::text IS NULL OR region_id = $1 ORDER BY id", region_id
    )
    return [_agent(r) for r in rows]


async def get_agent(conn: asyncpg.Connection, agent_id: str) -> Agent | None:
    row = await conn.fetchrow("SELECT * FROM agents WHERE id = $1", agent_id)
    return _agent(row) if row else None


async def upsert_agent(conn: asyncpg.Connection, agent_id: str, fields: AgentFields) -> Agent:
    row = await conn.fetchrow(
        """INSERT INTO agents (id, name, email, region_id, languages, skills, capacity,
                               shift_days, shift_start, shift_end, active, roles,
                               shift_pattern_id, rotation_offset)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
           ON CONFLICT (id) DO UPDATE SET
               name = EXCLUDED.name, email = EXCLUDED.email, region_id = EXCLUDED.region_id,
               languages = EXCLUDED.languages, skills = EXCLUDED.skills, capacity = EXCLUDED.capacity,
               shift_days = EXCLUDED.shift_days, shift_start = EXCLUDED.shift_start,
               shift_end = EXCLUDED.shift_end, active = EXCLUDED.active, roles = EXCLUDED.roles,
               shift_pattern_id = EXCLUDED.shift_pattern_id, rotation_offset = EXCLUDED.rotation_offset,
               updated_at = now()
           RETURNING *""",
        agent_id,
        *_agent_args(fields),
    )
    return _agent(row)


async def insert_agent(conn: asyncpg.Connection, agent_id: str, fields: AgentFields) -> Agent | None:
    row = await conn.fetchrow(
        """INSERT INTO agents (id, name, email, region_id, languages, skills, capacity,
                               shift_days, shift_start, shift_end, active, roles,
                               shift_pattern_id, rotation_offset)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
           ON CONFLICT (id) DO NOTHING RETURNING *""",
        agent_id,
        *_agent_args(fields),
    )
    return _agent(row) if row else None


async def deactivate_agent(conn: asyncpg.Connection, agent_id: str) -> bool:
    """Agents are never deleted: their names stay on the timelines they wrote."""
    result = await conn.execute(
        "UPDATE agents SET active = false, updated_at = now() WHERE id = $1", agent_id
    )
    return result == "UPDATE 1"


# --- customers ------------------------------------------------------------------------------


def _customer(row: asyncpg.Record) -> Customer:
    return Customer(**dict(row))


def _customer_args(fields: CustomerFields) -> tuple:
    return (
        fields.name,
        fields.email,
        fields.tier.value,
        fields.language,
        fields.region_id,
        fields.calendar_id,
    )


async def list_customers(conn: asyncpg.Connection) -> list[Customer]:
    return [_customer(r) for r in await conn.fetch("SELECT * FROM customers ORDER BY id")]


async def get_customer(conn: asyncpg.Connection, customer_id: str) -> Customer | None:
    row = await conn.fetchrow("SELECT * FROM customers WHERE id = $1", customer_id)
    return _customer(row) if row else None


async def upsert_customer(conn: asyncpg.Connection, customer_id: str, fields: CustomerFields) -> Customer:
    row = await conn.fetchrow(
        """INSERT INTO customers (id, name, email, tier, language, region_id, calendar_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (id) DO UPDATE SET
               name = EXCLUDED.name, email = EXCLUDED.email, tier = EXCLUDED.tier,
               language = EXCLUDED.language, region_id = EXCLUDED.region_id,
               calendar_id = EXCLUDED.calendar_id, updated_at = now()
           RETURNING *""",
        customer_id,
        *_customer_args(fields),
    )
    return _customer(row)


async def insert_customer(
    conn: asyncpg.Connection, customer_id: str, fields: CustomerFields
) -> Customer | None:
    row = await conn.fetchrow(
        """INSERT INTO customers (id, name, email, tier, language, region_id, calendar_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING RETURNING *""",
        customer_id,
        *_customer_args(fields),
    )
    return _customer(row) if row else None


# --- modules and SLA policy -----------------------------------------------------------------


async def list_modules(conn: asyncpg.Connection) -> list[ModuleDefinition]:
    rows = await conn.fetch("SELECT id, name, keywords FROM modules ORDER BY id")
    return [ModuleDefinition(id=r["id"], name=r["name"], keywords=list(r["keywords"])) for r in rows]


def _minutes(value: int | None) -> timedelta | None:
    return timedelta(minutes=value) if value is not None else None


async def sla_policies(
    conn: asyncpg.Connection, tier: CustomerTier, customer_calendar: str | None
) -> dict[Priority, SlaTargets]:
    """The tier's targets per priority, with 'customer' resolved to the customer's contract calendar."""
    rows = await conn.fetch("SELECT * FROM sla_policies WHERE tier = $1", tier.value)
    return {
        Priority(r["priority"]): SlaTargets(
            priority=Priority(r["priority"]),
            first_response=_minutes(r["first_response_minutes"]),
            resolution=_minutes(r["resolution_minutes"]),
            next_response=_minutes(r["next_response_minutes"]),
            periodic_update=_minutes(r["periodic_update_minutes"]),
            calendar_id=customer_calendar if r["calendar"] == "customer" else r["calendar"],
        )
        for r in rows
    }


# --- tokens ---------------------------------------------------------------------------------


async def store_token(
    conn: asyncpg.Connection,
    token: str,
    role: Role,
    subject_id: str | None,
    label: str | None = None,
    scopes: list[str] | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO api_tokens (token_hash, role, subject_id, label, scopes)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token_hash) DO NOTHING""",
        hash_token(token),
        role.value,
        subject_id,
        label,
        sorted(set(scopes or [])),
    )


async def find_token(conn: asyncpg.Connection, token: str) -> asyncpg.Record | None:
    # A deactivated agent's token stops working with the agent.
    return await conn.fetchrow(
        """SELECT t.role, t.subject_id, t.scopes FROM api_tokens t
           LEFT JOIN agents a ON t.role = 'agent' AND a.id = t.subject_id
           WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND (t.role <> 'agent' OR a.active)""",
        hash_token(token),
    )
