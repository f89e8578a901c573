"""Repeat issues: similar resolved tickets become a problem record, filed in a Jira-compatible
tracker. Real PostgreSQL (pgvector), a real Temporal dev server, and a local HTTP server that
speaks the part of Jira's REST API v2 we use (`POST /rest/api/2/issue`, `GET /rest/api/2/search`).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import asyncpg
import pytest
from temporalio.exceptions import ApplicationError

from activities.problems import FindRepeatsRequest, ProblemActivities, TrackerSettings
from db import problems
from domain.problems import RepeatIssueRules, SimilarPair, group_repeats
from meridian import temporal
from tests.conftest import add_customer, make_settings, running_worker, saved_ticket
from tests.loopback import JsonHandler, Loopback
from workflows.problems import RepeatIssuesWorkflow

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
RULES = RepeatIssueRules(window=timedelta(days=14), similarity=0.9, min_tickets=3)
TOKEN = "jira-test-token"


# --- grouping -------------------------------------------------------------------------------------


def pairs(*edges: tuple[int, int]) -> list[SimilarPair]:
    return [SimilarPair(a=a, b=b, similarity=0.95) for a, b in edges]


def test_the_best_connected_ticket_is_the_centre_and_chains_do_not_merge():
    # 1-2-3-4-5 is a chain; 3 links to 6 and 7 as well.
    groups = group_repeats(pairs((1, 2), (2, 3), (3, 4), (4, 5), (3, 6), (3, 7)), min_size=3)
    assert [[t for t, _ in g] for g in groups] == [[3, 2, 4, 6, 7]]  # 1 and 5 are not like 3


def test_small_groups_are_dropped_and_ties_go_to_the_lower_id():
    assert group_repeats(pairs((1, 2)), min_size=3) == []
    groups = group_repeats(pairs((10, 11), (10, 12), (20, 21), (20, 22)), min_size=3)
    assert [[t for t, _ in g] for g in groups] == [[10, 11, 12], [20, 21, 22]]


def test_a_ticket_joins_one_group_only():
    groups = group_repeats(pairs((1, 2), (1, 3), (1, 4), (5, 4), (5, 6), (5, 7)), min_size=3)
    members = [t for g in groups for t, _ in g]
    assert len(members) == len(set(members)) and groups[0][0][0] == 1


# --- a tracker that speaks Jira -------------------------------------------------------------------


@dataclass
class Jira(Loopback):
    issues: dict[str, dict] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    base: str = ""

    def search(self, query: dict) -> tuple[int, dict]:
        jql = query.get("jql", [""])[0]
        match = re.fullmatch(r'labels = "([\w-]+)"', jql)
        if match is None:
            return 400, {"errorMessages": [f"unsupported JQL {jql!r}"]}
        found = [
            {"id": i["id"], "key": key, "self": i["self"]}
            for key, i in self.issues.items()
            if match.group(1) in i["fields"]["labels"]
        ]
        return 200, {"startAt": 0, "maxResults": 1, "total": len(found), "issues": found[:1]}

    def create(self, body: dict) -> tuple[int, dict]:
        fields = body.get("fields", {})
        missing = [f for f in ("project", "summary", "issuetype") if f not in fields]
        if missing:
            return 400, {"errorMessages": [], "errors": {f: f"{f} is required" for f in missing}}
        if fields["project"].get("key") != "SUP":
            return 400, {"errorMessages": [], "errors": {"project": "project is required"}}
        number = len(self.issues) + 1
        key = f"SUP-{number}"
        self.issues[key] = {
            "id": str(10000 + number),
            "self": f"{self.base}/rest/api/2/issue/{10000 + number}",
            **body,
        }
        return 201, {"id": str(10000 + number), "key": key, "self": self.issues[key]["self"]}


@pytest.fixture
def jira() -> Iterator[Jira]:
    state = Jira()

    class Handler(JsonHandler):
        _answer = JsonHandler.send_json

        def _authorised(self) -> bool:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._answer(401, {"errorMessages": ["You are not authenticated."]})
                return False
            if state.fail_next:
                self._answer(state.fail_next.pop(0), {"errorMessages": ["scripted failure"]})
                return False
            return True

        def do_GET(self) -> None:
            url = urlparse(self.path)
            state.requests.append(("GET", url.path))
            if not self._authorised():
                return
            if url.path != "/rest/api/2/search":
                return self._answer(404, {"errorMessages": ["not found"]})
            self._answer(*state.search(parse_qs(url.query)))

        def do_POST(self) -> None:
            state.requests.append(("POST", self.path))
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.headers.get("Content-Type") != "application/json":
                state.violations.append(f"content type {self.headers.get('Content-Type')}")
            if not self._authorised():
                return
            if self.path != "/rest/api/2/issue":
                return self._answer(404, {"errorMessages": ["not found"]})
            self._answer(*state.create(body))

    state.serve(Handler)
    with state:
        yield state
    assert state.violations == []


# --- the database side ----------------------------------------------------------------------------


def unit(seed: int, noise: float = 0.0, towards: int | None = None) -> list[float]:
    """A unit vector along axis `seed`, tilted by `noise` towards axis `towards` (similarity
    to the pure axis is cos(noise))."""
    values = [0.0] * 384
    values[seed] = math.cos(noise)
    if towards is not None:
        values[towards] = math.sin(noise)
    return values


async def resolved_ticket(
    pool: asyncpg.Pool,
    customer: str,
    subject: str,
    module: str,
    vector: list[float],
    resolved: datetime = NOW,
) -> int:
    row = await saved_ticket(pool, customer, subject=subject, created_at=resolved - timedelta(hours=2))
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE tickets SET status = 'resolved', resolved_at = $2, module = $3 WHERE id = $1",
            row["id"],
            resolved,
            module,
        )
        await problems.save_ticket_embedding(conn, row["id"], customer, module, vector, "test-model")
    return row["id"]


async def repeat_history(db: asyncpg.Pool) -> dict[str, list[int]]:
    await add_customer(db, "acme")
    await add_customer(db, "globex")
    video = [
        await resolved_ticket(
            db, "acme", "Video freezes after 10 s (call me: +1 212 555 0143)", "video", unit(0)
        ),
        await resolved_ticket(db, "globex", "Playback stops after ten seconds", "video", unit(0, 0.2, 5)),
        await resolved_ticket(db, "acme", "Stream stalls at 0:10", "video", unit(0, 0.25, 6)),
        await resolved_ticket(db, "globex", "Video stops, ten seconds in", "video", unit(0, 0.3, 7)),
    ]
    others = [
        # Like the video tickets but in another module: never grouped with them.
        await resolved_ticket(db, "acme", "Invoice video link", "billing", unit(0, 0.1, 8)),
        await resolved_ticket(db, "acme", "Invoice twice", "billing", unit(1)),
        # Similar, but resolved before the window.
        await resolved_ticket(
            db, "acme", "Old video freeze", "video", unit(0, 0.1, 9), NOW - timedelta(days=30)
        ),
        # Resolved in the window but about something else.
        await resolved_ticket(db, "globex", "Login fails", "video", unit(2)),
    ]
    return {"video": video, "others": others}


async def test_similar_resolved_tickets_become_one_problem_once(db, http):
    tickets = await repeat_history(db)
    activities = ProblemActivities(db, http, TrackerSettings())
    created = await activities.find_repeat_issues(FindRepeatsRequest(now=NOW, rules=RULES))
    assert len(created) == 1
    async with db.acquire() as conn:
        problem = await problems.get_problem(conn, created[0])
    assert problem.module == "video" and problem.status == "open"
    assert sorted(t.ticket_id for t in problem.tickets) == sorted(tickets["video"])
    assert problem.tickets[0].ticket_id == tickets["video"][0]  # the centre
    assert "4 resolved tickets from 2 customer(s)" in problem.summary
    assert "+1 212 555 0143" not in problem.summary and "[phone]" in problem.summary

    # A rerun finds nothing new: the tickets already belong to the problem.
    assert await activities.find_repeat_issues(FindRepeatsRequest(now=NOW, rules=RULES)) == []
    # Without a tracker the problem stays listed in Meridian.
    filed = await activities.file_problem(created[0])
    assert filed.tracker_key is None


async def test_filing_in_the_tracker_is_idempotent(db, http, jira):
    await repeat_history(db)
    settings = TrackerSettings(tracker_url=jira.base, tracker_project="SUP", tracker_token=TOKEN)
    activities = ProblemActivities(db, http, settings)
    [problem_id] = await activities.find_repeat_issues(FindRepeatsRequest(now=NOW, rules=RULES))

    filed = await activities.file_problem(problem_id)
    assert filed.tracker_key == "SUP-1" and not filed.already_filed
    issue = jira.issues["SUP-1"]["fields"]
    assert issue["issuetype"] == {"name": "Bug"} and issue["project"] == {"key": "SUP"}
    assert issue["summary"].startswith("Repeat issue in video: ")
    assert f"meridian-problem-{problem_id}" in issue["labels"]
    async with db.acquire() as conn:
        stored = await problems.get_problem(conn, problem_id)
    assert (stored.status, stored.tracker_key) == ("sent", "SUP-1")

    # Filed again (a retry after Jira answered but the activity timed out): found, not duplicated.
    async with db.acquire() as conn:
        await conn.execute(
            "UPDATE problems SET status = 'open', tracker_key = NULL WHERE id = $1", problem_id
        )
    again = await activities.file_problem(problem_id)
    assert again.tracker_key == "SUP-1" and again.already_filed
    assert list(jira.issues) == ["SUP-1"]
    assert [r for r in jira.requests if r[0] == "POST"] == [("POST", "/rest/api/2/issue")]


async def test_tracker_failures_are_classified_and_recorded(db, http, jira):
    await repeat_history(db)
    settings = TrackerSettings(tracker_url=jira.base, tracker_project="SUP", tracker_token=TOKEN)
    activities = ProblemActivities(db, http, settings)
    [problem_id] = await activities.find_repeat_issues(FindRepeatsRequest(now=NOW, rules=RULES))

    jira.fail_next = [503]
    with pytest.raises(ApplicationError) as unavailable:
        await activities.file_problem(problem_id)
    assert unavailable.value.type == "TrackerUnavailable" and not unavailable.value.non_retryable

    wrong = ProblemActivities(db, http, settings.model_copy(update={"tracker_project": "NOPE"}))
    with pytest.raises(ApplicationError) as rejected:
        await wrong.file_problem(problem_id)
    assert rejected.value.type == "TrackerRejected" and rejected.value.non_retryable
    async with db.acquire() as conn:
        stored = await problems.get_problem(conn, problem_id)
    assert stored.status == "open" and "400" in stored.last_error

    bad_token = ProblemActivities(db, http, settings.model_copy(update={"tracker_token": "wrong"}))
    with pytest.raises(ApplicationError) as unauthorised:
        await bad_token.file_problem(problem_id)
    assert unauthorised.value.non_retryable and "401" in str(unauthorised.value)
    assert jira.issues == {}


async def test_the_scheduled_workflow_finds_and_files_problems(db, dev_env, shared_deps, database_url, jira):
    tickets = await repeat_history(db)
    settings = make_settings(
        database_url, tracker_url=jira.base, tracker_token=TOKEN, repeat_issue_window=timedelta(days=3650)
    )
    async with running_worker(dev_env.client, shared_deps, settings):
        report = await dev_env.client.execute_workflow(
            RepeatIssuesWorkflow.run,
            settings.repeat_issue_rules(),
            id=f"repeat-issues-{uuid.uuid4().hex[:8]}",
            task_queue=settings.task_queue,
        )
    # The window reaches back ten years here, so the old video ticket joins the group.
    assert len(report.created) == 1 and report.failed == []
    assert report.filed == {report.created[0]: "SUP-1"}
    async with db.acquire() as conn:
        problem = await problems.get_problem(conn, report.created[0])
    assert set(tickets["video"]) < {t.ticket_id for t in problem.tickets}


async def test_the_worker_keeps_both_schedules_up_to_date(dev_env, database_url):
    settings = make_settings(database_url, repeat_issue_every=timedelta(minutes=30))
    await temporal.ensure_schedules(dev_env.client, settings)
    await temporal.ensure_schedules(
        dev_env.client, settings.model_copy(update={"repeat_issue_every": timedelta(hours=2)})
    )
    described = await dev_env.client.get_schedule_handle(temporal.REPEAT_ISSUES_SCHEDULE_ID).describe()
    assert described.schedule.spec.intervals[0].every == timedelta(hours=2)
    housekeeping = await dev_env.client.get_schedule_handle(temporal.HOUSEKEEPING_SCHEDULE_ID).describe()
    assert housekeeping.schedule.spec.intervals[0].every == settings.dispatch_interval
    for schedule_id in (temporal.REPEAT_ISSUES_SCHEDULE_ID, temporal.HOUSEKEEPING_SCHEDULE_ID):
        await dev_env.client.get_schedule_handle(schedule_id).delete()


async def test_problems_api(api, db, http):
    await repeat_history(db)
    finder = ProblemActivities(db, http, TrackerSettings())
    [problem_id] = await finder.find_repeat_issues(FindRepeatsRequest(now=NOW, rules=RULES))
    listed = await api.http.get("/v1/problems", headers=api.admin)
    assert listed.status_code == 200 and [p["id"] for p in listed.json()] == [problem_id]
    one = await api.http.get(f"/v1/problems/{problem_id}", headers=api.admin)
    assert one.json()["module"] == "video" and len(one.json()["tickets"]) == 4
    assert (await api.http.get("/v1/problems/999999", headers=api.admin)).status_code == 404
    assert (
        await api.http.get("/v1/problems", params={"status": "weird"}, headers=api.admin)
    ).status_code == 422
    assert (await api.http.get("/v1/problems")).status_code == 401
