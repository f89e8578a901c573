"""Bearer tokens with roles. The admin token comes from settings; every other token is stored hashed."""

from __future__ import annotations

import hmac
import secrets

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from db import directory
from domain.enums import ActorType, Role
from domain.tickets import Actor

_bearer = HTTPBearer(auto_error=False)


class Principal(BaseModel):
    role: Role
    subject_id: str | None = None

    @property
    def idempotency_scope(self) -> str:
        return f"{self.role.value}:{self.subject_id or '-'}"


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(24)}"


async def authenticate(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    token = credentials.credentials
    admin_token = request.app.state.settings.admin_token
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal(role=Role.ADMIN, subject_id="admin")
    async with request.app.state.pool.acquire() as conn:
        row = await directory.find_token(conn, token)
    if row is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"}
        )
    return Principal(role=Role(row["role"]), subject_id=row["subject_id"])


def require(*roles: Role):
    async def dependency(principal: Principal = Depends(authenticate)) -> Principal:
        if principal.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs one of these roles: {allowed}")
        return principal

    return dependency


STAFF = (Role.ADMIN, Role.INTEGRATION, Role.AGENT)
ANYONE = (Role.ADMIN, Role.INTEGRATION, Role.AGENT, Role.CUSTOMER)


async def actor_for(request: Request, principal: Principal) -> Actor:
    """Who the timeline will say acted, with the region they act from."""
    async with request.app.state.pool.acquire() as conn:
        if principal.role is Role.AGENT:
            agent = await directory.get_agent(conn, principal.subject_id)
            if agent is None:
                raise HTTPException(status.HTTP_403_FORBIDDEN, "this token's agent no longer exists")
            return Actor(type=ActorType.AGENT, id=agent.id, name=agent.name, region=agent.region_id)
        if principal.role is Role.CUSTOMER:
            customer = await directory.get_customer(conn, principal.subject_id)
            if customer is None:
                raise HTTPException(status.HTTP_403_FORBIDDEN, "this token's customer no longer exists")
            return Actor(
                type=ActorType.CUSTOMER, id=customer.id, name=customer.name, region=customer.region_id
            )
    return Actor(type=ActorType(principal.role.value), id=principal.subject_id)
