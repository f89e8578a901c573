"""Assignment: claiming agents, releasing them, and draining the queue when capacity frees."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg
from pydantic import BaseModel
from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from db import assignment
from db.assignment import AssignmentRefused, ClaimOutcome, Offer
from domain.enums import Priority
from domain.errors import AGENT_UNAVAILABLE, refuse
from domain.routing import LanguageMatch
from domain.tickets import OFFER_SIGNAL, AgentRef, AssignmentOffer, ticket_workflow_id

# An offer not yet confirmed after this long is sent again by the scheduled dispatcher.
STALE_OFFER_SECONDS = 30.0


class ClaimBestRequest(BaseModel):
    ticket_id: int
    language: str
    module: str
    priority: Priority
    home_region: str | None
    at: datetime
    queued_since: datetime
    preferred_agent_id: str | None = None
    match: LanguageMatch = LanguageMatch.FLUENT
    customer_id: str | None = None
    min_shift_left: timedelta = timedelta(0)


class ClaimAgentRequest(BaseModel):
    ticket_id: int
    agent_id: str
    at: datetime
    # Tickets started before the workflow dispatched on its own still ask the activity to.
    dispatch: bool = True


class ReleaseRequest(BaseModel):
    ticket_id: int
    at: datetime
    dispatch: bool = True


class HandoffRequest(BaseModel):
    ticket_id: int
    from_agent_id: str
    language: str
    module: str
    priority: Priority
    home_region: str | None
    at: datetime
    lead: timedelta
    match: LanguageMatch = LanguageMatch.FLUENT


class HandoffOutcome(BaseModel):
    claim: ClaimOutcome
    region_name: str | None = None


class ShiftEndRequest(BaseModel):
    agent_id: str
    at: datetime


class DispatchResult(BaseModel):
    offered: int
    resent: int


async def deliver_offers(client: Client, pool: asyncpg.Pool, offers: list[Offer]) -> int:
    """Tell each ticket workflow about its agent; give the slot back if the ticket is gone."""
    delivered = 0
    for offer in offers:
        handle = client.get_workflow_handle(ticket_workflow_id(offer.ticket_id))
        try:
            await handle.signal(OFFER_SIGNAL, AssignmentOffer(**offer.model_dump()))
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            async with pool.acquire() as conn:
                await assignment.withdraw_offer(conn, offer)
            continue
        async with pool.acquire() as conn:
            await assignment.forget_offer(conn, offer.offer_id)
        delivered += 1
    return delivered


async def run_dispatch(
    client: Client, pool: asyncpg.Pool, at: datetime, min_shift_left: timedelta = timedelta(0)
) -> DispatchResult:
    """Resend lost offers, then give queued tickets to agents with room who are not about to leave."""
    async with pool.acquire() as conn:
        resend = await assignment.stale_offers(conn, STALE_OFFER_SECONDS)
        offers = await assignment.dispatch_queue(conn, at, min_shift_left=min_shift_left)
    await deliver_offers(client, pool, resend + offers)
    return DispatchResult(offered=len(offers), resent=len(resend))


class AssignmentActivities:
    def __init__(self, pool: asyncpg.Pool, client: Client, min_shift_left: timedelta = timedelta(0)):
        self.pool = pool
        self.client = client
        # Agents this close to their shift end get no new tickets (they would hand them off at once).
        self.min_shift_left = min_shift_left

    @activity.defn(name="claim_best_agent")
    async def claim_best_agent(self, request: ClaimBestRequest) -> ClaimOutcome:
        async with self.pool.acquire() as conn:
            return await assignment.claim_best_agent(conn, **request.model_dump())

    @activity.defn(name="claim_agent")
    async def claim_agent(self, request: ClaimAgentRequest) -> AgentRef:
        async with self.pool.acquire() as conn:
            try:
                agent, freed_another = await assignment.claim_agent(
                    conn, ticket_id=request.ticket_id, agent_id=request.agent_id, at=request.at
                )
            except AssignmentRefused as refused:
                raise refuse(AGENT_UNAVAILABLE, str(refused)) from None
        if freed_another and request.dispatch:
            await run_dispatch(self.client, self.pool, request.at, self.min_shift_left)
        return agent

    @activity.defn(name="release_agent")
    async def release_agent(self, request: ReleaseRequest) -> str | None:
        """Free the ticket's agent, then hand their slot to the queue at once."""
        async with self.pool.acquire() as conn:
            released = await assignment.release_agent(conn, request.ticket_id)
        if released is not None and request.dispatch:
            await run_dispatch(self.client, self.pool, request.at, self.min_shift_left)
        return released

    @activity.defn(name="decline_offer")
    async def decline_offer(self, offer: AssignmentOffer) -> None:
        """The ticket already had an agent when the offer arrived: return the offered slot."""
        async with self.pool.acquire() as conn:
            await assignment.withdraw_offer(conn, Offer(**offer.model_dump()))

    @activity.defn(name="hand_off")
    async def hand_off(self, request: HandoffRequest) -> HandoffOutcome:
        async with self.pool.acquire() as conn:
            outcome = await assignment.hand_off(conn, **request.model_dump())
            region = await conn.fetchval(
                "SELECT name FROM regions WHERE id = $1", outcome.agent.region if outcome.agent else None
            )
        return HandoffOutcome(claim=outcome, region_name=region)

    @activity.defn(name="current_shift")
    async def current_shift(self, request: ShiftEndRequest) -> AgentRef | None:
        """The agent as the roster has them now, with the end of their current shift."""
        async with self.pool.acquire() as conn:
            return await assignment.shift_end_of(conn, request.agent_id, request.at)

    @activity.defn(name="dispatch_queue")
    async def dispatch_queue(self, at: datetime) -> DispatchResult:
        return await run_dispatch(self.client, self.pool, at, self.min_shift_left)
