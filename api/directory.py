"""Regions, agents, customers and API tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated

import asyncpg
import structlog
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, Field
from temporalio.service import RPCError

from activities.assignment import run_dispatch
from api.auth import STAFF, Principal, Scope, new_token, require
from api.rosters import roster_changed
from api.schemas import TokenCreate, TokenOut
from api.signals import signal_tickets
from db import calendars, directory, tickets
from domain.directory import IDENT, SLUG, Agent, AgentFields, Customer, CustomerFields, Region, RegionFields
from domain.enums import Role

router = APIRouter(prefix="/v1", tags=["directory"])
log = structlog.get_logger(__name__)

RegionId = Annotated[str, Path(pattern=SLUG)]
Ident = Annotated[str, Path(pattern=IDENT)]
admin_only = require(Role.ADMIN)


class AgentCreate(AgentFields):
    id: str = Field(pattern=IDENT)


class AgentCreated(Agent):
    token: str = Field(description="the agent's API token; shown once")


class CustomerCreate(CustomerFields):
    id: str = Field(pattern=IDENT)


class CustomerCreated(Customer):
    token: str = Field(description="the customer's API token; shown once")


class Deleted(BaseModel):
    id: str


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


def _not_found(kind: str, ident: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{kind} {ident!r} not found")


async def _require_region(conn: asyncpg.Connection, region_id: str | None) -> None:
    if region_id is not None and await directory.get_region(conn, region_id) is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown region {region_id!r}")


async def _require_calendar(conn: asyncpg.Connection, calendar_id: str | None) -> None:
    if calendar_id is not None and await calendars.get_calendar(conn, calendar_id) is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown calendar {calendar_id!r}")


@asynccontextmanager
async def _pattern_of_region(body: AgentFields) -> AsyncIterator[None]:
    """The database refuses a shift pattern that is unknown or belongs to another region."""
    try:
        yield
    except asyncpg.ForeignKeyViolationError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"no shift pattern {body.shift_pattern_id!r} in region {body.region_id!r}",
        ) from None


async def _dispatch(request: Request) -> None:
    """An agent's capacity or shift may have changed: let queued tickets have them at once.

    The agent is already saved; if this fails, the housekeeping schedule dispatches within a minute.
    """
    try:
        await run_dispatch(
            request.app.state.client,
            _pool(request),
            datetime.now(UTC),
            request.app.state.settings.handoff_lead,
        )
    except (RPCError, asyncpg.PostgresError, OSError) as err:
        log.warning("dispatch after agent change failed", error=str(err))


# --- regions --------------------------------------------------------------------------------


@router.get("/regions", response_model=list[Region])
async def list_regions(request: Request, _: Principal = Depends(require(*STAFF))) -> list[Region]:
    async with _pool(request).acquire() as conn:
        return await directory.list_regions(conn)


@router.get("/regions/{region_id}", response_model=Region)
async def get_region(
    region_id: RegionId, request: Request, _: Principal = Depends(require(*STAFF))
) -> Region:
    async with _pool(request).acquire() as conn:
        region = await directory.get_region(conn, region_id)
    if region is None:
        raise _not_found("region", region_id)
    return region


@router.post("/regions", status_code=status.HTTP_201_CREATED, response_model=Region)
async def create_region(body: Region, request: Request, _: Principal = Depends(admin_only)) -> Region:
    async with _pool(request).acquire() as conn:
        if await directory.get_region(conn, body.id) is not None:
            raise HTTPException(status.HTTP_409_CONFLICT, f"region {body.id!r} already exists")
        return await directory.upsert_region(conn, body)


@router.put("/regions/{region_id}", response_model=Region)
async def update_region(
    region_id: RegionId, body: RegionFields, request: Request, _: Principal = Depends(admin_only)
) -> Region:
    async with _pool(request).acquire() as conn:
        region = await directory.update_region(conn, region_id, body)
    if region is None:
        raise _not_found("region", region_id)
    return region


@router.delete("/regions/{region_id}", response_model=Deleted)
async def delete_region(region_id: RegionId, request: Request, _: Principal = Depends(admin_only)) -> Deleted:
    async with _pool(request).acquire() as conn:
        try:
            deleted = await directory.delete_region(conn, region_id)
        except asyncpg.ForeignKeyViolationError:
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"region {region_id!r} still has agents or customers"
            ) from None
    if not deleted:
        raise _not_found("region", region_id)
    return Deleted(id=region_id)


# --- agents ---------------------------------------------------------------------------------


@router.get("/agents", response_model=list[Agent])
async def list_agents(
    request: Request,
    region: Annotated[str | None, Query(pattern=SLUG)] = None,
    _: Principal = Depends(require(*STAFF)),
) -> list[Agent]:
    async with _pool(request).acquire() as conn:
        return await directory.list_agents(conn, region)


@router.get("/agents/{agent_id}", response_model=Agent)
async def get_agent(agent_id: Ident, request: Request, _: Principal = Depends(require(*STAFF))) -> Agent:
    async with _pool(request).acquire() as conn:
        agent = await directory.get_agent(conn, agent_id)
    if agent is None:
        raise _not_found("agent", agent_id)
    return agent


@router.post("/agents", status_code=status.HTTP_201_CREATED, response_model=AgentCreated)
async def create_agent(
    body: AgentCreate, request: Request, _: Principal = Depends(admin_only)
) -> AgentCreated:
    token = new_token("agt")
    async with _pool(request).acquire() as conn, conn.transaction():
        await _require_region(conn, body.region_id)
        async with _pattern_of_region(body):
            agent = await directory.insert_agent(conn, body.id, body)
        if agent is None:
            raise HTTPException(status.HTTP_409_CONFLICT, f"agent {body.id!r} already exists")
        await directory.store_token(conn, token, Role.AGENT, agent.id, label=f"agent {agent.id}")
    await _dispatch(request)
    return AgentCreated(**agent.model_dump(), token=token)


@router.put("/agents/{agent_id}", response_model=Agent)
async def update_agent(
    agent_id: Ident, body: AgentFields, request: Request, _: Principal = Depends(admin_only)
) -> Agent:
    async with _pool(request).acquire() as conn:
        if await directory.get_agent(conn, agent_id) is None:
            raise _not_found("agent", agent_id)
        await _require_region(conn, body.region_id)
        async with _pattern_of_region(body):
            agent = await directory.upsert_agent(conn, agent_id, body)
    await roster_changed(request, agent_id)
    return agent


@router.delete("/agents/{agent_id}", response_model=Deleted)
async def deactivate_agent(agent_id: Ident, request: Request, _: Principal = Depends(admin_only)) -> Deleted:
    """Agents are deactivated, not erased: the timelines they wrote keep their name."""
    async with _pool(request).acquire() as conn:
        if not await directory.deactivate_agent(conn, agent_id):
            raise _not_found("agent", agent_id)
    return Deleted(id=agent_id)


# --- customers ------------------------------------------------------------------------------


@router.get("/customers", response_model=list[Customer])
async def list_customers(request: Request, _: Principal = Depends(require(*STAFF))) -> list[Customer]:
    async with _pool(request).acquire() as conn:
        return await directory.list_customers(conn)


@router.get("/customers/{customer_id}", response_model=Customer)
async def get_customer(
    customer_id: Ident, request: Request, principal: Principal = Depends(require(*STAFF, Role.CUSTOMER))
) -> Customer:
    if principal.role is Role.CUSTOMER and principal.subject_id != customer_id:
        raise _not_found("customer", customer_id)
    async with _pool(request).acquire() as conn:
        customer = await directory.get_customer(conn, customer_id)
    if customer is None:
        raise _not_found("customer", customer_id)
    return customer


@router.post("/customers", status_code=status.HTTP_201_CREATED, response_model=CustomerCreated)
async def create_customer(
    body: CustomerCreate, request: Request, _: Principal = Depends(require(Role.ADMIN, Role.INTEGRATION))
) -> CustomerCreated:
    token = new_token("cus")
    async with _pool(request).acquire() as conn, conn.transaction():
        await _require_region(conn, body.region_id)
        await _require_calendar(conn, body.calendar_id)
        customer = await directory.insert_customer(conn, body.id, body)
        if customer is None:
            raise HTTPException(status.HTTP_409_CONFLICT, f"customer {body.id!r} already exists")
        await directory.store_token(conn, token, Role.CUSTOMER, customer.id, label=f"customer {customer.id}")
    return CustomerCreated(**customer.model_dump(), token=token)


@router.put("/customers/{customer_id}", response_model=Customer)
async def update_customer(
    customer_id: Ident,
    body: CustomerFields,
    request: Request,
    _: Principal = Depends(require(Role.ADMIN, Role.INTEGRATION)),
) -> Customer:
    async with _pool(request).acquire() as conn:
        if await directory.get_customer(conn, customer_id) is None:
            raise _not_found("customer", customer_id)
        await _require_region(conn, body.region_id)
        await _require_calendar(conn, body.calendar_id)
        customer = await directory.upsert_customer(conn, customer_id, body)
        ticket_ids = await tickets.open_ticket_ids(conn, customer_id=customer_id)
    # A new tier or contract calendar changes the SLA of the customer's running tickets.
    await signal_tickets(request, ticket_ids, "sla_rules_changed")
    return customer


# --- tokens ---------------------------------------------------------------------------------


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenOut)
async def create_token(
    body: TokenCreate, request: Request, response: Response, _: Principal = Depends(admin_only)
) -> TokenOut:
    if (body.role is Role.INTEGRATION) != bool(body.scopes):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "integration tokens need scopes, one or more of: " + ", ".join(Scope)
            if body.role is Role.INTEGRATION
            else f"only integration tokens have scopes; a {body.role.value} token's role decides",
        )
    async with _pool(request).acquire() as conn:
        if body.role is Role.AGENT and (
            body.subject_id is None or await directory.get_agent(conn, body.subject_id) is None
        ):
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, "an agent token needs an existing agent subject_id"
            )
        if body.role is Role.CUSTOMER and (
            body.subject_id is None or await directory.get_customer(conn, body.subject_id) is None
        ):
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "a customer token needs an existing customer subject_id",
            )
        token = new_token(body.role.value[:3])
        await directory.store_token(conn, token, body.role, body.subject_id, body.label, body.scopes)
    return TokenOut(token=token, role=body.role, subject_id=body.subject_id, scopes=sorted(set(body.scopes)))
