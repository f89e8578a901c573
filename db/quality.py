"""SQL for quality rules: their measurements, episode clocks, and the alerts they open."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from db import directory, rosters
from domain.quality import Measurement, QualityRule, QualityRuleFields, RuleKind

OPEN_STATES = ["queued", "open", "pending_customer"]


def _rule(row: asyncpg.Record) -> QualityRule:
    return QualityRule(**dict(row))


async def list_rules(conn: asyncpg.Connection, enabled_only: bool = False) -> list[QualityRule]:
    rows = await conn.fetch("SELECT * FROM quality_rules WHERE enabled OR NOT $1 ORDER BY id", enabled_only)
    return [_rule(r) for r in rows]


async def get_rule(conn: asyncpg.Connection, rule_id: str) -> QualityRule | None:
    row = await conn.fetchrow("SELECT * FROM quality_rules WHERE id = $1", rule_id)
    return _rule(row) if row else None


async def put_rule(conn: asyncpg.Connection, rule_id: str, fields: QualityRuleFields) -> QualityRule:
    """Creates or replaces; a changed rule starts a new episode clock."""
    row = await conn.fetchrow(
        """INSERT INTO quality_rules (id, kind, region, module, language, threshold, window_minutes,
                                      sustain_minutes, enabled)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, region = EXCLUDED.region,
               module = EXCLUDED.module, language = EXCLUDED.language, threshold = EXCLUDED.threshold,
               window_minutes = EXCLUDED.window_minutes, sustain_minutes = EXCLUDED.sustain_minutes,
               enabled = EXCLUDED.enabled, breaching_since = NULL
           RETURNING *""",
        rule_id,
        fields.kind.value,
        fields.region,
        fields.module,
        fields.language,
        fields.threshold,
        fields.window_minutes,
        fields.sustain_minutes,
        fields.enabled,
    )
    return _rule(row)


async def delete_rule(conn: asyncpg.Connection, rule_id: str) -> bool:
    return await conn.execute("DELETE FROM quality_rules WHERE id = $1", rule_id) == "DELETE 1"


async def set_breaching_since(conn: asyncpg.Connection, rule_id: str, since: datetime | None) -> None:
    await conn.execute("UPDATE quality_rules SET breaching_since = $2 WHERE id = $1", rule_id, since)


# --- alerts -----------------------------------------------------------------------------------


async def open_alert(conn: asyncpg.Connection) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch("SELECT * FROM quality_alerts WHERE resolved_at IS NULL")
    return {r["rule_id"]: r for r in rows}


async def fire(
    conn: asyncpg.Connection, rule_id: str, at: datetime, value: float | None, message: str, details: dict
) -> int | None:
    """The alert's id, or None when the rule already has an open one (the episode fired)."""
    return await conn.fetchval(
        """INSERT INTO quality_alerts (rule_id, opened_at, value, message, details)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (rule_id) WHERE resolved_at IS NULL DO NOTHING RETURNING id""",
        rule_id,
        at,
        value,
        message,
        details,
    )


async def resolve(conn: asyncpg.Connection, rule_id: str, at: datetime) -> int | None:
    return await conn.fetchval(
        "UPDATE quality_alerts SET resolved_at = $2 WHERE rule_id = $1 AND resolved_at IS NULL RETURNING id",
        rule_id,
        at,
    )


