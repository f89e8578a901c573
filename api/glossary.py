"""The glossary: product and API names that machine translation must leave untouched."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status

from api.auth import STAFF, Principal, require
from db import translations
from domain.enums import Role
from domain.text import PlainText
from domain.translation import GlossaryTerm, GlossaryTermFields

router = APIRouter(prefix="/v1/glossary", tags=["translation"])


@router.get("", response_model=list[GlossaryTerm])
async def list_terms(request: Request, _: Principal = Depends(require(*STAFF))) -> list[GlossaryTerm]:
    async with request.app.state.pool.acquire() as conn:
        return await translations.list_glossary_terms(conn)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=GlossaryTerm)
async def add_term(
    body: GlossaryTermFields, request: Request, _: Principal = Depends(require(Role.ADMIN))
) -> GlossaryTerm:
    """Matched case-sensitively as a whole term; adding a known term updates its note."""
    async with request.app.state.pool.acquire() as conn:
        return await translations.add_glossary_term(conn, body)


@router.delete("", response_model=dict)
async def delete_term(
    request: Request,
    term: Annotated[PlainText, Query(min_length=1, max_length=200)],
    _: Principal = Depends(require(Role.ADMIN)),
) -> dict:
    """By query parameter, since terms such as `getUserToken()` or `a/b` do not fit in a path."""
    async with request.app.state.pool.acquire() as conn:
        if not await translations.delete_glossary_term(conn, term):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no glossary term {term!r}")
    return {"term": term}
