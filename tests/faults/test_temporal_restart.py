"""The Temporal server is killed while tickets flow, and comes back 20 s later with its SQLite file.

While it is down the API keeps reading from PostgreSQL, and every change it cannot hand to a
workflow is a 503 with a reason and Retry-After. A ticket filed meanwhile is saved first (its row
and `created` event): a client that retries with the same Idempotency-Key starts its workflow, and
one that never retries is started by housekeeping (`MERIDIAN_UNSTARTED_AFTER`).
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.faults.harness import Traffic, elapsed, running_stack, stop_temporal, under_load


@pytest.mark.slow
async def test_temporal_killed_for_20_seconds_under_a_stream_of_120_tickets(
    crashable_postgres, stack_dir, webhook, fault_report
):
    started = time.monotonic()
    async with running_stack(
        stack_dir, crashable_postgres.admin_url, MERIDIAN_WEBHOOK_URL=webhook.url
    ) as stack:
        # Every fourth client gives up on a 503 after its ticket was saved: housekeeping starts it.
        traffic = Traffic(stack.url, tickets=120, rate=2.0, abandon=lambda i: i % 4 == 1)
        faults = [(20.0, stop_temporal(20.0, signal.SIGKILL))]
        injected, checked = await under_load(stack, traffic, faults, within=300)
    assert checked["answers_503"] > 0, "the outage never reached a client: it proves nothing"
    fault_report(
        "Temporal server killed (SIGKILL) for 20 s and restarted",
        injected=injected,
        checked={
            **checked,
            "abandoned_after_503_started_by_housekeeping": len(traffic.unstarted),
            "webhook_redeliveries": webhook.redeliveries(),
        },
        seconds=elapsed(started),
    )
