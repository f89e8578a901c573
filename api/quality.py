"""Quality alert rules (stored in PostgreSQL, evaluated by a Temporal Schedule) and their alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import BaseModel

from api.auth import STAFF, Principal, require
from db import quality
from domain.enums import Role
from domain.quality import QualityRule, QualityRuleFields

router = APIRouter(prefix="/v1/quality", tags=["quality"])
RuleId = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{1,63}$")]


class QualityAlert(BaseModel):
    id: int
    rule_id: str
    kind: str
    region: str | None
    module: str | None
    language: str | None
    threshold: float
    opened_at: datetime
    resolved_at: datetime | None
    value: float | None
    message: str
    details: dict


@router.get("/rules", response_model=list[QualityRule])
async def list_rules(request: Request, _: Principal = Depends(require(*STAFF))) -> list[QualityRule]:
    async with request.app.state.pool.acquire() as conn:
        return await quality.list_rules(conn)


@router.put("/rules/{rule_id}", response_model=QualityRule)
async def put_rule(
    rule_id: RuleId, body: QualityRuleFields, request: Request, _: Principal = Depends(require(Role.ADMIN))
) -> QualityRule:
    """Creates or replaces the rule, e.g. `{"kind": "first_response_p90", "region": "apac",
    "threshold": 30, "window_minutes": 60, "sustain_minutes": 30}`."""
    async with request.app.state.pool.acquire() as conn:
        try:
            return await quality.put_rule(conn, rule_id, body)
        except asyncpg.ForeignKeyViolationError:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"unknown region {body.region!r} or module {body.module!r}",
            ) from None


@router.delete("/rules/{rule_id}", response_model=dict)
async def delete_rule(rule_id: RuleId, request: Request, _: Principal = Depends(require(Role.ADMIN))) -> dict:
    async with request.app.state.pool.acquire() as conn:
        if not await quality.delete_rule(conn, rule_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no quality rule {rule_id!r}")
    return {"id": rule_id}


@router.get("/alerts", response_model=list[QualityAlert])
async def list_alerts(
    request: Request,
    open_only: Annotated[bool, Query(alias="open")] = True,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    _: Principal = Depends(require(*STAFF)),
) -> list[QualityAlert]:
    async with request.app.state.pool.acquire() as conn:
        return [QualityAlert(**dict(r)) for r in await quality.list_alerts(conn, open_only, limit)]
