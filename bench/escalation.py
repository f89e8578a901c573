"""Escalation timing: open tickets whose first SLA warning falls due spread over a window (the
issue: 10,000 over one hour), then a burst of tickets all due in the same instant; lateness is
(notification received by the webhook - due time).

Side by side, on the same server and at the same time, bare timers: a `BareWorkflow` per ticket
that sleeps until its own due time, then runs two no-op activities (Meridian's warning runs two:
the notification and the projection); its lateness is when the "notification" activity ran.

Open tickets are started as a continued-as-new ticket starts (`seed_open_tickets`): triaged,
assigned, clocks running, in the order their warnings fall due. The window starts once every
workflow has been started (`--seed-rate` is the expected start rate, used to plan it).
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime
from typing import Any

from bench import baseline
from bench.stack import OpenTicket, Stack, quantiles, seed_open_tickets, start_bare
from domain.enums import Priority
from domain.lifecycle import LifecyclePolicy
from domain.tickets import AgentRef

SEED_RATE = 40.0  # workflow starts per second while seeding (Meridian's and bare together)
BURST_GAP = 30.0  # seconds between the end of the window and the bare burst; Meridian's burst follows


def _assignee(n: int) -> AgentRef:
    return AgentRef(id=f"agent{n % 70}", name=f"Agent {n % 70}", region="emea", languages=["en"])


async def run(
    stack: Stack, tickets: int, burst: int, window: float, seed_rate: float = SEED_RATE, bare: bool = True
) -> dict[str, Any]:
    """`bare=False`: Meridian's tickets only (the footprint scenario)."""
    rng = random.Random(6)
    lifecycle = LifecyclePolicy()
    total = (2 if bare else 1) * (tickets + burst)
    t0 = time.time() + 20 + total / seed_rate
    spread_due = sorted(t0 + rng.uniform(0, window) for _ in range(tickets))
    bare_due = sorted(t0 + rng.uniform(0, window) for _ in range(tickets)) if bare else []
    bare_burst_at = t0 + window + BURST_GAP
    burst_at = bare_burst_at + BURST_GAP + burst / 20  # leave the bare burst time to drain
    meridian_due = spread_due + [burst_at] * burst
    seeding = time.time()
    ids = await seed_open_tickets(
        stack,
        [
            # P4: its first response is due in 8 hours, so the next warning (75 %) comes 2 hours
            # after the first, outside the window and the bursts.
            OpenTicket(
                assignee=_assignee(n),
                first_response_warning_at=datetime.fromtimestamp(due, UTC),
                priority=Priority.P4,
            )
            for n, due in enumerate(meridian_due)
        ],
        lifecycle,
    )
    due_of = dict(zip(ids, meridian_due, strict=True))
    burst_ids = set(ids[tickets:])
    plans = [
        baseline.Plan(key=f"s{n}", sleep_until=due, steps=[["probe_notify", "project"]])
        for n, due in enumerate(bare_due)
    ] + [
        baseline.Plan(key=f"b{n}", sleep_until=bare_burst_at, steps=[["probe_notify", "project"]])
        for n in range(burst if bare else 0)
    ]
    await start_bare(stack, plans, prefix="bare-sla")
    seeded = time.time()
    # Let the worker finish the started workflows' first tasks before reading its memory.
    await asyncio.sleep(max(0.0, min(15.0, t0 - time.time() - 5)))
    rss_open = stack.rss.sample()
    early = sum(1 for d in meridian_due + bare_due if d < seeded)
    print(
        f"seeded {len(ids)} tickets and {len(plans)} bare timers in {seeded - seeding:.0f}s "
        f"({early} due before seeding ended); window ends in {t0 + window - time.time():.0f}s",
        flush=True,
    )
    cpu_before = stack.rss.cpu_seconds()
    deadline = burst_at + max(600.0, burst / 2)
    while time.time() < deadline:
        warned = {d.ticket_id for d in stack.sink.of_kind("sla_warning")}
        probed = len(stack.read_probes())
        if len(warned & set(due_of)) >= len(due_of) and probed >= len(plans):
            break
        await asyncio.sleep(2)
    cpu_after = stack.rss.cpu_seconds()

    # Meridian: the first notification of each ticket's warning, as the webhook received it.
    received: dict[int, float] = {}
    decided: dict[int, float] = {}
    for d in stack.sink.of_kind("sla_warning"):
        if d.ticket_id in due_of and d.ticket_id not in received:
            received[d.ticket_id] = d.at
            if d.decided_at:
                decided[d.ticket_id] = datetime.fromisoformat(d.decided_at).timestamp()
    bare_at = {p["key"]: p["at"] for p in stack.read_probes() if p["name"] == "probe_notify"}
    bare_due_of = {f"s{n}": due for n, due in enumerate(bare_due)} | {
        f"b{n}": bare_burst_at for n in range(burst)
    }

    def lateness(pairs: dict, dues: dict, keys) -> list[float]:
        return [pairs[k] - dues[k] for k in keys if k in pairs]

    spread_keys = [i for i in ids[:tickets] if due_of[i] >= seeded]
    m_spread = lateness(received, due_of, spread_keys)
    b_spread_keys = [f"s{n}" for n, due in enumerate(bare_due) if due >= seeded]
    b_spread = lateness(bare_at, bare_due_of, b_spread_keys)
    m_burst = lateness(received, due_of, burst_ids)
    b_burst = lateness(bare_at, bare_due_of, [f"b{n}" for n in range(burst if bare else 0)])
    m_spread_q, b_spread_q = quantiles(m_spread, 1000), quantiles(b_spread, 1000)
    result = {
        "window_seconds": window,
        "seeding_seconds": round(seeded - seeding, 1),
        "due_before_seeding_ended": early,
        "spread": {
            "tickets": tickets,
            "measured": len(spread_keys),
            "missing_notifications": len(spread_keys) - len(m_spread),
            "meridian_lateness_ms": m_spread_q,
            "baseline_lateness_ms": b_spread_q,
            "meridian_decision_lateness_ms": quantiles(lateness(decided, due_of, spread_keys), 1000),
            "p99_difference_ms": round(m_spread_q.get("p99", 0) - b_spread_q.get("p99", 0), 1),
            "target": "p99 difference <= 500 ms",
        },
        "burst": {
            "tickets": burst,
            "missing_notifications": burst - len(m_burst),
            "meridian_lateness_ms": quantiles(m_burst, 1000),
            "baseline_lateness_ms": quantiles(b_burst, 1000),
            "meridian_drain_seconds": round(max(m_burst), 2) if m_burst else None,
            "baseline_drain_seconds": round(max(b_burst), 2) if b_burst else None,
            "p99_difference_ms": round(
                quantiles(m_burst, 1000).get("p99", 0) - quantiles(b_burst, 1000).get("p99", 0), 1
            ),
        },
        "rss_mb_with_open_tickets": rss_open,
        "rss_mb_at_end": stack.rss.sample(),
        "rss_mb_peak": stack.rss.peaks_mb(),
        "cpu_seconds_during_window": {k: round(cpu_after[k] - cpu_before.get(k, 0), 1) for k in cpu_after},
    }
    return result
