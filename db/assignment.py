"""Claiming agents for tickets, atomically, so no agent is ever booked past their capacity.

`agents.load` counts the rows of `agent_claims` for that agent; both change only here and in
one transaction. Taking capacity is a single conditional UPDATE, which PostgreSQL serialises
per agent row, so two tickets racing for the last slot cannot both win.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import asyncpg
from pydantic import BaseModel

from domain.enums import LanguageLevel, Priority
from domain.rosters import SHIFT_LOOKAHEAD, RosterOverride, Rotation
from domain.routing import AgentLanguage, Candidate, LanguageMatch, Shift, rank_candidates
from domain.tickets import AgentRef


def rotation_from_row(row: asyncpg.Record) -> Rotation | None:
    """The agent's rotation, from a row joined with their shift pattern (`pattern_*` columns)."""
    if row["shift_pattern_id"] is None:
        return None
    return Rotation(
        pattern_id=row["shift_pattern_id"],
        anchor=row["pattern_anchor"],
        weeks=row["pattern_weeks"],
        offset=row["rotation_offset"],
    )


def override_from_row(row: asyncpg.Record) -> RosterOverride:
    return RosterOverride(
        id=str(row["id"]),
        agent_id=row["agent_id"],
        kind=row["kind"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        reason=row["reason"],
    )


class AssignmentRefused(Exception):
    """A specific agent cannot take the ticket; the message says why."""


class ClaimOutcome(BaseModel):
    agent: AgentRef | None
    queued: bool = False
    reason: str
    machine_translation: bool = False  # the agent does not speak the ticket's language


class Offer(BaseModel):
    offer_id: str
    ticket_id: int
    agent: AgentRef
    machine_translation: bool = False


_AGENTS = """
    SELECT a.id, a.name, a.region_id, r.timezone, a.languages, a.skills, a.capacity, a.load,
           a.shift_days, a.shift_start, a.shift_end, a.active,
           a.shift_pattern_id, a.rotation_offset, p.anchor AS pattern_anchor, p.weeks AS pattern_weeks
    FROM agents a JOIN regions r ON r.id = a.region_id
    LEFT JOIN shift_patterns p ON p.id = a.shift_pattern_id
"""
_CANDIDATES = _AGENTS + " WHERE a.active AND a.load < a.capacity"


def _candidate(row: asyncpg.Record) -> Candidate:
    return Candidate(
        id=row["id"],
        name=row["name"],
        region=row["region_id"],
        timezone=row["timezone"],
        languages=[AgentLanguage(**lang) for lang in row["languages"]],
        skills=row["skills"],
        capacity=row["capacity"],
        load=row["load"],
        shift=Shift(days=row["shift_days"], start=row["shift_start"], end=row["shift_end"]),
        rotation=rotation_from_row(row),
        active=row["active"],
    )


async def _overrides(conn: asyncpg.Connection, agent_ids: list[str], at: datetime) -> dict[str, list]:
    """Overrides that matter from `at` until the furthest shift end we look for."""
    rows = await conn.fetch(
        """SELECT * FROM roster_overrides WHERE agent_id = ANY($1::text[]) AND ends_at > $2 AND starts_at < $3
           ORDER BY starts_at""",
        agent_ids,
        at,
        at + SHIFT_LOOKAHEAD,
    )
    found: dict[str, list] = {}
    for r in rows:
        found.setdefault(r["agent_id"], []).append(override_from_row(r))
    return found


async def _with_overrides(
    conn: asyncpg.Connection, candidates: list[Candidate], at: datetime
) -> list[Candidate]:
    overrides = await _overrides(conn, [c.id for c in candidates], at)
    for candidate in candidates:
        candidate.overrides = overrides.get(candidate.id, [])
    return candidates


async def _available_candidates(
    conn: asyncpg.Connection, at: datetime, language: str | None = None
) -> list[Candidate]:
    if language is None:
        rows = await conn.fetch(_CANDIDATES)
    else:
        rows = await conn.fetch(
            _CANDIDATES + " AND a.languages @> jsonb_build_array(jsonb_build_object('code', $1::text))",
            language,
        )
    return await _with_overrides(conn, [_candidate(r) for r in rows], at)


async def agent_candidate(conn: asyncpg.Connection, agent_id: str, at: datetime) -> Candidate | None:
    """One agent with their roster around `at`, whatever their load."""
    row = await conn.fetchrow(_AGENTS + " WHERE a.id = $1", agent_id)
    if row is None:
        return None
    return (await _with_overrides(conn, [_candidate(row)], at))[0]


async def _take_capacity(conn: asyncpg.Connection, agent_id: str) -> bool:
    row = await conn.fetchrow(
        "UPDATE agents SET load = load + 1 WHERE id = $1 AND active AND load < capacity RETURNING id",
        agent_id,
    )
    return row is not None


async def _release(conn: asyncpg.Connection, ticket_id: int) -> str | None:
    agent_id = await conn.fetchval(
        "DELETE FROM agent_claims WHERE ticket_id = $1 RETURNING agent_id", ticket_id
    )
    if agent_id is not None:
        await conn.execute("UPDATE agents SET load = greatest(load - 1, 0) WHERE id = $1", agent_id)
    return agent_id


async def _record_claim(conn: asyncpg.Connection, ticket_id: int, agent_id: str) -> None:
    await _release(conn, ticket_id)
    await conn.execute("INSERT INTO agent_claims (ticket_id, agent_id) VALUES ($1, $2)", ticket_id, agent_id)
    await conn.execute("DELETE FROM ticket_queue WHERE ticket_id = $1", ticket_id)


async def _current_claim(conn: asyncpg.Connection, ticket_id: int) -> AgentRef | None:
    row = await conn.fetchrow(
        """SELECT a.id, a.name, a.region_id FROM agent_claims c JOIN agents a ON a.id = c.agent_id
           WHERE c.ticket_id = $1""",
        ticket_id,
    )
    return AgentRef(id=row["id"], name=row["name"], region=row["region_id"]) if row else None


def _ref(candidate: Candidate, at: datetime) -> AgentRef:
    return AgentRef(
        id=candidate.id,
        name=candidate.name,
        region=candidate.region,
        shift_ends_at=candidate.shift_ends_at(at),
        languages=_native_first(candidate.languages),
    )


def _native_first(languages: list[AgentLanguage]) -> list[str]:
    return [lang.code for lang in sorted(languages, key=lambda lang: lang.level is not LanguageLevel.NATIVE)]


def _why(candidate: Candidate, language: str, module: str) -> str:
    level = candidate.speaks(language)
    return (
        f"{candidate.region}/{candidate.name}: {language} {level.level.value if level else '?'}, "
        f"{module} L{candidate.skills.get(module, 0)}, load {candidate.load}/{candidate.capacity}"
    )


async def claim_best_agent(
    conn: asyncpg.Connection,
    *,
    ticket_id: int,
    language: str,
    module: str,
    priority: Priority,
    home_region: str | None,
    at: datetime,
    queued_since: datetime,
    preferred_agent_id: str | None = None,
    match: LanguageMatch = LanguageMatch.FLUENT,
    customer_id: str | None = None,
    min_shift_left: timedelta = timedelta(0),
) -> ClaimOutcome:
    """Claim the best on-shift agent, or put the ticket in the queue. Safe to retry."""
    async with conn.transaction():
        existing = await _current_claim(conn, ticket_id)
        if existing is not None:
            return ClaimOutcome(agent=existing, reason=f"{existing.region}/{existing.name}: already claimed")
        if preferred_agent_id is None and customer_id is not None:
            preferred_agent_id = await _last_engineer_of(conn, customer_id, ticket_id)
        spoken = None if match is LanguageMatch.ANY else language
        ranked = rank_candidates(
            await _available_candidates(conn, at, spoken),
            language,
            module,
            at,
            home_region,
            match,
            min_shift_left,
        )
        # The engineer who already knows the ticket (or this customer) goes first when they can take it.
        ranked.sort(key=lambda c: c.id != preferred_agent_id)
        for candidate in ranked:
            if await _take_capacity(conn, candidate.id):
                await _record_claim(conn, ticket_id, candidate.id)
                sticky = " (handled this customer before)" if candidate.id == preferred_agent_id else ""
                return ClaimOutcome(
                    agent=_ref(candidate, at),
                    reason=_why(candidate, language, module) + sticky,
                    machine_translation=candidate.speaks(language) is None,
                )
        await conn.execute(
            """INSERT INTO ticket_queue (ticket_id, home_region, language, module, priority, queued_at, match)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (ticket_id) DO UPDATE SET priority = EXCLUDED.priority, match = EXCLUDED.match""",
            ticket_id,
            home_region,
            language,
            module,
            priority.value,
            queued_since,
            match.value,
        )
        return ClaimOutcome(
            agent=None,
            queued=True,
            reason=f"no agent on shift with {language} ({match.value}) and {module} has room",
        )


async def _last_engineer_of(conn: asyncpg.Connection, customer_id: str, ticket_id: int) -> str | None:
    """Who handled this customer's most recent other ticket."""
    return await conn.fetchval(
        """SELECT assignee_id FROM tickets WHERE customer_id = $1 AND id <> $2 AND assignee_id IS NOT NULL
           ORDER BY created_at DESC LIMIT 1""",
        customer_id,
        ticket_id,
    )


async def claim_agent(
    conn: asyncpg.Connection, *, ticket_id: int, agent_id: str, at: datetime | None = None
) -> tuple[AgentRef, bool]:
    """Claim one named agent (a manual assignment); returns (agent, whether another agent was freed).

    Raises AssignmentRefused with the reason."""
    async with conn.transaction():
        existing = await _current_claim(conn, ticket_id)
        if existing is not None and existing.id == agent_id:
            return await _ref_at(conn, existing, at), False
        row = await conn.fetchrow(
            "SELECT id, name, region_id, active, load, capacity FROM agents WHERE id = $1 FOR UPDATE",
            agent_id,
        )
        if row is None:
            raise AssignmentRefused(f"unknown agent {agent_id!r}")
        if not row["active"]:
            raise AssignmentRefused(f"agent {agent_id!r} is not active")
        if not await _take_capacity(conn, agent_id):
            raise AssignmentRefused(f"agent {agent_id!r} is at capacity ({row['load']}/{row['capacity']})")
        await _record_claim(conn, ticket_id, agent_id)
        claimed = AgentRef(id=row["id"], name=row["name"], region=row["region_id"])
        return await _ref_at(conn, claimed, at), existing is not None


async def _ref_at(conn: asyncpg.Connection, agent: AgentRef, at: datetime | None) -> AgentRef:
    """The agent with the end of their current shift, when we know the time."""
    if at is None:
        return agent
    candidate = await agent_candidate(conn, agent.id, at)
    return _ref(candidate, at) if candidate is not None else agent


async def shift_end_of(conn: asyncpg.Connection, agent_id: str, at: datetime) -> AgentRef | None:
    candidate = await agent_candidate(conn, agent_id, at)
    return _ref(candidate, at) if candidate is not None else None


async def hand_off(
    conn: asyncpg.Connection,
    *,
    ticket_id: int,
    from_agent_id: str,
    language: str,
    module: str,
    priority: Priority,
    home_region: str | None,
    at: datetime,
    lead: timedelta,
    match: LanguageMatch = LanguageMatch.FLUENT,
) -> ClaimOutcome:
    """Move a ticket from an agent whose shift ends to one who stays on long enough; else queue it.

    Safe to retry: once the claim has moved, a retry finds it with the new agent and returns it.
    """
    async with conn.transaction():
        existing = await _current_claim(conn, ticket_id)
        if existing is not None and existing.id != from_agent_id:
            return ClaimOutcome(agent=await _ref_at(conn, existing, at), reason="already handed off")
        spoken = None if match is LanguageMatch.ANY else language
        candidates = [c for c in await _available_candidates(conn, at, spoken) if c.id != from_agent_id]
        for candidate in rank_candidates(candidates, language, module, at, home_region, match, lead):
            if await _take_capacity(conn, candidate.id):
                await _record_claim(conn, ticket_id, candidate.id)
                return ClaimOutcome(
                    agent=_ref(candidate, at),
                    reason=_why(candidate, language, module),
                    machine_translation=candidate.speaks(language) is None,
                )
        await _release(conn, ticket_id)
        await conn.execute(
            """INSERT INTO ticket_queue (ticket_id, home_region, language, module, priority, queued_at, match)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (ticket_id) DO UPDATE SET priority = EXCLUDED.priority, match = EXCLUDED.match""",
            ticket_id,
            home_region,
            language,
            module,
            priority.value,
            at,
            match.value,
        )
        return ClaimOutcome(
            agent=None,
            queued=True,
            reason=f"coverage gap: nobody on shift with {language} and {module} has room",
        )


async def release_agent(conn: asyncpg.Connection, ticket_id: int) -> str | None:
    """Free the ticket's agent and take it out of the queue. Safe to retry."""
    async with conn.transaction():
        agent_id = await _release(conn, ticket_id)
        await conn.execute("DELETE FROM ticket_queue WHERE ticket_id = $1", ticket_id)
        return agent_id


async def dispatch_queue(
    conn: asyncpg.Connection, at: datetime, limit: int = 5_000, min_shift_left: timedelta = timedelta(0)
) -> list[Offer]:
    """Give queued tickets, in priority-then-age order, to agents who have room now.

    Each claim is written with an offer row in the same transaction; the caller tells the ticket
    workflow and then deletes the offer, so a crash in between only delays the news.
    """
    offers: list[Offer] = []
    async with conn.transaction():
        queued = await conn.fetch(
            """SELECT * FROM ticket_queue ORDER BY priority, queued_at, ticket_id
               LIMIT $1 FOR UPDATE SKIP LOCKED""",
            limit,
        )
        if not queued:
            return offers
        candidates = await _available_candidates(conn, at)
        for row in queued:
            if not any(c.load < c.capacity for c in candidates):
                break  # nobody has room: the rest of the queue waits
            ranked = rank_candidates(
                candidates,
                row["language"],
                row["module"],
                at,
                row["home_region"],
                LanguageMatch(row["match"]),
                min_shift_left,
            )
            for candidate in ranked:
                if await _take_capacity(conn, candidate.id):
                    candidate.load += 1
                    await _record_claim(conn, row["ticket_id"], candidate.id)
                    offer = Offer(
                        offer_id=str(uuid.uuid4()),
                        ticket_id=row["ticket_id"],
                        agent=_ref(candidate, at),
                        machine_translation=candidate.speaks(row["language"]) is None,
                    )
                    await conn.execute(
                        "INSERT INTO assignment_offers (offer_id, ticket_id, agent_id) VALUES ($1, $2, $3)",
                        uuid.UUID(offer.offer_id),
                        offer.ticket_id,
                        candidate.id,
                    )
                    offers.append(offer)
                    break
    return offers


async def stale_offers(conn: asyncpg.Connection, older_than_seconds: float) -> list[Offer]:
    rows = await conn.fetch(
        """SELECT o.offer_id, o.ticket_id, a.id, a.name, a.region_id, a.languages
           FROM assignment_offers o JOIN agents a ON a.id = o.agent_id
           WHERE o.created_at < now() - make_interval(secs => $1)""",
        older_than_seconds,
    )
    return [
        Offer(
            offer_id=str(r["offer_id"]),
            ticket_id=r["ticket_id"],
            agent=AgentRef(
                id=r["id"],
                name=r["name"],
                region=r["region_id"],
                languages=_native_first([AgentLanguage(**lang) for lang in r["languages"]]),
            ),
        )
        for r in rows
    ]


async def forget_offer(conn: asyncpg.Connection, offer_id: str) -> None:
    await conn.execute("DELETE FROM assignment_offers WHERE offer_id = $1", uuid.UUID(offer_id))


async def withdraw_offer(conn: asyncpg.Connection, offer: Offer) -> None:
    """The ticket could not take the offer (closed meanwhile): give the agent's slot back."""
    async with conn.transaction():
        claimed = await _current_claim(conn, offer.ticket_id)
        if claimed is not None and claimed.id == offer.agent.id:
            await _release(conn, offer.ticket_id)
        await forget_offer(conn, offer.offer_id)
