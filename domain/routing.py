"""Who may take a ticket now: shifts in the region's time zone, language and skill, load."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, Field

from domain.enums import LanguageLevel
from domain.rosters import (
    RosterOverrideFields,
    Rotation,
    Schedule,
    Shift,
    on_shift,
    shift_end,
    shift_windows,
)


class AgentLanguage(BaseModel):
    code: str = Field(pattern=r"^[a-z]{2,3}$", description="ISO 639-1 code, e.g. ja")
    level: LanguageLevel = LanguageLevel.FLUENT


class Candidate(BaseModel):
    id: str
    name: str
    region: str
    timezone: str
    languages: list[AgentLanguage]
    skills: dict[str, int]
    capacity: int
    load: int
    shift: Shift
    rotation: Rotation | None = None  # a shared shift pattern replaces the agent's own shift
    active: bool = True
    overrides: list[RosterOverrideFields] = Field(default_factory=list)

    @property
    def schedule(self) -> Schedule:
        return self.rotation or self.shift

    def speaks(self, language: str) -> AgentLanguage | None:
        return next((lang for lang in self.languages if lang.code == language), None)

    def on_shift(self, at: datetime) -> bool:
        return on_shift(self.schedule, self.timezone, self.overrides, at)

    def shift_ends_at(self, at: datetime) -> datetime | None:
        return shift_end(self.schedule, self.timezone, self.overrides, at)

    def on_shift_throughout(self, start: datetime, end: datetime) -> bool:
        """On shift for the whole of [start, end]. Cheaper than `shift_ends_at` (which looks days
        ahead for the end of the stretch): ranking asks it of every candidate of every claim."""
        windows = shift_windows(self.schedule, self.timezone, self.overrides, start, end)
        return bool(windows) and windows[0][0] <= start and windows[0][1] >= end


class LanguageMatch(StrEnum):
    """How strictly a ticket's language must match; a queued ticket widens it as it waits."""

    NATIVE = "native"  # native speakers only
    FLUENT = "fluent"  # anyone who speaks it
    ANY = "any"  # any skilled agent: the conversation goes through machine translation

    def widened(self) -> LanguageMatch:
        return {LanguageMatch.NATIVE: LanguageMatch.FLUENT}.get(self, LanguageMatch.ANY)


def rank_candidates(
    candidates: list[Candidate],
    language: str,
    module: str,
    at: datetime,
    home_region: str | None,
    match: LanguageMatch = LanguageMatch.FLUENT,
    min_shift_left: timedelta = timedelta(0),
) -> list[Candidate]:
    """Agents able to take the ticket now, best first: lower load, native speakers, higher skill.

    An agent whose shift ends within `min_shift_left` is passed over: the ticket would only be
    handed off again at once."""

    def stays_long_enough(agent: Candidate) -> bool:
        if min_shift_left <= timedelta(0):
            return True
        # The same as shift_ends_at(at) being None or later than at + min_shift_left.
        return agent.on_shift_throughout(at, at + min_shift_left + timedelta(microseconds=1))

    def speaks_well_enough(agent: Candidate) -> bool:
        level = agent.speaks(language)
        if match is LanguageMatch.NATIVE:
            return level is not None and level.level is LanguageLevel.NATIVE
        return match is LanguageMatch.ANY or level is not None

    def fits(agent: Candidate) -> bool:
        return (
            agent.active
            and agent.load < agent.capacity
            and speaks_well_enough(agent)
            and module in agent.skills
            and agent.on_shift(at)
            and stays_long_enough(agent)
        )

    def score(agent: Candidate) -> tuple:
        level = agent.speaks(language)
        native = level is not None and level.level is LanguageLevel.NATIVE
        return (
            agent.load / agent.capacity,
            level is None,
            not native,
            -agent.skills.get(module, 0),
            agent.region != home_region,
            agent.id,
        )

    return sorted((a for a in candidates if fits(a)), key=score)
