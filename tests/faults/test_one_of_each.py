"""One stream of tickets, and one of each fault while it flows: the CI's fault test.

The worker is SIGKILLed and restarted, then PostgreSQL crashes for 5 s, then the Temporal server
stops for 12 s (longer than the SDK's own 10 s of retries, so the API has to answer 503). Each
fault's recovery waits on the same clock (an activity that was running in a killed worker or whose
completion Temporal never heard of is retried when its start-to-close timeout expires), so one run
covers all three in about the time of one. `make faults` runs each on its own, longer and bigger.
"""

from __future__ import annotations

from tests.faults.harness import crash_postgres, kill_worker, stop_temporal


async def test_a_worker_kill_a_temporal_restart_and_a_postgresql_crash_lose_nothing(
    scenario, crashable_postgres
):
    await scenario(
        "one stream: worker SIGKILL, PostgreSQL crashed 5 s, Temporal stopped 12 s",
        tickets=60,
        rate=2.5,
        faults=[
            (2.0, kill_worker()),
            (5.0, crash_postgres(crashable_postgres, 5.0)),
            (14.0, stop_temporal(12.0)),
        ],
        # Every fourth client gives up on a 503 after its ticket was saved: housekeeping starts it.
        abandon=lambda i: i % 4 == 1,
    )
