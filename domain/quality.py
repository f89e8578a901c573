"""Quality alert rules: what is measured, when it counts as breaching, and what the lead is told.

Pure and deterministic. The database measures (db/quality.py); this module decides, from the
measurement and the rule's episode clock, whether an alert opens, stays, or resolves.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, Field


class RuleKind(StrEnum):
    FIRST_RESPONSE_P90 = "first_response_p90"  # minutes, over the window; unanswered tickets count their age
    QUEUE_AGE = "queue_age"  # minutes the oldest queued ticket has waited
    CSAT_MEAN = "csat_mean"  # mean score over the window; breaching when BELOW the threshold
    COVERAGE_GAP = "coverage_gap"  # minutes without a qualified agent on shift in the next window


UNITS = {
    RuleKind.FIRST_RESPONSE_P90: "min",
    RuleKind.QUEUE_AGE: "min",
    RuleKind.CSAT_MEAN: "",
    RuleKind.COVERAGE_GAP: "min",
}


class QualityRuleFields(BaseModel):
    kind: RuleKind
    region: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_-]{1,31}$")
    module: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_-]{1,31}$")
    language: str | None = Field(default=None, pattern=r"^[a-z]{2,3}$")
    threshold: float = Field(ge=0)
    window_minutes: int = Field(default=60, ge=1, le=60 * 24 * 31)
    sustain_minutes: int = Field(default=0, ge=0, le=60 * 24)
    enabled: bool = True


class QualityRule(QualityRuleFields):
    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{1,63}$")
    breaching_since: datetime | None = None


class Measurement(BaseModel):
    value: float | None  # None: nothing to measure (no tickets in the window)
    details: dict = Field(default_factory=dict)


class Decision(StrEnum):
    QUIET = "quiet"
    PENDING = "pending"  # breaching, not yet for the sustain time
    OPEN = "open"  # fire now
    STILL_OPEN = "still_open"
    RESOLVE = "resolve"


def breaching(rule: QualityRuleFields, value: float | None) -> bool:
    if value is None:
        return False
    if rule.kind is RuleKind.CSAT_MEAN:
        return value < rule.threshold
    return value > rule.threshold


def decide(
    rule: QualityRule, measured: Measurement, alert_open: bool, now: datetime
) -> tuple[Decision, datetime | None]:
    """What to do, and the rule's new episode clock (`breaching_since`)."""
    if not breaching(rule, measured.value):
        return (Decision.RESOLVE if alert_open else Decision.QUIET), None
    since = rule.breaching_since or now
    if alert_open:
        return Decision.STILL_OPEN, since
    if now - since >= timedelta(minutes=rule.sustain_minutes):
        return Decision.OPEN, since
    return Decision.PENDING, since


def describe(rule: QualityRuleFields, measured: Measurement) -> str:
    """The lead's one-line summary with the figures and a suggestion, e.g.
    "APAC first response p90 48 min vs 30 min target; 14 tickets queued for ja/video; 1 agent on shift"."""
    scope = (
        " ".join(p for p in (rule.region and rule.region.upper(), rule.module, rule.language) if p) or "all"
    )
    unit = UNITS[rule.kind]
    value = f"{measured.value:.1f}{(' ' + unit) if unit else ''}" if measured.value is not None else "n/a"
    target = f"{rule.threshold:g}{(' ' + unit) if unit else ''}"
    d = measured.details
    head = {
        RuleKind.FIRST_RESPONSE_P90: f"{scope} first response p90 {value} vs {target} target",
        RuleKind.QUEUE_AGE: f"{scope} oldest queued ticket {value} vs {target} limit",
        RuleKind.CSAT_MEAN: f"{scope} CSAT {value} vs {target} floor ({d.get('answers', 0)} answers)",
        RuleKind.COVERAGE_GAP: f"{scope} {value} without cover in the next {rule.window_minutes // 60} h",
    }[rule.kind]
    parts = [head]
    if d.get("queued"):
        busiest = ", ".join(f"{n} for {key}" for key, n in list(d["queued"].items())[:3])
        parts.append(f"{sum(d['queued'].values())} tickets queued ({busiest})")
    if "on_shift" in d:
        parts.append(f"{d['on_shift']} agent(s) on shift")
    if d.get("first_gap"):
        parts.append(f"first gap starts {d['first_gap']}")
    suggestion = {
        RuleKind.FIRST_RESPONSE_P90: "consider pulling in the next region or extra cover",
        RuleKind.QUEUE_AGE: "assign by hand or widen routing to fluent speakers",
        RuleKind.CSAT_MEAN: "review the low-scored tickets with the team",
        RuleKind.COVERAGE_GAP: "add extra cover or a swap before the gap starts",
    }[rule.kind]
    return "; ".join(parts) + f". Suggestion: {suggestion}."
