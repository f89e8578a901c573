"""Regions, agents and customers: who works where, and who we serve."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator, model_validator

from domain.enums import CustomerTier
from domain.rosters import MAX_ROTATION_WEEKS, PATTERN_ID
from domain.routing import AgentLanguage, Shift
from domain.text import PlainText

SLUG = r"^[a-z][a-z0-9_-]{1,31}$"
IDENT = r"^[a-z0-9][a-z0-9_.-]{1,63}$"
LANGUAGE_CODE = r"^[a-z]{2,3}$"


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown IANA time zone {value!r}") from exc
    return value


def regional_task_queue(base: str, region: str) -> str:
    """The task queue of a region's own activities (its notification channels)."""
    return f"{base}-{region}"


def delivery_task_queue(base: str) -> str:
    """Where the central worker delivers notifications and pages, beside (never in) the slots that
    ticket lifecycles use: a receiver that hangs fills this queue's slots, not the tickets'."""
    return f"{base}--deliveries"


class RegionFields(BaseModel):
    name: PlainText = Field(min_length=1, max_length=100)
    timezone: str = Field(description="IANA time zone, e.g. Asia/Singapore")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return _check_timezone(value)


class Region(RegionFields):
    id: str = Field(pattern=SLUG)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class AgentFields(BaseModel):
    name: PlainText = Field(min_length=1, max_length=200)
    email: PlainText | None = Field(default=None, max_length=320)
    region_id: str = Field(pattern=SLUG)
    languages: list[AgentLanguage] = Field(min_length=1)
    skills: dict[str, int] = Field(description="module id -> level 1..5")
    capacity: int = Field(default=5, ge=1, le=100)
    shift: Shift = Field(default_factory=Shift)
    shift_pattern_id: str | None = Field(
        default=None,
        pattern=PATTERN_ID,
        description="a shared shift pattern of the agent's region; replaces `shift`",
    )
    rotation_offset: int = Field(
        default=0, ge=0, lt=MAX_ROTATION_WEEKS, description="weeks ahead of the pattern's week 1"
    )
    active: bool = True
    roles: list[Literal["lead", "manager", "sre"]] = Field(
        default_factory=list, description="who escalations reach: team lead, regional manager, SRE on-call"
    )

    @field_validator("skills")
    @classmethod
    def _skill_levels(cls, skills: dict[str, int]) -> dict[str, int]:
        for module, level in skills.items():
            if not re.fullmatch(SLUG, module):
                raise ValueError(f"skill {module!r} is not a module id")
            if not 1 <= level <= 5:
                raise ValueError(f"skill level for {module!r} must be 1..5, got {level}")
        return skills

    @model_validator(mode="after")
    def _language_codes(self) -> AgentFields:
        codes = [lang.code for lang in self.languages]
        if len(set(codes)) != len(codes):
            raise ValueError("each language may be listed once")
        return self


class Agent(AgentFields):
    id: str = Field(pattern=IDENT)
    load: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None


class CustomerFields(BaseModel):
    name: PlainText = Field(min_length=1, max_length=200)
    email: PlainText | None = Field(default=None, max_length=320)
    tier: CustomerTier = CustomerTier.STANDARD
    language: str = Field(default="en", pattern=LANGUAGE_CODE)
    region_id: str | None = Field(default=None, pattern=SLUG)
    calendar_id: str | None = Field(
        default=None, pattern=r"^[a-z][a-z0-9_-]{1,63}$", description="contract calendar of SLA clocks"
    )


class Customer(CustomerFields):
    id: str = Field(pattern=IDENT)
    created_at: datetime | None = None
    updated_at: datetime | None = None
