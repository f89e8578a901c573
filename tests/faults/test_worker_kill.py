"""The worker is killed with SIGKILL again and again while tickets flow, and started again at once.

Nothing is lost and nothing happens twice: every ticket is triaged, assigned once, answered and
resolved; its timeline has no gap and no repeated entry; each assignment and customer message is
notified once (the webhook may receive a delivery again when a kill fell between its POST and the
row being marked delivered: deliveries are at-least-once, keyed by `X-Meridian-Delivery`).
What a kill costs is time: an activity that was running in the killed process is retried only when
its start-to-close timeout expires (30 s for database work, 60 s for triage and the knowledge base).
"""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import Traffic, elapsed, kill_worker, running_stack, under_load


@pytest.mark.slow
async def test_worker_killed_four_times_under_a_stream_of_120_tickets(
    crashable_postgres, stack_dir, webhook, fault_report
):
    started = time.monotonic()
    async with running_stack(
        stack_dir, crashable_postgres.admin_url, MERIDIAN_WEBHOOK_URL=webhook.url
    ) as stack:
        traffic = Traffic(stack.url, tickets=120, rate=2.0)
        faults = [(at, kill_worker()) for at in (8.0, 20.0, 35.0, 50.0)]
        injected, checked = await under_load(stack, traffic, faults, within=300)
    fault_report(
        "worker killed with SIGKILL and restarted, four times",
        injected=injected,
        checked={**checked, "webhook_redeliveries": webhook.redeliveries()},
        seconds=elapsed(started),
    )
