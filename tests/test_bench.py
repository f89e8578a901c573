"""The benchmark's own parts that are quick to check: the bare-engine baseline workflow follows its
plan (signal, timer, steps of no-op activities, probes), and results render into the summary."""

from __future__ import annotations

import json
import time
import uuid

from temporalio.client import Client
from temporalio.worker import Worker

from bench import baseline
from bench.report import write_summary
from bench.stack import quantiles


async def test_the_bare_workflow_waits_for_its_signal_and_timer_then_runs_its_steps(dev_env, tmp_path):
    client = await Client.connect(dev_env.client.service_client.config.target_host, namespace="default")
    probes = baseline.Probes(str(tmp_path / "probes.jsonl"))
    queue = f"bench-test-{uuid.uuid4()}"
    plan = baseline.Plan(
        key="t1",
        wait_signal=True,
        sleep_until=time.time() + 0.3,
        steps=[["probe_claim"], ["project", "probe_notify"]],
    )
    async with Worker(client, task_queue=queue, workflows=[baseline.BareWorkflow], activities=[probes.noop]):
        handle = await client.start_workflow(
            "BareWorkflow", plan, id=f"bare-{uuid.uuid4()}", task_queue=queue
        )
        signalled = time.time()
        await handle.signal(baseline.SIGNAL)
        assert await handle.result() == 3
    recorded = [json.loads(line) for line in (tmp_path / "probes.jsonl").read_text().splitlines()]
    assert [(p["key"], p["name"]) for p in recorded] == [("t1", "probe_claim"), ("t1", "probe_notify")]
    assert all(p["at"] >= signalled and p["at"] >= plan.sleep_until for p in recorded)


def test_quantiles_and_the_summary_table(tmp_path):
    stats = quantiles([0.1, 0.2, 0.3, 0.4], 1000)
    assert stats["count"] == 4 and stats["p50"] == 300.0 and stats["max"] == 400.0
    assert quantiles([]) == {"count": 0}
    result = {
        "scenario": "intake",
        "tickets": 10,
        "concurrency": 2,
        "meridian": {"per_second": 3.0, "steady_per_second": 3.1, "post_to_assigned_ms": stats},
        "baseline": {"per_second": 5.0, "steady_per_second": 5.2, "start_to_done_ms": stats},
        "throughput_ratio": 0.6,
        "steady_throughput_ratio": 0.6,
    }
    (tmp_path / "intake-10.json").write_text(json.dumps(result))
    table = write_summary(tmp_path)
    assert (
        "| intake | 10 tickets, 2 clients | tickets/s (steady state) | 3.0 (3.1) | 5.0 (5.2) | 0.6 (0.6) |"
        in table
    )
    assert (tmp_path / "summary.md").read_text() == table
