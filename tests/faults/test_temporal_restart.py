"""The Temporal server is killed while tickets flow, and comes back 20 s later with its SQLite file.

While it is down the API keeps reading from PostgreSQL, and every change it cannot hand to a
workflow is a 503 with a reason and Retry-After. A ticket filed meanwhile is saved first (its row
and `created` event): a client that retries with the same Idempotency-Key starts its workflow, and
one that never retries is started by housekeeping (`MERIDIAN_UNSTARTED_AFTER`).
"""

from __future__ import annotations

import signal

import pytest

from tests.faults.harness import LONG_STREAM, stop_temporal


@pytest.mark.slow
async def test_temporal_killed_for_20_seconds_under_a_stream_of_120_tickets(scenario):
    await scenario(
        "Temporal server killed (SIGKILL) for 20 s and restarted",
        faults=[(20.0, stop_temporal(20.0, signal.SIGKILL))],
        abandon=lambda i: i % 4 == 1,  # these clients never retry a 503: housekeeping starts them
        **LONG_STREAM,
    )