async def untold(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Alert changes nobody was told about yet: opened, or resolved."""
    return await conn.fetch(
        """SELECT a.*, r.region,
                  CASE WHEN a.opened_told_at IS NULL THEN 'opened' ELSE 'resolved' END AS change
           FROM quality_alerts a JOIN quality_rules r ON r.id = a.rule_id
           WHERE a.opened_told_at IS NULL OR (a.resolved_at IS NOT NULL AND a.resolved_told_at IS NULL)
           ORDER BY a.id"""
    )


async def mark_told(conn: asyncpg.Connection, alert_id: int, change: str) -> None:
    column = "opened_told_at" if change == "opened" else "resolved_told_at"
    await conn.execute(f"UPDATE quality_alerts SET {column} = now() WHERE id = $1", alert_id)


async def list_alerts(conn: asyncpg.Connection, open_only: bool, limit: int = 100) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT a.*, r.kind, r.region, r.module, r.language, r.threshold FROM quality_alerts a
           JOIN quality_rules r ON r.id = a.rule_id
           WHERE a.resolved_at IS NULL OR NOT $1 ORDER BY a.opened_at DESC LIMIT $2""",
        open_only,
        limit,
    )


# --- measurements -----------------------------------------------------------------------------


def _scope(first: int) -> str:
    """The rule's region, module and language filters on tickets `t`, as parameters first..first+2."""
    r, m, lang = first, first + 1, first + 2
    return (
        f"(${r}::text IS NULL OR t.region = ${r}) AND (${m}::text IS NULL OR t.module = ${m})"
        f" AND (${lang}::text IS NULL OR t.language = ${lang})"
    )


async def measure(conn: asyncpg.Connection, rule: QualityRule, now: datetime) -> Measurement:
    scope = (rule.region, rule.module, rule.language)
    since = now - timedelta(minutes=rule.window_minutes)
    if rule.kind is RuleKind.FIRST_RESPONSE_P90:
        # A ticket still waiting counts with its age so far: a region that answers nobody must alert.
        value = await conn.fetchval(
            f"""SELECT percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM
                       coalesce(t.first_response_at, $5) - t.created_at) / 60)
                FROM tickets t WHERE t.created_at >= $1 AND t.created_at <= $5 AND {_scope(2)}""",
            since,
            *scope,
            now,
        )
        return Measurement(value=value, details=await _queue_details(conn, rule, now))
    if rule.kind is RuleKind.QUEUE_AGE:
        value = await conn.fetchval(
            f"""SELECT extract(epoch FROM $4 - min(q.queued_at)) / 60 FROM ticket_queue q
                JOIN tickets t ON t.id = q.ticket_id WHERE {_scope(1)}""",
            *scope,
            now,
        )
        return Measurement(value=value, details=await _queue_details(conn, rule, now))
    if rule.kind is RuleKind.CSAT_MEAN:
        row = await conn.fetchrow(
            f"""SELECT avg(t.csat_score)::float AS mean, count(t.csat_score) AS answers FROM tickets t
                WHERE t.resolved_at >= $1 AND t.resolved_at <= $5 AND {_scope(2)}""",
            since,
            *scope,
            now,
        )
        return Measurement(value=row["mean"], details={"answers": row["answers"]})
    # Coverage: minutes of the next window with nobody qualified on shift.
    _, gaps = await rosters.coverage(
        conn, now, now + timedelta(minutes=rule.window_minutes), rule.language, rule.module
    )
    minutes = sum((end - start).total_seconds() for start, end in gaps) / 60
    return Measurement(value=minutes, details={"first_gap": gaps[0][0].isoformat() if gaps else None})


async def _queue_details(conn: asyncpg.Connection, rule: QualityRule, now: datetime) -> dict:
    rows = await conn.fetch(
        f"""SELECT coalesce(t.language, '?') || '/' || coalesce(t.module, '?') AS key, count(*) AS n
            FROM ticket_queue q JOIN tickets t ON t.id = q.ticket_id
            WHERE {_scope(1)} GROUP BY 1 ORDER BY 2 DESC, 1""",
        rule.region,
        rule.module,
        rule.language,
    )
    agents = [a for a in await directory.list_agents(conn, rule.region) if a.active]
    windows = await rosters.shift_windows_of(conn, agents, now, now + timedelta(microseconds=1))
    return {"queued": {r["key"]: r["n"] for r in rows}, "on_shift": sum(1 for w in windows.values() if w)}
