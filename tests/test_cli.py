"""`meridian dev` as a user runs it: everything starts, demo data loads, tickets survive a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port


class DevStack:
    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.api_port, self.temporal_port, self.ui_port = free_port(), free_port(), free_port()
        self.metrics_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEMPORAL_ADDRESS")}
        self.env.update(
            {
                "MERIDIAN_STATE_DIR": str(state_dir),
                "MERIDIAN_API_PORT": str(self.api_port),
                "MERIDIAN_TEMPORAL_PORT": str(self.temporal_port),
                "MERIDIAN_TEMPORAL_UI_PORT": str(self.ui_port),
                "MERIDIAN_ADMIN_TOKEN": "",
                "MERIDIAN_WORKER_METRICS_ADDRESS": f"127.0.0.1:{self.metrics_port}",
            }
        )
        self.process: subprocess.Popen | None = None
        self.output = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, timeout: float = 120) -> str:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "meridian.cli", "dev"],
            cwd=self.state_dir.parent,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + timeout
        lines = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                break
            lines.append(line)
            if line.startswith("Try:"):
                self.output = "".join(lines)
                return self.output
        self.stop()
        raise AssertionError("meridian dev did not come up:\n" + "".join(lines[-40:]))

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        self.output += self.process.stdout.read()
        return code


@pytest.fixture
def stack(tmp_path: Path):
    stack = DevStack(tmp_path / "state")
    yield stack
    if stack.process is not None and stack.process.poll() is None:
        stack.stop()  # Ctrl-C first, so it stops its Temporal, PostgreSQL, worker and API too


def wait_for_ticket(http: httpx.Client, ticket_id: int, statuses: set[str], patience: float = 30) -> dict:
    deadline = time.monotonic() + patience
    while True:
        ticket = http.get(f"/v1/tickets/{ticket_id}").json()
        if ticket["status"] in statuses or time.monotonic() > deadline:
            return ticket
        time.sleep(0.2)


def test_meridian_dev_runs_everything_and_keeps_tickets_across_restarts(stack: DevStack):
    banner = stack.start()
    token = (stack.state_dir / "admin-token").read_text().strip()
    assert token in banner and f"{stack.url}/docs" in banner
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=stack.url, headers=headers, timeout=30) as http:
        assert http.get("/healthz").json()["status"] == "ok"
        assert "meridian_api_requests" in http.get("/metrics").text
        assert {r["id"] for r in http.get("/v1/regions").json()} == {"americas", "emea", "apac"}
        assert len(http.get("/v1/agents").json()) >= 12
        created = http.post(
            "/v1/tickets",
            json={
                "customer_id": "sakura",
                "subject": "動画の再生が止まる",
                "body": "昨日から動画の再生が途中で止まります。",
            },
        )
        assert created.status_code == 201, created.text
        # Triaged at once; assigned when a native speaker is on shift, else after the fallback waits.
        triaged = wait_for_ticket(http, created.json()["id"], {"open", "queued"})
        assert (triaged["language"], triaged["module"]) == ("ja", "video")
        # English has a native speaker on shift around the clock in the demo roster.
        created = http.post(
            "/v1/tickets",
            json={
                "customer_id": "acme",
                "subject": "Invoice total is wrong",
                "body": "Our October invoice is wrong.",
            },
        )
        ticket = wait_for_ticket(http, created.json()["id"], {"open"})
        assert ticket["assignee_id"] is not None

        demo = subprocess.run(
            [sys.executable, "-m", "meridian.cli", "demo"],
            cwd=stack.state_dir.parent,
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "csat_received" in demo.stdout and "filed ticket" in demo.stdout

        # An installation upgraded from before KPIs recomputes every ticket's facts once.
        def kpis_command(*args: str) -> str:
            done = subprocess.run(
                [sys.executable, "-m", "meridian.cli", "kpis", *args],
                cwd=stack.state_dir.parent,
                env=stack.env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            return done.stdout

        filed = len(http.get("/v1/tickets", params={"limit": 100}).json()["items"])
        assert f"recomputed for {filed} tickets; rollups rebuilt" in kpis_command("backfill", "--all")
        assert "rollups refreshed" in kpis_command("refresh")
        window = {"from": time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400)), "to": "2099-01-01"}
        totals = http.get("/v1/kpis", params={**window, "metrics": "tickets"})
        assert totals.status_code == 422  # a window is at most 400 days: the reason says so
        window["to"] = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
        totals = http.get("/v1/kpis", params={**window, "metrics": "tickets"}).json()
        assert totals["rows"][0]["values"]["tickets"] == filed
    assert stack.stop() == 0
    assert "Meridian stopped." in stack.output

    stack.start()
    with httpx.Client(base_url=stack.url, headers=headers, timeout=30) as http:
        again = http.get(f"/v1/tickets/{ticket['id']}")
        assert again.status_code == 200 and again.json()["assignee_id"] == ticket["assignee_id"]
        reply = http.post(
            f"/v1/tickets/{ticket['id']}/replies", json={"agent_id": ticket["assignee_id"], "body": "はい"}
        )
        assert reply.status_code == 201, reply.text
    assert stack.stop() == 0
