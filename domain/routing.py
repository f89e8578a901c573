"""Who may take a ticket now: shifts in the region's time zone, language and skill, load."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from domain.enums import LanguageLevel


class Shift(BaseModel):
    """A weekly shift in the agent's region time zone; `end <= start` means it runs past midnight."""

    days: list[Annotated[int, Field(ge=1, le=7)]] = Field(
        default_factory=lambda: [1, 2, 3, 4, 5], max_length=7, description="ISO weekdays, Monday=1"
    )
    start: time = time(8, 0)
    end: time = time(17, 0)

    def covers(self, at: datetime, tz: ZoneInfo) -> bool:
        local = at.astimezone(tz)
        t = local.time().replace(tzinfo=None)
        if self.start < self.end:
            return local.isoweekday() in self.days and self.start <= t < self.end
        if self.start == self.end:  # a 24-hour shift
            return local.isoweekday() in self.days
        if t >= self.start:
            return local.isoweekday() in self.days
        if t < self.end:  # the tail of last night's shift
            return (local - timedelta(days=1)).isoweekday() in self.days
        return False


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
    active: bool = True

    def speaks(self, language: str) -> AgentLanguage | None:
        return next((lang for lang in self.languages if lang.code == language), None)

    def on_shift(self, at: datetime) -> bool:
        return self.shift.covers(at, ZoneInfo(self.timezone))


def rank_candidates(
    candidates: list[Candidate], language: str, module: str, at: datetime, home_region: str | None
) -> list[Candidate]:
    """Agents able to take the ticket now, best first: native speakers, higher skill, lower load."""

    def fits(agent: Candidate) -> bool:
        return (
            agent.active
            and agent.load < agent.capacity
            and agent.speaks(language) is not None
            and module in agent.skills
            and agent.on_shift(at)
        )

    def score(agent: Candidate) -> tuple:
        level = agent.speaks(language)
        native = level is not None and level.level is LanguageLevel.NATIVE
        return (
            agent.load / agent.capacity,
            not native,
            -agent.skills.get(module, 0),
            agent.region != home_region,
            agent.id,
        )

    return sorted((a for a in candidates if fits(a)), key=score)
