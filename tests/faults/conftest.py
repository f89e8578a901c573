"""Fixtures of the fault tests, and their report: what was injected and what was checked, in counts.

Each test calls `fault_report(...)`; the counts are printed at the end of the run and, when
MERIDIAN_FAULTS_REPORT names a file (`make faults` sets bench/results/faults.json), written there.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import Postgres, Webhook, fault_run

REPORTS: list[dict[str, Any]] = []


@pytest.fixture
def fault_report(request: pytest.FixtureRequest):
    def record(scenario: str, *, injected: dict[str, Any], checked: dict[str, Any], seconds: float) -> None:
        REPORTS.append(
            {
                "test": request.node.nodeid,
                "scenario": scenario,
                "slow": request.node.get_closest_marker("slow") is not None,
                "injected": injected,
                "checked": checked,
                "seconds": seconds,
            }
        )

    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not REPORTS:
        return
    terminalreporter.section("faults injected and what was checked")
    for report in REPORTS:
        injected = ", ".join(f"{k} {v}" for k, v in report["injected"].items())
        checked = ", ".join(f"{k} {v}" for k, v in report["checked"].items())
        terminalreporter.write_line(f"{report['scenario']} ({report['seconds']} s)")
        terminalreporter.write_line(f"  injected: {injected}")
        terminalreporter.write_line(f"  checked:  {checked}")
    target = os.environ.get("MERIDIAN_FAULTS_REPORT")
    if target:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                {
                    "when": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": {
                        "cpus": os.cpu_count(),
                        "platform": platform.platform(),
                        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
                    },
                    "passed": exitstatus == 0,
                    "scenarios": REPORTS,
                },
                indent=2,
            )
            + "\n"
        )
        terminalreporter.write_line(f"written to {path}")


@pytest.fixture
def stack_dir(tmp_path: Path) -> Path:
    """Logs and Temporal's SQLite file; pytest keeps the last runs' for a look after a failure."""
    return tmp_path / "stack"


@pytest.fixture(scope="session")
def crashable_postgres() -> Iterator[Postgres]:
    """A PostgreSQL of the fault tests' own, which they may stop; its files under /tmp/meridian-test-pg-*."""
    folder = Path(tempfile.mkdtemp(prefix="meridian-test-pg-faults-"))
    server = Postgres(folder)
    try:
        yield server
    finally:
        server.close()  # stops it and deletes its data
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def scenario(crashable_postgres, stack_dir, webhook, fault_report):
    """`fault_run` on the fault tests' PostgreSQL, this test's folder, webhook and report."""
    return functools.partial(
        fault_run, postgres=crashable_postgres, folder=stack_dir, webhook=webhook, report=fault_report
    )


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    with Webhook() as server:
        yield server
