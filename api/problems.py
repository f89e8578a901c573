"""Problem records: groups of resolved tickets with one root cause (repeat issues)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status

from api.auth import STAFF, Principal, require
from db import problems
from domain.problems import Problem

router = APIRouter(prefix="/v1", tags=["problems"])


@router.get("/problems", response_model=list[Problem])
async def list_problems(
    request: Request,
    state: Annotated[Literal["open", "sent", "closed"] | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    _: Principal = Depends(require(*STAFF)),
) -> list[Problem]:
    """Newest first, each with its tickets and, once filed, the tracker's issue key."""
    async with request.app.state.pool.acquire() as conn:
        return await problems.list_problems(conn, state, limit)


@router.get("/problems/{problem_id}", response_model=Problem)
async def get_problem(
    problem_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    request: Request,
    _: Principal = Depends(require(*STAFF)),
) -> Problem:
    async with request.app.state.pool.acquire() as conn:
        problem = await problems.get_problem(conn, problem_id)
    if problem is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"problem {problem_id} not found")
    return problem
