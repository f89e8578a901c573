"""Ranking asks whether a candidate stays on shift long enough with a short look ahead; the answer
must be the one the shift's end gives (`shift_ends_at`), for any weekly shift and overrides."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.rosters import OverrideKind, RosterOverrideFields
from domain.routing import Candidate, Shift

BASE = datetime(2026, 3, 27, tzinfo=UTC)  # the weekend Europe's clocks change


def candidate(shift: Shift, timezone: str, overrides: list[RosterOverrideFields]) -> Candidate:
    return Candidate(
        id="a1",
        name="A",
        region="emea",
        timezone=timezone,
        languages=[],
        skills={},
        capacity=5,
        load=0,
        shift=shift,
        overrides=overrides,
    )


minutes = st.integers(min_value=0, max_value=4 * 24 * 60)
shifts = st.builds(
    Shift,
    days=st.lists(st.integers(1, 7), unique=True, max_size=7),
    start=st.builds(time, st.integers(0, 23), st.sampled_from([0, 30])),
    end=st.builds(time, st.integers(0, 23), st.sampled_from([0, 30])),
)
overrides = st.lists(
    st.builds(
        lambda kind, at, length: RosterOverrideFields(
            kind=kind, starts_at=BASE + timedelta(minutes=at), ends_at=BASE + timedelta(minutes=at + length)
        ),
        st.sampled_from(list(OverrideKind)),
        minutes,
        st.integers(min_value=1, max_value=24 * 60),
    ),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(
    shift=shifts,
    timezone=st.sampled_from(["Europe/Dublin", "Asia/Singapore", "America/New_York"]),
    extra=overrides,
    at=minutes,
    lead=st.sampled_from([1, 15, 60, 24 * 60]),
)
def test_on_shift_throughout_agrees_with_the_end_of_the_shift(shift, timezone, extra, at, lead):
    agent = candidate(shift, timezone, extra)
    now, left = BASE + timedelta(minutes=at), timedelta(minutes=lead)
    end = agent.shift_ends_at(now)
    expected = end is None or end > now + left
    assert agent.on_shift_throughout(now, now + left + timedelta(microseconds=1)) is expected


def test_an_always_on_agent_and_one_whose_shift_ends_soon():
    always = candidate(Shift(days=[1, 2, 3, 4, 5, 6, 7], start=time(0), end=time(0)), "Europe/Dublin", [])
    assert always.on_shift_throughout(BASE, BASE + timedelta(hours=2))
    leaving = candidate(
        Shift(days=[], start=time(9), end=time(17)),
        "Europe/Dublin",
        [RosterOverrideFields(kind=OverrideKind.EXTRA, starts_at=BASE, ends_at=BASE + timedelta(minutes=10))],
    )
    assert leaving.on_shift_throughout(BASE, BASE + timedelta(minutes=10))
    assert not leaving.on_shift_throughout(BASE, BASE + timedelta(minutes=10, microseconds=1))
