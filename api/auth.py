"""Bearer tokens with roles. The admin token comes from settings; every other token is stored hashed.

Integration tokens also carry scopes: an endpoint needs `<area>:read` (GET) or `<area>:write`
(anything else), the area following from the endpoint's OpenAPI tag (docs/security.md).
"""

from __future__ import annotations

import hmac
import secrets
from enum import StrEnum

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from db import directory
from domain.enums import ActorType, Role
from domain.tickets import Actor

_bearer = HTTPBearer(auto_error=False)


class Scope(StrEnum):
    TICKETS_READ = "tickets:read"
    TICKETS_WRITE = "tickets:write"
    DIRECTORY_READ = "directory:read"
    DIRECTORY_WRITE = "directory:write"
    SCHEDULES_READ = "schedules:read"
    SCHEDULES_WRITE = "schedules:write"
    KB_READ = "kb:read"
    KB_WRITE = "kb:write"
    QUALITY_READ = "quality:read"
    QUALITY_WRITE = "quality:write"
    REPORTS_READ = "reports:read"


# Each router's tag names its area; an endpoint of a tag not listed here is closed to integrations.
SCOPE_AREAS = {
    "tickets": "tickets",
    "directory": "directory",
    "calendars": "schedules",
    "sla": "schedules",
    "rosters": "schedules",
    "knowledge base": "kb",
    "translation": "kb",
    "satisfaction": "quality",
    "quality": "quality",
    "kpis": "reports",
    "problems": "reports",
}


def scope_needed(request: Request) -> str | None:
    """`<area>:read` or `<area>:write` for the endpoint this request reached (None: no area)."""
    route = request.scope.get("route")
    tags = getattr(route, "tags", None) or []
    areas = [SCOPE_AREAS[t] for t in tags if t in SCOPE_AREAS]
    if not areas:
        return None
    return f"{areas[-1]}:{'read' if request.method in ('GET', 'HEAD') else 'write'}"


class Principal(BaseModel):
    role: Role
    subject_id: str | None = None
    scopes: frozenset[str] = frozenset()

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
    return Principal(role=Role(row["role"]), subject_id=row["subject_id"], scopes=frozenset(row["scopes"]))


def require(*roles: Role):
    async def dependency(request: Request, principal: Principal = Depends(authenticate)) -> Principal:
        if principal.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs one of these roles: {allowed}")
        if principal.role is Role.INTEGRATION:
            needed = scope_needed(request)
            if needed is None:
                raise HTTPException(status.HTTP_403_FORBIDDEN, "integration tokens cannot use this endpoint")
            if needed not in principal.scopes:
                raise HTTPException(status.HTTP_403_FORBIDDEN, f"this token lacks the scope {needed}")
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
