"""The Markdown summary of every result file in bench/results/ (bench/results/summary.md)."""

from __future__ import annotations

import json
from pathlib import Path

HEADER = [
    "| scenario | size | figure | Meridian | baseline | ratio or Δ | target |",
    "| --- | --- | --- | --- | --- | --- | --- |",
]


def write_summary(results: Path) -> str:
    lines = list(HEADER)
    for path in sorted(results.glob("*.json")):
        lines += rows(json.loads(path.read_text()))
    text = "\n".join(lines) + "\n"
    (results / "summary.md").write_text(text)
    return text


def row(*cells: object) -> str:
    return "| " + " | ".join("" if c is None else str(c) for c in cells) + " |"


def q(stats: dict, *keys: str) -> str:
    return " / ".join(str(stats.get(k)) for k in keys)


def rows(d: dict) -> list[str]:
    scenario = d.get("scenario")
    if scenario == "intake":
        m, b = d["meridian"], d["baseline"]
        size = f"{d['tickets']} tickets, {d['concurrency']} clients"
        return [
            row(
                "intake", size, "tickets/s (steady state)",
                f"{m['per_second']} ({m['steady_per_second']})",
                f"{b['per_second']} ({b['steady_per_second']})",
                f"{d['throughput_ratio']} ({d['steady_throughput_ratio']})", "≥ 0.6",
            ),
            row(
                "intake", size, "POST → assigned p50 / p99 ms",
                q(m["post_to_assigned_ms"], "p50", "p99"), q(b["start_to_done_ms"], "p50", "p99"), None, None,
            ),
        ]  # fmt: skip
    if scenario == "escalation":
        out = []
        for case in ("spread", "burst"):
            c = d.get(case)
            if not c or not c.get("tickets"):
                continue
            m, b = c["meridian_lateness_ms"], c["baseline_lateness_ms"]
            target = "Δ p99 ≤ 500 ms" if case == "spread" else f"drain {c.get('meridian_drain_seconds')} s"
            size = f"{c['tickets']} {case}" + (
                f" over {d['window_seconds']:.0f} s" if case == "spread" else ""
            )
            out.append(
                row(
                    "escalation", size, "lateness p50 / p99 / max ms",
                    q(m, "p50", "p99", "max"), q(b, "p50", "p99", "max"),
                    f"Δ p99 {c['p99_difference_ms']} ms", target,
                )
            )  # fmt: skip
        return out
    if scenario == "handoff":
        m = d["meridian"]
        return [
            row(
                "handoff", f"{d['tickets']} tickets", f"drain s (ms per ticket), baseline: {name}",
                f"{m['drain_seconds']} ({m['per_ticket_ms']})",
                f"{b.get('drain_seconds')} ({b.get('per_ticket_ms')})",
                d["ratios"][name], "≤ 1.5" if name == "signal" else None,
            )
            for name, b in d.get("baselines", {}).items()
        ]  # fmt: skip
    if scenario == "read":
        return [
            row(
                "read",
                f"{d['rows']:,} rows",
                f"`{x['query']}` p50 / p95 ms",
                q(x["ms"], "p50", "p95"),
                None,
                None,
                None,
            )
            for x in d["queries"]
        ]
    if scenario == "footprint":
        return [
            row(
                "footprint", f"{d['tickets']} open, cache {v['max_cached_workflows']}", "worker / API RSS MB",
                f"{v['rss_mb'].get('worker')} / {v['rss_mb'].get('api')} (after wake-ups "
                f"{v['rss_mb_after_all_woke'].get('worker')} / {v['rss_mb_after_all_woke'].get('api')})",
                None, None, None,
            )
            for v in d["variants"]
        ]  # fmt: skip
    return []
