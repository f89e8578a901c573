"""The worker is killed with SIGKILL again and again while tickets flow, and started again at once.

Nothing is lost and nothing happens twice: every ticket is triaged, assigned once, answered and
resolved; its timeline has no gap and no repeated entry; each assignment and customer message is
notified once (the webhook may receive a delivery again when a kill fell between its POST and the
row being marked delivered: deliveries are at-least-once, keyed by `X-Meridian-Delivery`).
What a kill costs is time: an activity that was running in the killed process is retried only when
its start-to-close timeout expires (30 s for database work, 60 s for triage and the knowledge base).
"""

from __future__ import annotations

import pytest

from tests.faults.harness import LONG_STREAM, kill_worker


@pytest.mark.slow
async def test_worker_killed_four_times_under_a_stream_of_120_tickets(scenario):
    await scenario(
        "worker killed with SIGKILL and restarted, four times",
        faults=[(at, kill_worker()) for at in (8.0, 20.0, 35.0, 50.0)],
        **LONG_STREAM,
    )
