"""Meridian's benchmarks, each against the bare engine measured in the same run on the same server.

    .venv/bin/python -m bench                      # every scenario at the issue's sizes
    .venv/bin/python -m bench --quick              # every scenario at smoke sizes (a few minutes)
    .venv/bin/python -m bench intake --tickets 1000 5000 --concurrency 50
    .venv/bin/python -m bench escalation --tickets 10000 --burst 1000 --window 3600
    .venv/bin/python -m bench handoff --tickets 2000 10000
    .venv/bin/python -m bench read --rows 1000000
    .venv/bin/python -m bench footprint --tickets 10000 --cache 1000 10000

Each scenario writes bench/results/<scenario>-<size>.json; every run rewrites the Markdown
summary bench/results/summary.md from all result files present.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
SCENARIOS = ("intake", "escalation", "handoff", "read", "footprint")
QUICK = {
    "intake": {"tickets": [100], "concurrency": 20},
    "escalation": {"tickets": [300], "burst": 100, "window": 60},
    "handoff": {"tickets": [200]},
    "read": {"rows": [20000]},
    "footprint": {"tickets": [500], "cache": [100, 1000]},
}
FULL = {
    "intake": {"tickets": [1000, 5000], "concurrency": 50},
    "escalation": {"tickets": [10000], "burst": 1000, "window": 3600},
    "handoff": {"tickets": [2000, 10000]},
    "read": {"rows": [1000000]},
    "footprint": {"tickets": [10000], "cache": [1000, 10000]},
}


def write(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {path}", flush=True)
    return path


LOAD_AT_START: list[float] = []


def envelope(
    scenario: str, options: dict[str, Any], result: dict[str, Any], started: float
) -> dict[str, Any]:
    from bench.stack import machine

    details = machine()
    if LOAD_AT_START:
        details["load_average_at_start"] = LOAD_AT_START
    return {
        "scenario": scenario,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_seconds": round(time.monotonic() - started, 1),
        # Other work on the machine during the run (load averages over 1, 5 and 15 minutes at its end).
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "options": options,
        "machine": details,
        "stack": "Temporal CLI dev server (SQLite, WAL) + embedded PostgreSQL + `meridian worker` + "
        "`meridian api`, each its own process, as `meridian dev` runs them; the baseline worker beside them",
        **result,
    }


async def intake(args: argparse.Namespace) -> None:
    from bench import intake as scenario
    from bench.stack import running_stack

    async with running_stack(env=scenario.LIFE_ENV) as stack:
        life = await scenario.typical_life(stack)
        for tickets in args.tickets:
            started = time.monotonic()
            result = await scenario.run(stack, tickets, args.concurrency)
            result["typical_life"] = life
            result["rss_mb"] = stack.rss.sample()
            options = {"tickets": tickets, "concurrency": args.concurrency}
            write(f"intake-{tickets}", envelope("intake", options, result, started))


async def escalation(args: argparse.Namespace) -> None:
    from bench import escalation as scenario
    from bench.stack import running_stack

    for tickets in args.tickets:
        started = time.monotonic()
        async with running_stack() as stack:
            result = await scenario.run(stack, tickets, args.burst, args.window)
        options = {"tickets": tickets, "burst": args.burst, "window_seconds": args.window}
        write(f"escalation-{tickets}", envelope("escalation", options, result, started))


async def handoff(args: argparse.Namespace) -> None:
    from bench import handoff as scenario
    from bench.stack import running_stack

    for tickets in args.tickets:
        started = time.monotonic()
        async with running_stack() as stack:
            result = await scenario.run(stack, tickets, args.baselines)
        write(
            f"handoff-{tickets}",
            envelope("handoff", {"tickets": tickets, "baselines": args.baselines}, result, started),
        )


async def read(args: argparse.Namespace) -> None:
    from bench import read_side as scenario
    from bench.stack import running_stack

    for rows in args.rows:
        started = time.monotonic()
        async with running_stack(with_worker=False) as stack:
            result = await scenario.run(stack, rows, args.requests)
        write(f"read-{rows}", envelope("read", {"rows": rows, "requests": args.requests}, result, started))


async def footprint(args: argparse.Namespace) -> None:
    from bench import footprint as scenario

    for tickets in args.tickets:
        started = time.monotonic()
        result = await scenario.run(tickets, args.cache, args.window)
        options = {"tickets": tickets, "cache": args.cache, "window_seconds": args.window}
        write(f"footprint-{tickets}", envelope("footprint", options, result, started))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smoke sizes for every scenario not given explicitly")
    sub = p.add_subparsers(dest="scenario")
    s = sub.add_parser("intake", help="tickets through the HTTP API: throughput and POST -> assigned")
    s.add_argument("--tickets", type=int, nargs="+")
    s.add_argument("--concurrency", type=int)
    s = sub.add_parser("escalation", help="SLA warnings due over a window, plus a burst in one minute")
    s.add_argument("--tickets", type=int, nargs="+")
    s.add_argument("--burst", type=int)
    s.add_argument("--window", type=float, help="seconds over which the warnings fall due (default 3600)")
    s = sub.add_parser("handoff", help="one region's open tickets move to the next at a shift boundary")
    s.add_argument("--tickets", type=int, nargs="+")
    s.add_argument("--baselines", nargs="+", default=["signal", "same-work"], choices=["signal", "same-work"])
    s = sub.add_parser("read", help="GET /v1/tickets with filters and pagination over many rows")
    s.add_argument("--rows", type=int, nargs="+")
    s.add_argument("--requests", type=int, default=200, help="requests per query shape")
    s = sub.add_parser("footprint", help="worker and API memory with many open tickets, per cache size")
    s.add_argument("--tickets", type=int, nargs="+")
    s.add_argument("--cache", type=int, nargs="+", help="max_cached_workflows values to compare")
    s.add_argument("--window", type=float, default=300.0, help="seconds over which their warnings fire")
    return p


def main(argv: list[str] | None = None) -> None:
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from meridian.logging import configure_logging

    configure_logging("WARNING")
    args = parser().parse_args(argv)
    sizes = QUICK if args.quick else FULL
    chosen = [args.scenario] if args.scenario else list(SCENARIOS)
    runners = {
        "intake": intake,
        "escalation": escalation,
        "handoff": handoff,
        "read": read,
        "footprint": footprint,
    }
    for name in chosen:
        defaults = sizes[name]
        ns = args if args.scenario == name else argparse.Namespace()
        for key, value in defaults.items():
            if getattr(ns, key, None) is None:
                setattr(ns, key, value)
        if name == "handoff" and getattr(ns, "baselines", None) is None:
            ns.baselines = ["signal", "same-work"]
        if name == "read" and getattr(ns, "requests", None) is None:
            ns.requests = 50 if args.quick else 200
        if name == "footprint" and getattr(ns, "window", None) is None:
            ns.window = 60.0 if args.quick else 300.0
        print(f"== {name}: {vars(ns)}", flush=True)
        LOAD_AT_START[:] = [round(x, 2) for x in os.getloadavg()]
        asyncio.run(runners[name](ns))
    from bench.report import write_summary

    print(write_summary(RESULTS), flush=True)


if __name__ == "__main__":
    sys.exit(main())
