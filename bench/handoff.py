"""Shift-end handoff: N open tickets owned by EMEA agents whose shift ends at the same moment move
to APAC agents. Measured: from the handoff instant (shift end - MERIDIAN_HANDOFF_LEAD) until the
last ticket is owned in APAC with its handoff note, in the read model; then checked in
PostgreSQL: every ticket has exactly one new owner (claim, assignee, loads) and one note.

Baselines, each run after Meridian's handoff has drained, on the same server:
- `signal` (the issue's): a bare workflow that receives one signal and runs one activity; all N
  are signalled at once by the bench, timed until the last activity ran.
- `same-work`: a bare workflow woken by a timer at one instant, running what Meridian runs for a
  handoff: one activity (the claim), then two side by side (projection and notification).
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import baseline
from bench.intake import history_counts
from bench.stack import OpenTicket, Stack, add_shift_team, seed_open_tickets, start_bare
from domain.lifecycle import LifecyclePolicy
from domain.tickets import AgentRef, ticket_workflow_id

SEED_RATE = 60.0  # workflow starts per second while seeding
CAPACITY = 100  # the most tickets the directory lets one agent hold


async def _wait_probes(stack: Stack, name: str, count: int, keys_prefix: str, patience: float) -> list[float]:
    deadline = time.time() + patience
    while True:
        times = [
            p["at"] for p in stack.read_probes() if p["name"] == name and p["key"].startswith(keys_prefix)
        ]
        if len(times) >= count or time.time() > deadline:
            return times
        await asyncio.sleep(0.25)


async def proof(stack: Stack, first: int, last: int, leaving: list[str]) -> dict[str, int]:
    """Exactly one new owner and one handoff note per ticket, from PostgreSQL."""
    async with stack.pool.acquire() as conn:
        row = await conn.fetchrow(
            """
            WITH mine AS (SELECT id, region, assignee_id FROM tickets WHERE id BETWEEN $1 AND $2),
            claims AS (
                SELECT c.ticket_id, count(*) AS n, min(c.agent_id) AS agent_id, min(a.region_id) AS region
                FROM agent_claims c JOIN agents a ON a.id = c.agent_id
                WHERE c.ticket_id BETWEEN $1 AND $2 GROUP BY 1),
            notes AS (
                SELECT ticket_id, count(*) AS n, min(data->>'to_agent_id') AS to_agent,
                       min(data->>'from_region') AS from_region, min(data->>'to_region') AS to_region
                FROM ticket_events WHERE kind = 'handed_off' AND ticket_id BETWEEN $1 AND $2 GROUP BY 1),
            told AS (
                SELECT ticket_id, count(*) AS n FROM ticket_events
                WHERE kind = 'team_changed' AND ticket_id BETWEEN $1 AND $2 GROUP BY 1)
            SELECT count(*) AS tickets,
                   count(*) FILTER (WHERE m.region = 'apac') AS owned_in_apac,
                   count(*) FILTER (WHERE c.n = 1 AND c.region = 'apac' AND c.agent_id = m.assignee_id)
                       AS one_new_owner,
                   count(*) FILTER (WHERE n.n = 1 AND n.to_agent = m.assignee_id
                                    AND n.from_region = 'emea' AND n.to_region = 'apac') AS one_handoff_note,
                   count(*) FILTER (WHERE n.n > 1) AS more_than_one_note,
                   count(*) FILTER (WHERE t.n = 1) AS one_team_changed
            FROM mine m LEFT JOIN claims c ON c.ticket_id = m.id LEFT JOIN notes n ON n.ticket_id = m.id
                        LEFT JOIN told t ON t.ticket_id = m.id
            """,
            first,
            last,
        )
        loads = await conn.fetchrow(
            """SELECT sum(load) FILTER (WHERE region_id = 'apac') AS apac_load,
                      sum(load) FILTER (WHERE id = ANY($1)) AS leaving_load,
                      (SELECT count(*) FROM agent_claims WHERE ticket_id BETWEEN $2 AND $3) AS claims
               FROM agents""",
            leaving,
            first,
            last,
        )
        notified = await conn.fetchval(
            """SELECT count(DISTINCT ticket_id) FROM notifications
               WHERE kind = 'handoff' AND ticket_id BETWEEN $1 AND $2""",
            first,
            last,
        )
    return {**dict(row), **{k: int(v or 0) for k, v in dict(loads).items()}, "receivers_notified": notified}


async def run(
    stack: Stack, tickets: int, baselines: list[str], seed_rate: float = SEED_RATE
) -> dict[str, Any]:
    lifecycle = LifecyclePolicy()
    lead = lifecycle.handoff_lead
    async with stack.pool.acquire() as conn:  # only the two teams below take tickets
        await conn.execute("UPDATE agents SET active = false")
    seeding = time.time()
    boundary = seeding + 20 + (tickets * (2 if "signal" in baselines else 1)) / seed_rate
    shift_end = datetime.fromtimestamp(boundary, UTC) + lead
    leaving = await add_shift_team(stack.pool, "emea", "emea", math.ceil(tickets / CAPACITY), shift_end)
    await add_shift_team(stack.pool, "apac", "apac", math.ceil(tickets * 1.1 / CAPACITY), None)
    owners = [
        AgentRef(id=a, name=a.title(), region="emea", shift_ends_at=shift_end, languages=["en"])
        for a in leaving
    ]
    never_due = datetime.now(UTC) + timedelta(days=3)  # no SLA warning during the run
    ids = await seed_open_tickets(
        stack,
        [
            OpenTicket(assignee=owners[n // CAPACITY], first_response_warning_at=never_due)
            for n in range(tickets)
        ],
        lifecycle,
    )
    first, last = min(ids), max(ids)
    if "signal" in baselines:
        await start_bare(
            stack,
            [baseline.Plan(key=f"sig{n}", wait_signal=True, steps=[["probe"]]) for n in range(tickets)],
            prefix="bare-handoff",
        )
    seeded = time.time()
    print(
        f"seeded {tickets} tickets in {seeded - seeding:.0f}s; handoff in {boundary - seeded:.0f}s",
        flush=True,
    )
    rss_open = stack.rss.sample()
    await asyncio.sleep(max(0.0, boundary - time.time()))
    cpu_before = stack.rss.cpu_seconds()
    moved = 0
    deadline = boundary + max(600.0, tickets / 2)
    while time.time() < deadline:
        async with stack.pool.acquire() as conn:
            moved = await conn.fetchval(
                """SELECT count(*) FROM tickets t WHERE t.id BETWEEN $1 AND $2 AND t.region = 'apac'
                   AND EXISTS (SELECT 1 FROM ticket_events e
                               WHERE e.ticket_id = t.id AND e.kind = 'handed_off')""",
                first,
                last,
            )
        if moved >= tickets:
            break
        await asyncio.sleep(0.25)
    drained = time.time()
    cpu_after = stack.rss.cpu_seconds()
    drain = drained - boundary
    await asyncio.sleep(3)  # the receivers' notifications go out beside the projection
    meridian = {
        "drain_seconds": round(drain, 2),
        "per_ticket_ms": round(drain / tickets * 1000, 2),
        "moved": moved,
        "seeding_overran": seeded > boundary,
        "cpu_seconds": {k: round(cpu_after[k] - cpu_before.get(k, 0), 1) for k in cpu_after},
        "proof": await proof(stack, first, last, leaving),
        # One ticket's whole history: its (seeded) start, then the handoff.
        "history_of_one_ticket": await history_counts(stack, ticket_workflow_id(first)),
    }
    results: dict[str, Any] = {}
    if "signal" in baselines:
        started = time.time()
        gate = asyncio.Semaphore(64)

        async def signal(n: int) -> None:
            async with gate:
                await stack.bare.get_workflow_handle(f"bare-handoff-sig{n}").signal(baseline.SIGNAL)

        sending = asyncio.gather(*(signal(n) for n in range(tickets)))
        times = await _wait_probes(stack, "probe", tickets, "sig", max(600.0, tickets / 2))
        await sending
        results["signal"] = _drain(times, started, tickets)
    if "same-work" in baselines:
        wake = time.time() + 15 + tickets / seed_rate
        steps = [["probe_claim"], ["project", "probe_notify"]]
        await start_bare(
            stack,
            [baseline.Plan(key=f"same{n}", sleep_until=wake, steps=steps) for n in range(tickets)],
            prefix="bare-handoff",
        )
        times = await _wait_probes(
            stack, "probe_notify", tickets, "same", wake - time.time() + max(600.0, tickets / 2)
        )
        results["same-work"] = _drain(times, wake, tickets)
    return {
        "tickets": tickets,
        "handoff_lead_minutes": lead.total_seconds() / 60,
        "meridian": meridian,
        "baselines": results,
        "ratios": {
            name: round(meridian["per_ticket_ms"] / b["per_ticket_ms"], 2) if b.get("per_ticket_ms") else None
            for name, b in results.items()
        },
        "target": "per-ticket cost <= 1.5 x the signal baseline",
        "rss_mb_with_open_tickets": rss_open,
        "rss_mb_peak": stack.rss.peaks_mb(),
    }


def _drain(times: list[float], started: float, expected: int) -> dict[str, Any]:
    if not times:
        return {"completed": 0}
    drain = max(times) - started
    return {
        "completed": len(times),
        "expected": expected,
        "drain_seconds": round(drain, 2),
        "per_ticket_ms": round(drain / expected * 1000, 2),
    }
