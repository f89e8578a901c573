"""Heartbeats for activities that wait on one long call (a big SQL statement).

With a heartbeat timeout, Temporal retries an attempt whose worker died, or whose result it never
heard of (it was down when the attempt finished), after that timeout instead of the whole
start-to-close timeout. Work that loops heartbeats per step; work that waits on one call beats
from the side while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import activity


@contextlib.asynccontextmanager
async def beating(every: float = 5.0) -> AsyncIterator[None]:
    """Heartbeat every `every` seconds while the block runs."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
