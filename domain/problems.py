"""Repeat issues: recently resolved tickets of one module that say the same thing become a
"problem" record, sent to the engineering tracker so the root cause gets fixed.

Pure and deterministic. The database finds the similar pairs (pgvector); this module turns
pairs into groups and a group into the tracker's issue.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from pydantic import BaseModel, Field

TRACKER_LABEL = "meridian-problem"  # plus "-<id>": how a rerun finds the issue it already filed


class RepeatIssueRules(BaseModel):
    window: timedelta = Field(default=timedelta(days=14), description="how far back resolved tickets count")
    similarity: float = Field(
        default=0.9, ge=0.5, le=1.0, description="cosine similarity of two tickets' texts"
    )
    min_tickets: int = Field(default=3, ge=2, le=1000)


class SimilarPair(BaseModel):
    a: int
    b: int
    similarity: float


class ProblemTicket(BaseModel):
    ticket_id: int
    subject: str
    customer_id: str
    resolved_at: datetime | None = None
    similarity: float = 1.0  # to the group's most connected ticket


class Problem(BaseModel):
    id: int
    module: str
    title: str
    summary: str
    status: str
    tracker_key: str | None = None
    tracker_url: str | None = None
    sent_at: datetime | None = None
    last_error: str | None = None
    created_at: datetime
    tickets: list[ProblemTicket] = Field(default_factory=list)


def group_repeats(pairs: list[SimilarPair], min_size: int) -> list[list[tuple[int, float]]]:
    """Groups of at least `min_size` tickets, each a ticket and its similarity to the group's centre.

    The ticket with the most similar neighbours is the centre; its group is it and those
    neighbours. Chains (A like B, B like C, A unlike C) do not merge: every member is similar
    to the centre itself. Ties go to the lower ticket id, so the result never depends on order.
    """
    neighbours: dict[int, dict[int, float]] = defaultdict(dict)
    for pair in pairs:
        neighbours[pair.a][pair.b] = pair.similarity
        neighbours[pair.b][pair.a] = pair.similarity
    taken: set[int] = set()
    groups: list[list[tuple[int, float]]] = []
    while True:
        best: tuple[int, int] | None = None  # (-size, centre)
        for centre, near in neighbours.items():
            if centre in taken:
                continue
            size = 1 + sum(1 for other in near if other not in taken)
            if size >= min_size and (best is None or (-size, centre) < best):
                best = (-size, centre)
        if best is None:
            return groups
        centre = best[1]
        members = [
            (centre, 1.0),
            *sorted((other, sim) for other, sim in neighbours[centre].items() if other not in taken),
        ]
        taken.update(ticket for ticket, _ in members)
        groups.append(members)


def describe(module: str, tickets: list[ProblemTicket]) -> tuple[str, str]:
    """The problem's title and summary, from its tickets (already free of personal data)."""
    centre = tickets[0]
    customers = len({t.customer_id for t in tickets})
    title = f"Repeat issue in {module}: {centre.subject}"[:250]
    lines = [
        f"{len(tickets)} resolved tickets from {customers} customer(s) in module '{module}' describe "
        "the same problem. Fixing the root cause would prevent them.",
        "",
        *[f"- ticket {t.ticket_id}: {t.subject} (similarity {t.similarity:.2f})" for t in tickets],
    ]
    return title, "\n".join(lines)


def tracker_issue(problem: Problem, project: str, issue_type: str) -> dict:
    """A Jira-compatible `POST /rest/api/2/issue` body."""
    return {
        "fields": {
            "project": {"key": project},
            "summary": problem.title,
            "description": problem.summary,
            "issuetype": {"name": issue_type},
            "labels": ["meridian", "repeat-issue", problem.module, f"{TRACKER_LABEL}-{problem.id}"],
        }
    }
