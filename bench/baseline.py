"""The bare-engine baseline: trivial workflows doing the same number of activities, timers and
signals as the Meridian path under test, with no-op activities, on the same Temporal server.

One workflow class follows a `Plan`: optionally wait for a signal, optionally sleep until an
instant (a durable timer), then run `steps` in order, each step a list of no-op activities run
in parallel. An activity whose name starts with `probe` appends `{"key", "at"}` (wall time) to
the worker's probe file, which is how lateness is measured without extra round trips.

Run as its own process, beside Meridian's worker, so each gets its own interpreter:

    .venv/bin/python -m bench.baseline --address 127.0.0.1:7233 --probes /tmp/probes.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

TASK_QUEUE = "bench-baseline"
SIGNAL = "go"


@dataclass
class Plan:
    key: str
    wait_signal: bool = False
    sleep_until: float | None = None  # epoch seconds
    steps: list[list[str]] = field(default_factory=list)


@dataclass
class Call:
    key: str
    name: str


class Probes:
    """Where probe activities write; one line each, flushed at once."""

    def __init__(self, path: str | None):
        self.file = open(path, "a", buffering=1) if path else None

    @activity.defn(name="noop")
    async def noop(self, call: Call) -> float:
        now = time.time()
        if self.file is not None and call.name.startswith("probe"):
            self.file.write(json.dumps({"key": call.key, "name": call.name, "at": now}) + "\n")
        return now


@workflow.defn(name="BareWorkflow")
class BareWorkflow:
    def __init__(self) -> None:
        self.signalled = False

    @workflow.signal(name=SIGNAL)
    def go(self) -> None:
        self.signalled = True

    @workflow.run
    async def run(self, plan: Plan) -> int:
        if plan.wait_signal:
            await workflow.wait_condition(lambda: self.signalled)
        if plan.sleep_until is not None:
            delay = plan.sleep_until - workflow.now().timestamp()
            if delay > 0:
                await asyncio.sleep(delay)
        done = 0
        for step in plan.steps:
            await asyncio.gather(
                *(
                    workflow.execute_activity(
                        "noop", Call(plan.key, name), start_to_close_timeout=timedelta(seconds=60)
                    )
                    for name in step
                )
            )
            done += len(step)
        return done


def build_worker(client: Client, probes: Probes, **options) -> Worker:
    return Worker(
        client, task_queue=TASK_QUEUE, workflows=[BareWorkflow], activities=[probes.noop], **options
    )


async def serve(address: str, probes_path: str | None, options: dict) -> None:
    client = await Client.connect(address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with build_worker(client, Probes(probes_path), **options):
        print("baseline worker ready", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--address", required=True)
    parser.add_argument("--probes")
    parser.add_argument("--options", default="{}", help="Worker keyword arguments as JSON")
    args = parser.parse_args()
    asyncio.run(serve(args.address, args.probes, json.loads(args.options)))


if __name__ == "__main__":
    main()
