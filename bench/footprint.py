"""Footprint: resident memory of the worker and the API with N open ticket workflows, for each
worker cache size (`MERIDIAN_WORKER_MAX_CACHED_WORKFLOWS`), and what the cache size costs or saves
when every one of them wakes up: the tickets' first SLA warnings fall due over `window` seconds.

A workflow evicted from the cache is rebuilt at its next wake-up: a new sandboxed instance and a
replay of its history, CPU that a larger cache trades for memory.
"""

from __future__ import annotations

from typing import Any

from bench import escalation
from bench.stack import running_stack


async def run(tickets: int, caches: list[int], window: float) -> dict[str, Any]:
    variants = []
    for cache in caches:
        async with running_stack(tuning={"max_cached_workflows": cache}) as stack:
            idle = stack.rss.sample()
            result = await escalation.run(stack, tickets, 0, window, bare=False)
            spread = result["spread"]
            variants.append(
                {
                    "max_cached_workflows": cache,
                    "rss_mb_idle_stack": idle,
                    "rss_mb": result["rss_mb_with_open_tickets"],
                    "rss_mb_after_all_woke": result["rss_mb_at_end"],
                    "rss_mb_peak": result["rss_mb_peak"],
                    "worker_cpu_seconds_for_the_wake_ups": result["cpu_seconds_during_window"].get("worker"),
                    "temporal_cpu_seconds_for_the_wake_ups": result["cpu_seconds_during_window"].get(
                        "temporal"
                    ),
                    "warning_lateness_ms": spread["meridian_lateness_ms"],
                    "seeding_seconds": result["seeding_seconds"],
                }
            )
    return {"tickets": tickets, "window_seconds": window, "variants": variants}
