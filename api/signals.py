"""Telling running ticket workflows that something they depend on changed."""

from __future__ import annotations

import asyncio

import structlog
from fastapi import Request

from domain.tickets import ticket_workflow_id

log = structlog.get_logger(__name__)


async def signal_tickets(request: Request, ticket_ids: list[int], signal: str) -> int:
    """Best effort: a ticket that closed meanwhile is skipped; returns how many were told."""
    client = request.app.state.client
    results = await asyncio.gather(
        *(client.get_workflow_handle(ticket_workflow_id(t)).signal(signal) for t in ticket_ids),
        return_exceptions=True,
    )
    for ticket_id, result in zip(ticket_ids, results, strict=True):
        if isinstance(result, Exception):
            log.warning("signal not delivered", ticket_id=ticket_id, signal=signal, error=str(result))
    return sum(1 for r in results if not isinstance(r, Exception))
