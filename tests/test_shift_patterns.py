"""Shared shift patterns per region and multi-week rotations: the maths, the database, the API.

The pattern used throughout is a three-week rotation of the Americas desk in New York:
week 1 days (Mon-Fri 08:00-17:00), week 2 nights (nights starting Sun and Mon-Thu, 22:00-06:00),
week 3 off. Week 1 starts on Monday 2 March 2026, so week 2 is 9-15 March and its nights start
on 9, 10, 11, 12 and 15 March. No night of it spans the spring-forward change (Sunday 8 March,
02:00), so a Saturday-night pattern checks the short night on its own.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from pydantic import ValidationError

from db import rosters
from db.assignment import agent_candidate, claim_best_agent
from domain.enums import Priority
from domain.rosters import (
    Rotation,
    Shift,
    ShiftPatternFields,
    coverage_gaps,
    shift_end,
    shift_windows,
)
from tests.conftest import add_agent, add_customer, saved_ticket
from tests.test_rosters import agent_body, make_agent, parse

NY = "America/New_York"
ANCHOR = date(2026, 3, 2)  # a Monday
DAYS = Shift(days=[1, 2, 3, 4, 5], start=time(8), end=time(17))
NIGHTS = Shift(days=[7, 1, 2, 3, 4], start=time(22), end=time(6))
ROTATION = ShiftPatternFields(
    name="Americas rotation", region_id="americas", anchor=ANCHOR, weeks=[[DAYS], [NIGHTS], []]
)


def ny(y: int, m: int, d: int, h: int = 0, minute: int = 0) -> datetime:
    return datetime(y, m, d, h, minute, tzinfo=ZoneInfo(NY))


def rotation(offset: int = 0, pattern: ShiftPatternFields = ROTATION) -> Rotation:
    return Rotation.of(pattern, "americas-rotation", offset)


# --- the maths ------------------------------------------------------------------------------------


def test_week_of_follows_the_cycle_forwards_and_backwards():
    r = rotation()
    assert r.week_of(date(2026, 3, 2)) == [DAYS]
    assert r.week_of(date(2026, 3, 8)) == [DAYS]  # Sunday closes week 1
    assert r.week_of(date(2026, 3, 9)) == [NIGHTS]
    assert r.week_of(date(2026, 3, 16)) == []
    assert r.week_of(date(2026, 3, 23)) == [DAYS]  # the cycle repeats
    assert r.week_of(date(2026, 2, 23)) == []  # the week before the anchor is week 3 of the previous cycle
    assert rotation(offset=1).week_of(date(2026, 3, 2)) == [NIGHTS]


def test_a_day_week_then_a_night_week_then_a_week_off():
    windows = shift_windows(rotation(), NY, [], ny(2026, 3, 2), ny(2026, 3, 23))
    days = [(ny(2026, 3, d, 8), ny(2026, 3, d, 17)) for d in (2, 3, 4, 5, 6)]
    nights = [(ny(2026, 3, d, 22), ny(2026, 3, d + 1, 6)) for d in (9, 10, 11, 12, 15)]
    assert windows == days + nights


def test_the_night_that_starts_on_the_last_day_of_a_night_week_ends_in_the_week_off():
    end = shift_end(rotation(), NY, [], ny(2026, 3, 16, 3))
    assert end == ny(2026, 3, 16, 6)
    # ...and the week off brings nothing else.
    assert shift_windows(rotation(), NY, [], ny(2026, 3, 16, 6), ny(2026, 3, 23)) == []


def test_a_rotation_night_across_spring_forward_is_seven_hours():
    saturday_nights = ShiftPatternFields(
        name="Weekend nights",
        region_id="americas",
        anchor=date(2026, 3, 2),
        weeks=[[Shift(days=[6], start=time(22), end=time(6))], []],
    )
    (window,) = shift_windows(rotation(pattern=saturday_nights), NY, [], ny(2026, 3, 7), ny(2026, 3, 9))
    assert window == (ny(2026, 3, 7, 22).astimezone(UTC), ny(2026, 3, 8, 6).astimezone(UTC))
    assert window[1] - window[0] == timedelta(hours=7)
    # The week after is off, the one after that works again.
    assert shift_windows(rotation(pattern=saturday_nights), NY, [], ny(2026, 3, 9), ny(2026, 3, 16)) == []
    assert (
        len(shift_windows(rotation(pattern=saturday_nights), NY, [], ny(2026, 3, 16), ny(2026, 3, 23))) == 1
    )


def test_three_agents_a_week_apart_cover_days_and_nights_every_week():
    start, end = ny(2026, 3, 2), ny(2026, 3, 30)
    team = [shift_windows(rotation(offset), NY, [], start, end) for offset in range(3)]
    gaps = coverage_gaps(team, start, end)
    # Every week one works days, one nights and one is off: the holes are between the two
    # shifts and the weekend from Friday 17:00 to the Sunday night.
    assert (ny(2026, 3, 10, 6), ny(2026, 3, 10, 8)) in gaps
    assert (ny(2026, 3, 10, 17), ny(2026, 3, 10, 22)) in gaps
    assert (ny(2026, 3, 13, 17), ny(2026, 3, 15, 22)) in gaps
    assert (ny(2026, 3, 24, 17), ny(2026, 3, 24, 22)) in gaps  # the cycle goes on in week 4
    worked = sum((e - s for windows in team for s, e in windows), timedelta())
    # 4 x (5 days x 9 h + 5 nights x 8 h): the night of 29 March loses 6 h at the end of the span,
    # the night of 1 March (week 3 of the cycle before, for offset 2) brings 6 h at its start.
    assert worked == 4 * (5 * timedelta(hours=9) + 5 * timedelta(hours=8))


def test_pattern_validation():
    with pytest.raises(ValidationError, match="must be a Monday"):
        ShiftPatternFields(name="x", region_id="emea", anchor=date(2026, 3, 3), weeks=[[DAYS]])
    with pytest.raises(ValidationError, match="at least one shift"):
        ShiftPatternFields(name="x", region_id="emea", anchor=ANCHOR, weeks=[[], []])
    with pytest.raises(ValidationError):
        ShiftPatternFields(name="x", region_id="emea", anchor=ANCHOR, weeks=[[DAYS]] * 13)
    with pytest.raises(ValidationError):
        ShiftPatternFields(name="x", region_id="emea", anchor=ANCHOR, weeks=[])
    with pytest.raises(ValidationError, match="at most 7"):
        ShiftPatternFields(name="x", region_id="emea", anchor=ANCHOR, weeks=[[DAYS] * 8])


# --- the database and routing ---------------------------------------------------------------------


async def _put_on_pattern(pool: asyncpg.Pool, agent_id: str, offset: int) -> None:
    async with pool.acquire() as conn:
        await rosters.insert_pattern(conn, "americas-rotation", ROTATION)
        await conn.execute(
            "UPDATE agents SET shift_pattern_id = 'americas-rotation', rotation_offset = $2 WHERE id = $1",
            agent_id,
            offset,
        )


async def test_routing_reads_the_rotation_instead_of_the_agents_own_shift(db: asyncpg.Pool):
    await add_agent(db, "sam", region="americas")  # own shift: around the clock
    await _put_on_pattern(db, "sam", offset=2)  # 2-9 March is the week off for offset 2
    await add_customer(db, "acme", region="americas")
    row = await saved_ticket(db, "acme", created_at=ny(2026, 3, 4, 12))
    async with db.acquire() as conn:
        outcome = await claim_best_agent(
            conn,
            ticket_id=row["id"],
            language="en",
            module="billing",
            priority=Priority.P3,
            home_region="americas",
            at=ny(2026, 3, 4, 12),
            queued_since=ny(2026, 3, 4, 12),
        )
        assert outcome.agent is None and outcome.queued

        sam = await agent_candidate(conn, "sam", ny(2026, 3, 10, 12))  # offset 2's week 2 is days
        assert sam.rotation is not None and sam.on_shift(ny(2026, 3, 10, 12))
        assert sam.shift_ends_at(ny(2026, 3, 10, 12)) == ny(2026, 3, 10, 17)


async def test_an_agent_may_only_work_a_pattern_of_their_own_region(db: asyncpg.Pool):
    await add_agent(db, "ines", region="emea")
    async with db.acquire() as conn:
        await rosters.insert_pattern(conn, "americas-rotation", ROTATION)
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute("UPDATE agents SET shift_pattern_id = 'americas-rotation' WHERE id = 'ines'")


# --- the API --------------------------------------------------------------------------------------

PATTERN = {"id": "americas-rotation", **ROTATION.model_dump(mode="json")}


async def test_shift_pattern_crud_and_agents_on_it(api):
    created = await api.http.post("/v1/shift-patterns", json=PATTERN, headers=api.admin)
    assert created.status_code == 201, created.text
    assert created.json()["agents"] == [] and len(created.json()["weeks"]) == 3
    again = await api.http.post("/v1/shift-patterns", json=PATTERN, headers=api.admin)
    assert again.status_code == 409

    await make_agent(api, "sam", region="americas")
    await make_agent(api, "lee", region="americas")
    for agent_id, offset in (("sam", 0), ("lee", 1)):
        body = agent_body(agent_id, region="americas")
        del body["id"]
        body |= {"shift_pattern_id": "americas-rotation", "rotation_offset": offset}
        response = await api.http.put(f"/v1/agents/{agent_id}", json=body, headers=api.admin)
        assert response.status_code == 200, response.text
        assert response.json()["shift_pattern_id"] == "americas-rotation"

    listed = await api.http.get("/v1/shift-patterns", params={"region": "americas"}, headers=api.admin)
    assert [p["agents"] for p in listed.json()] == [["lee", "sam"]]
    assert (
        await api.http.get("/v1/shift-patterns", params={"region": "apac"}, headers=api.admin)
    ).json() == []

    window = {"from": "2026-03-09T00:00:00-04:00", "to": "2026-03-10T00:00:00-04:00"}
    shifts = await api.http.get("/v1/agents/lee/shifts", params=window, headers=api.admin)
    assert shifts.status_code == 200, shifts.text
    assert shifts.json()["timezone"] == NY
    # lee is a week ahead: nights in the week of 2 March, off in the week of 9 March, so all
    # that shows is the tail of the night that started on Sunday 8 March.
    assert [(parse(s["start"]), parse(s["end"])) for s in shifts.json()["shifts"]] == [
        (ny(2026, 3, 9), ny(2026, 3, 9, 6))
    ]
    shifts = await api.http.get("/v1/agents/sam/shifts", params=window, headers=api.admin)
    (night,) = shifts.json()["shifts"]
    assert (parse(night["start"]), parse(night["end"])) == (ny(2026, 3, 9, 22), ny(2026, 3, 10, 0))
    assert night["start"].endswith("-04:00")  # local time of the region, with its offset

    # Changing the pattern changes both agents at once: make week 2 days as well.
    changed = {**PATTERN, "weeks": [[DAYS.model_dump(mode="json")]] * 2 + [[]]}
    del changed["id"]
    response = await api.http.put("/v1/shift-patterns/americas-rotation", json=changed, headers=api.admin)
    assert response.status_code == 200, response.text
    shifts = await api.http.get("/v1/agents/sam/shifts", params=window, headers=api.admin)
    assert [(parse(s["start"]), parse(s["end"])) for s in shifts.json()["shifts"]] == [
        (ny(2026, 3, 9, 8), ny(2026, 3, 9, 17))
    ]
    coverage = await api.http.get(
        "/v1/coverage", params={**window, "language": "en", "skill": "billing"}, headers=api.admin
    )
    gaps = [(parse(g["start"]), parse(g["end"])) for g in coverage.json()["gaps"]]
    assert gaps == [(ny(2026, 3, 9), ny(2026, 3, 9, 8)), (ny(2026, 3, 9, 17), ny(2026, 3, 10))]

    in_use = await api.http.delete("/v1/shift-patterns/americas-rotation", headers=api.admin)
    assert in_use.status_code == 409 and "lee, sam" in in_use.json()["detail"]
    to_emea = {**changed, "region_id": "emea"}
    assert (
        await api.http.put("/v1/shift-patterns/americas-rotation", json=to_emea, headers=api.admin)
    ).status_code == 409
    for agent_id in ("sam", "lee"):
        body = agent_body(agent_id, region="americas")
        del body["id"]
        assert (await api.http.put(f"/v1/agents/{agent_id}", json=body, headers=api.admin)).status_code == 200
    deleted = await api.http.delete("/v1/shift-patterns/americas-rotation", headers=api.admin)
    assert deleted.status_code == 200
    assert (await api.http.get("/v1/shift-patterns/americas-rotation", headers=api.admin)).status_code == 404
    assert (
        await api.http.delete("/v1/shift-patterns/americas-rotation", headers=api.admin)
    ).status_code == 404


async def test_shift_pattern_refusals(api):
    token = await make_agent(api, "ana")  # an agent may read patterns but not change them
    assert (
        await api.http.post("/v1/shift-patterns", json=PATTERN, headers=api.as_token(token))
    ).status_code == 403
    assert (await api.http.get("/v1/shift-patterns", headers=api.as_token(token))).status_code == 200

    def refused(**changes) -> dict:
        return {**PATTERN, **changes}

    for body, reason in (
        (refused(anchor="2026-03-03"), "Monday"),
        (refused(weeks=[[], []]), "at least one shift"),
        (refused(weeks=[[]] * 13), ""),
        (refused(id="Bad Id"), ""),
        (refused(weeks=[[{"days": [8], "start": "08:00", "end": "17:00"}]]), ""),
    ):
        response = await api.http.post("/v1/shift-patterns", json=body, headers=api.admin)
        assert response.status_code == 422, (body, response.text)
        assert reason in response.text
    unknown_region = await api.http.post(
        "/v1/shift-patterns", json=refused(region_id="mars"), headers=api.admin
    )
    assert unknown_region.status_code == 422 and "unknown region" in unknown_region.text
    assert (
        await api.http.put(
            "/v1/shift-patterns/nope", json={k: v for k, v in PATTERN.items() if k != "id"}, headers=api.admin
        )
    ).status_code == 404

    # An agent on an unknown pattern, or on a pattern of another region, is refused.
    assert (await api.http.post("/v1/shift-patterns", json=PATTERN, headers=api.admin)).status_code == 201
    for pattern_id in ("nope", "americas-rotation"):
        body = agent_body("ana") | {"shift_pattern_id": pattern_id}
        del body["id"]
        response = await api.http.put("/v1/agents/ana", json=body, headers=api.admin)
        assert response.status_code == 422 and "no shift pattern" in response.json()["detail"]
    created = await api.http.post(
        "/v1/agents", json=agent_body("bea") | {"shift_pattern_id": "americas-rotation"}, headers=api.admin
    )
    assert created.status_code == 422
    too_far = agent_body("cal", region="americas") | {
        "shift_pattern_id": "americas-rotation",
        "rotation_offset": 12,
    }
    assert (await api.http.post("/v1/agents", json=too_far, headers=api.admin)).status_code == 422

    span = {"from": "2026-03-09T00:00:00Z", "to": "2026-05-09T00:00:00Z"}
    assert (await api.http.get("/v1/agents/ana/shifts", params=span, headers=api.admin)).status_code == 422
    ok_span = {"from": "2026-03-09T00:00:00Z", "to": "2026-03-10T00:00:00Z"}
    assert (
        await api.http.get("/v1/agents/nobody/shifts", params=ok_span, headers=api.admin)
    ).status_code == 404
