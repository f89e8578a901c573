"""Repeat issues: group recently resolved tickets into problem records and file them in the
engineering tracker (any server that speaks Jira's REST API v2: `POST /rest/api/2/issue`).

Filing is idempotent although Jira has no idempotency key: every issue carries the label
`meridian-problem-<id>`, and a retry first searches for it, so a timeout after Jira created the
issue never files a second one.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import httpx
import structlog
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db import problems
from domain.privacy import redact
from domain.problems import (
    TRACKER_LABEL,
    ProblemTicket,
    RepeatIssueRules,
    describe,
    group_repeats,
    tracker_issue,
)

log = structlog.get_logger(__name__)
ERROR_BODY_CHARS = 300


class TrackerSettings(BaseModel):
    tracker_url: str | None = None  # e.g. https://yourcompany.atlassian.net
    tracker_project: str = "SUP"
    tracker_issue_type: str = "Bug"
    tracker_user: str | None = None  # with a token: Basic auth (Jira Cloud); without: Bearer (Data Center)
    tracker_token: str | None = None
    tracker_timeout: float = 10.0


class FindRepeatsRequest(BaseModel):
    now: datetime
    rules: RepeatIssueRules


class FiledProblem(BaseModel):
    problem_id: int
    tracker_key: str | None  # None: no tracker configured, the problem stays listed in Meridian
    tracker_url: str | None = None
    already_filed: bool = False


class ProblemActivities:
    def __init__(self, pool: asyncpg.Pool, http: httpx.AsyncClient, settings: TrackerSettings):
        self.pool = pool
        self.http = http
        self.settings = settings

    @activity.defn(name="find_repeat_issues")
    async def find_repeat_issues(self, request: FindRepeatsRequest) -> list[int]:
        """New problem records for groups of similar resolved tickets; returns their ids.

        Safe to retry: a ticket belongs to at most one problem, so a rerun finds nothing new.
        """
        rules = request.rules
        created: list[int] = []
        async with self.pool.acquire() as conn:
            by_module = await problems.similar_resolved_pairs(
                conn, request.now - rules.window, rules.similarity
            )
            for module, pairs in sorted(by_module.items()):
                for members in group_repeats(pairs, rules.min_tickets):
                    rows = await problems.problem_tickets(conn, [ticket for ticket, _ in members])
                    tickets = [
                        ProblemTicket(
                            ticket_id=ticket,
                            # Subjects leave Meridian: no emails, phone numbers or customer names.
                            subject=redact(rows[ticket]["subject"], [rows[ticket]["customer_name"]]).text,
                            customer_id=rows[ticket]["customer_id"],
                            resolved_at=rows[ticket]["resolved_at"],
                            similarity=similarity,
                        )
                        for ticket, similarity in members
                    ]
                    title, summary = describe(module, tickets)
                    problem_id = await problems.create_problem(conn, module, title, summary, members)
                    if problem_id is not None:
                        created.append(problem_id)
                        log.info(
                            "problem recorded", problem_id=problem_id, module=module, tickets=len(members)
                        )
        return created

    @activity.defn(name="unsent_problems")
    async def unsent_problems(self) -> list[int]:
        async with self.pool.acquire() as conn:
            return await problems.unsent_problems(conn)

    @activity.defn(name="file_problem")
    async def file_problem(self, problem_id: int) -> FiledProblem:
        settings = self.settings
        async with self.pool.acquire() as conn:
            problem = await problems.get_problem(conn, problem_id)
        if problem is None:
            raise ApplicationError(
                f"problem {problem_id} does not exist", type="UnknownProblem", non_retryable=True
            )
        if problem.tracker_key is not None:
            return FiledProblem(
                problem_id=problem_id,
                tracker_key=problem.tracker_key,
                tracker_url=problem.tracker_url,
                already_filed=True,
            )
        if not settings.tracker_url:
            return FiledProblem(problem_id=problem_id, tracker_key=None)
        try:
            found = await self._existing(problem_id)
            key, url = (
                found
                if found
                else await self._create(
                    tracker_issue(problem, settings.tracker_project, settings.tracker_issue_type)
                )
            )
        except ApplicationError as err:
            async with self.pool.acquire() as conn:
                await problems.mark_failed(conn, problem_id, str(err))
            raise
        async with self.pool.acquire() as conn:
            await problems.mark_sent(conn, problem_id, key, url)
        return FiledProblem(
            problem_id=problem_id, tracker_key=key, tracker_url=url, already_filed=found is not None
        )

    # --- the tracker's protocol -----------------------------------------------------------------

    def _auth(self) -> httpx.Auth | None:
        return (
            httpx.BasicAuth(self.settings.tracker_user, self.settings.tracker_token)
            if (self.settings.tracker_user and self.settings.tracker_token)
            else None
        )

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.settings.tracker_token and not self.settings.tracker_user:
            headers["Authorization"] = f"Bearer {self.settings.tracker_token}"
        return headers

    async def _call(self, method: str, path: str, **kwargs) -> dict:
        url = self.settings.tracker_url.rstrip("/") + path
        try:
            response = await self.http.request(
                method,
                url,
                headers=self._headers(),
                auth=self._auth(),
                timeout=self.settings.tracker_timeout,
                **kwargs,
            )
        except httpx.HTTPError as err:
            raise ApplicationError(f"tracker unreachable: {err!r}", type="TrackerUnavailable") from err
        if response.status_code == 429 or response.status_code >= 500:
            raise ApplicationError(
                f"tracker answered {response.status_code}: {response.text[:ERROR_BODY_CHARS]}",
                type="TrackerUnavailable",
            )
        if response.status_code >= 400:
            # A bad token, a missing project or field: retrying cannot help; a person must look.
            raise ApplicationError(
                f"tracker refused with {response.status_code}: {response.text[:ERROR_BODY_CHARS]}",
                type="TrackerRejected",
                non_retryable=True,
            )
        try:
            return response.json()
        except ValueError as err:
            raise ApplicationError(
                "tracker answered with a body that is not JSON", type="TrackerRejected", non_retryable=True
            ) from err

    async def _existing(self, problem_id: int) -> tuple[str, str | None] | None:
        answer = await self._call(
            "GET",
            "/rest/api/2/search",
            params={"jql": f'labels = "{TRACKER_LABEL}-{problem_id}"', "fields": "key", "maxResults": 1},
        )
        issues = answer.get("issues") or []
        return (issues[0]["key"], issues[0].get("self")) if issues else None

    async def _create(self, issue: dict) -> tuple[str, str | None]:
        answer = await self._call("POST", "/rest/api/2/issue", json=issue)
        if "key" not in answer:
            raise ApplicationError("tracker created no issue key", type="TrackerRejected", non_retryable=True)
        return answer["key"], answer.get("self")
