"""Pure unit tests for the domain rules (SLA clocks, triage, routing) and language detection.

No database, no Temporal: everything here runs in milliseconds except the lingua model load,
which happens once per module.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from activities.language import CONFIDENCE_THRESHOLD, LanguageDetectorService
from domain.enums import CustomerTier, LanguageLevel, Priority
from domain.routing import AgentLanguage, Candidate, Shift, rank_candidates
from domain.sla import SlaClock, SlaClockState, SlaTarget, SlaTargets, worst_state
from domain.triage import GENERAL_MODULE, ModuleDefinition, classify_module, decide_priority, fold

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
MIN = timedelta(minutes=1)
RATIO = 0.75


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


# --- SLA clocks ---------------------------------------------------------------------------------


def test_sla_targets_budget_per_target():
    targets = SlaTargets(priority=Priority.P2, first_response=minutes(60), resolution=minutes(480))
    assert targets.budget(SlaTarget.FIRST_RESPONSE) == minutes(60)
    assert targets.budget(SlaTarget.RESOLUTION) == minutes(480)


def test_sla_clock_start_elapsed_due_and_warning():
    clock = SlaClock.start(SlaTarget.FIRST_RESPONSE, HOUR, T0)
    assert clock.is_running and not clock.is_stopped
    assert clock.consumed == timedelta(0)
    assert clock.elapsed(T0) == timedelta(0)
    assert clock.elapsed(T0 + minutes(10)) == minutes(10)
    # A clock read before it started never reports negative time.
    assert clock.elapsed(T0 - minutes(5)) == timedelta(0)
    assert clock.due_at() == T0 + HOUR
    assert clock.warning_at(RATIO) == T0 + minutes(45)
    assert clock.state(T0 + minutes(10), RATIO) is SlaClockState.RUNNING
    assert clock.state(T0 + minutes(44), RATIO) is SlaClockState.RUNNING
    assert clock.state(T0 + minutes(45), RATIO) is SlaClockState.WARNING
    assert clock.state(T0 + minutes(59), RATIO) is SlaClockState.WARNING
    assert clock.state(T0 + HOUR, RATIO) is SlaClockState.BREACHED


def test_sla_clock_pause_then_resume_moves_due_by_paused_duration():
    clock = SlaClock.start(SlaTarget.RESOLUTION, HOUR, T0)
    original_due = clock.due_at()
    original_warning = clock.warning_at(RATIO)

    clock.pause(T0 + minutes(10))
    assert not clock.is_running
    assert clock.consumed == minutes(10)
    assert clock.due_at() is None
    assert clock.warning_at(RATIO) is None
    assert clock.state(T0 + minutes(500), RATIO) is SlaClockState.PAUSED
    # Time does not run while paused.
    assert clock.elapsed(T0 + minutes(500)) == minutes(10)
    # Pausing twice changes nothing.
    clock.pause(T0 + minutes(30))
    assert clock.consumed == minutes(10)

    clock.resume(T0 + minutes(40))
    assert clock.due_at() == original_due + minutes(30)
    assert clock.warning_at(RATIO) == original_warning + minutes(30)
    assert clock.elapsed(T0 + minutes(50)) == minutes(20)
    # Resuming a running clock does not restart its stretch.
    clock.resume(T0 + minutes(55))
    assert clock.due_at() == original_due + minutes(30)


def test_sla_clock_paused_past_budget_is_breached():
    clock = SlaClock.start(SlaTarget.FIRST_RESPONSE, HOUR, T0)
    clock.pause(T0 + HOUR + MIN)
    assert clock.state(T0 + 5 * HOUR, RATIO) is SlaClockState.BREACHED


def test_sla_clock_stop_within_budget_is_met():
    clock = SlaClock.start(SlaTarget.FIRST_RESPONSE, HOUR, T0)
    clock.stop(T0 + minutes(20))
    assert clock.is_stopped and not clock.is_running
    assert clock.stopped_at == T0 + minutes(20)
    assert clock.elapsed(T0 + 10 * HOUR) == minutes(20)
    assert clock.due_at() is None
    assert clock.state(T0 + 10 * HOUR, RATIO) is SlaClockState.MET
    # Stop is idempotent: a second stop keeps the first time.
    clock.stop(T0 + minutes(50))
    assert clock.stopped_at == T0 + minutes(20)
    # A stopped clock cannot be resumed (only restarted).
    clock.resume(T0 + minutes(60))
    assert not clock.is_running
    assert clock.state(T0 + 10 * HOUR, RATIO) is SlaClockState.MET


def test_sla_clock_stop_in_warning_zone_is_still_met():
    clock = SlaClock.start(SlaTarget.FIRST_RESPONSE, HOUR, T0)
    clock.stop(T0 + minutes(50))
    assert clock.state(T0 + minutes(51), RATIO) is SlaClockState.MET


@pytest.mark.parametrize("used", [minutes(60), minutes(61), minutes(600)])
def test_sla_clock_stop_at_or_after_budget_is_breached(used: timedelta):
    clock = SlaClock.start(SlaTarget.FIRST_RESPONSE, HOUR, T0)
    clock.stop(T0 + used)
    assert clock.state(T0 + 10 * HOUR, RATIO) is SlaClockState.BREACHED


def test_sla_clock_stop_while_paused_keeps_consumed_time():
    clock = SlaClock.start(SlaTarget.RESOLUTION, HOUR, T0)
    clock.pause(T0 + minutes(15))
    clock.stop(T0 + minutes(90))
    assert clock.elapsed(T0 + minutes(200)) == minutes(15)
    assert clock.state(T0 + minutes(200), RATIO) is SlaClockState.MET


def test_sla_clock_retarget_smaller_budget_moves_due_earlier():
    clock = SlaClock.start(SlaTarget.RESOLUTION, HOUR, T0)
    clock.retarget(minutes(30), T0 + minutes(10), [RATIO])
    assert clock.budget == minutes(30)
    assert clock.due_at() == T0 + minutes(30)
    assert clock.warning_at(RATIO) == T0 + minutes(22.5)
    assert clock.state(T0 + minutes(25), RATIO) is SlaClockState.WARNING
    assert clock.state(T0 + minutes(30), RATIO) is SlaClockState.BREACHED


def test_sla_clock_retarget_smaller_keeps_sent_flags_that_still_hold():
    clock = SlaClock.start(SlaTarget.RESOLUTION, HOUR, T0)
    clock.warning_sent = True
    clock.breach_sent = True
    # 50 minutes used, budget now 40: still breached, still past warning.
    clock.retarget(minutes(40), T0 + minutes(50), [RATIO])
    assert clock.breach_sent is True
    assert clock.warning_sent is True


def test_sla_clock_retarget_larger_budget_resets_flags_that_no_longer_hold():
    clock = SlaClock.start(SlaTarget.RESOLUTION, HOUR, T0)
    clock.warning_sent = True
    clock.breach_sent = True
    clock.retarget(minutes(120), T0 + minutes(70), [RATIO])
    assert clock.due_at() == T0 + minutes(120)
    # 70 < 120 → no longer breached; 70 < 90 → no longer in warning.
    assert clock.breach_sent is False
    assert clock.warning_sent is False
    assert clock.state(T0 + minutes(70), RATIO) is SlaClockState.RUNNING


def test_sla_clock_retarget_larger_keeps_warning_when_still_in_warning_zone():
    clock = SlaClock.start(SlaTarget.RESOLUTION, HOUR, T0)
    clock.warning_sent = True
    clock.breach_sent = True
    # 70 minutes used, budget now 80: no longer breached, but 70 >= 60 (75 % of 80) → still warning.
    clock.retarget(minutes(80), T0 + minutes(70), [RATIO])
    assert clock.breach_sent is False
    assert clock.warning_sent is True
    assert clock.state(T0 + minutes(70), RATIO) is SlaClockState.WARNING


def test_sla_clock_retarget_while_paused_leaves_it_paused():
    clock = SlaClock.start(SlaTarget.RESOLUTION, HOUR, T0)
    clock.pause(T0 + minutes(10))
    clock.retarget(minutes(30), T0 + minutes(40), [RATIO])
    assert clock.due_at() is None
    clock.resume(T0 + minutes(100))
    assert clock.due_at() == T0 + minutes(120)  # 20 minutes of budget left at resume


def test_sla_clock_restart_continues_from_consumed_time():
    clock = SlaClock.start(SlaTarget.RESOLUTION, HOUR, T0)
    clock.stop(T0 + minutes(20))
    clock.restart(T0 + minutes(100))
    assert clock.is_running and not clock.is_stopped
    assert clock.elapsed(T0 + minutes(110)) == minutes(30)
    assert clock.due_at() == T0 + minutes(140)
    assert clock.state(T0 + minutes(110), RATIO) is SlaClockState.RUNNING
    assert clock.state(T0 + minutes(140), RATIO) is SlaClockState.BREACHED


def test_sla_clock_restart_of_running_clock_is_noop():
    clock = SlaClock.start(SlaTarget.RESOLUTION, HOUR, T0)
    clock.restart(T0 + minutes(30))
    assert clock.running_since == T0
    assert clock.due_at() == T0 + HOUR


def test_sla_clock_survives_serialisation():
    clock = SlaClock.start(SlaTarget.RESOLUTION, HOUR, T0)
    clock.pause(T0 + minutes(10))
    again = SlaClock.model_validate_json(clock.model_dump_json())
    assert again == clock
    assert again.elapsed(T0 + HOUR) == minutes(10)


@pytest.mark.parametrize(
    ("states", "worst"),
    [
        ([], SlaClockState.MET),
        ([SlaClockState.MET], SlaClockState.MET),
        ([SlaClockState.MET, SlaClockState.PAUSED], SlaClockState.PAUSED),
        ([SlaClockState.PAUSED, SlaClockState.RUNNING], SlaClockState.RUNNING),
        ([SlaClockState.RUNNING, SlaClockState.WARNING, SlaClockState.MET], SlaClockState.WARNING),
        ([SlaClockState.MET, SlaClockState.BREACHED, SlaClockState.WARNING], SlaClockState.BREACHED),
        ([SlaClockState.BREACHED, SlaClockState.BREACHED], SlaClockState.BREACHED),
    ],
)
def test_worst_state_ordering(states: list[SlaClockState], worst: SlaClockState):
    assert worst_state(states) is worst


# --- triage: modules ------------------------------------------------------------------------------

MIGRATION = Path(__file__).resolve().parents[1] / "db" / "migrations" / "0001_spine.sql"


def _shipped_taxonomy() -> list[ModuleDefinition]:
    """The module taxonomy exactly as the first migration seeds it."""
    rows = re.findall(r"\('([a-z_-]+)', '([^']*)', '\{([^}]*)\}'\)", MIGRATION.read_text())
    return [
        ModuleDefinition(id=mid, name=name, keywords=[k for k in kws.split(",") if k])
        for mid, name, kws in rows
    ]


TAXONOMY = _shipped_taxonomy()


def test_shipped_taxonomy_parsed():
    ids = [m.id for m in TAXONOMY]
    assert ids == [
        "general",
        "authentication",
        "billing",
        "api",
        "mobile",
        "video",
        "database",
        "networking",
    ]
    assert "factura" in next(m for m in TAXONOMY if m.id == "billing").keywords


@pytest.mark.parametrize(
    ("text", "module"),
    [
        ("No puedo descargar la factura de marzo", "billing"),
        ("A fatura veio com cobrança duplicada", "billing"),
        ("Die Rechnung ist falsch", "billing"),
        ("請求書が届きません", "billing"),
        ("動画がアップロードできません", "video"),
        ("動画が再生されません", "video"),
        ("로그인이 안 돼요", "authentication"),
        ("비밀번호를 잊어버렸어요", "authentication"),
        ("Olvidé mi contraseña", "authentication"),
        ("olvide mi contrasena", "authentication"),
        ("OLVIDÉ MI CONTRASEÑA", "authentication"),
        ("Mot de passe oublié", "authentication"),
        ("The API returns 500 for every call", "api"),
        ("We hit the rate limit (429) on the webhook endpoint", "api"),
        ("The iOS app freezes", "mobile"),
        ("Our postgres replica lags", "database"),
        ("SSL certificate expired, TLS handshake fails", "networking"),
    ],
)
def test_classify_module_multilingual(text: str, module: str):
    match = classify_module(text, TAXONOMY)
    assert match.module == module, match
    assert match.score == len(match.matched) >= 1


def test_classify_module_picks_most_keyword_hits():
    text = "I was charged twice on the invoice and want a refund; the webhook also fired twice"
    match = classify_module(text, TAXONOMY)
    assert match.module == "billing"
    assert sorted(match.matched) == ["charged", "invoice", "refund"]
    assert match.score == 3


def test_classify_module_tie_goes_to_first_module_in_taxonomy_order():
    taxonomy = [
        ModuleDefinition(id="alpha", name="A", keywords=["foo"]),
        ModuleDefinition(id="beta", name="B", keywords=["bar"]),
    ]
    assert classify_module("foo bar", taxonomy).module == "alpha"
    assert classify_module("foo bar", list(reversed(taxonomy))).module == "beta"


def test_fold_strips_accents_and_case():
    assert fold("Contraseña") == "contrasena"
    assert fold("CONNEXIÓN") == "connexion"
    assert fold("Vídeo") == "video"
    assert fold("Straße") == "strasse"


@pytest.mark.parametrize(
    "text",
    [
        "We saw rapid growth this quarter",  # "api" inside "rapid"
        "The therapist portal is slow",  # "api" inside "therapist"
        "Our tokens expired",  # "token" but plural, whole words only
        "Please check the restaurant list",  # "rest" inside "restaurant"
    ],
)
def test_classify_module_ascii_keywords_match_whole_words_only(text: str):
    match = classify_module(text, TAXONOMY)
    assert "api" not in match.matched
    assert "rest" not in match.matched
    assert "token" not in match.matched
    assert match.module != "api"


def test_classify_module_ascii_keyword_at_punctuation_boundaries():
    assert classify_module("api/v2 is down", TAXONOMY).module == "api"
    assert classify_module("(SDK) failed", TAXONOMY).module == "api"


@pytest.mark.parametrize("text", ["Hello, I have a question", "", "¿Hola?", "こんにちは"])
def test_classify_module_general_when_nothing_matches(text: str):
    match = classify_module(text, TAXONOMY)
    assert match.module == GENERAL_MODULE
    assert match.score == 0
    assert match.matched == []


def test_classify_module_general_with_empty_taxonomy():
    assert classify_module("invoice", []).module == GENERAL_MODULE


def test_classify_module_kana_voiced_marks_are_not_folded_away():
    """BUG: fold() strips U+3099/U+309A (dakuten/handakuten) after NFKD, so プ→フ, グ→ク, バ→ハ.

    The mobile keyword アプリ ("app") then matches アフリカ ("Africa"): a ticket about customers in
    Africa is triaged to the mobile module.
    """
    match = classify_module("アフリカ地域のお客様から問い合わせがありました", TAXONOMY)
    assert match.module == GENERAL_MODULE, match


# --- triage: priority -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "priority"),
    [
        (CustomerTier.ENTERPRISE, Priority.P2),
        (CustomerTier.BUSINESS, Priority.P3),
        (CustomerTier.STANDARD, Priority.P4),
    ],
)
def test_decide_priority_tier_baseline(tier: CustomerTier, priority: Priority):
    decision = decide_priority(tier, None, "How do I export a report?")
    assert decision.priority is priority
    assert decision.reasons == [f"{tier.value} tier baseline {priority.value}"]


@pytest.mark.parametrize(
    ("tier", "text", "priority"),
    [
        (CustomerTier.STANDARD, "Total outage since 9am", Priority.P2),
        (CustomerTier.BUSINESS, "We have data loss after the upgrade", Priority.P1),
        (CustomerTier.ENTERPRISE, "production down in eu-west", Priority.P1),  # never beyond P1
        (CustomerTier.STANDARD, "Caída total del servicio", Priority.P2),
        (CustomerTier.STANDARD, "Perte de données sur le projet", Priority.P2),
        (CustomerTier.STANDARD, "サーバーでデータ消失が起きました", Priority.P2),
        (CustomerTier.STANDARD, "서비스 중단 상태입니다", Priority.P2),
        (CustomerTier.STANDARD, "生产环境宕机了", Priority.P2),
    ],
)
def test_decide_priority_critical_cue_lifts_two_levels(tier: CustomerTier, text: str, priority: Priority):
    decision = decide_priority(tier, None, text)
    assert decision.priority is priority
    assert any(r.startswith("critical cues:") for r in decision.reasons)


@pytest.mark.parametrize(
    ("tier", "text", "priority"),
    [
        (CustomerTier.STANDARD, "This is urgent", Priority.P3),
        (CustomerTier.BUSINESS, "The app crashes on start", Priority.P2),
        (CustomerTier.ENTERPRISE, "I cannot login", Priority.P1),
        (CustomerTier.STANDARD, "La exportación no funciona", Priority.P3),
        (CustomerTier.STANDARD, "Der Export funktioniert nicht", Priority.P3),
        (CustomerTier.STANDARD, "アプリがクラッシュします", Priority.P3),
        (CustomerTier.STANDARD, "앱이 긴급하게 필요합니다 긴급", Priority.P3),
    ],
)
def test_decide_priority_high_cue_lifts_one_level(tier: CustomerTier, text: str, priority: Priority):
    decision = decide_priority(tier, None, text)
    assert decision.priority is priority
    assert any(r.startswith("severity cues:") for r in decision.reasons)


def test_decide_priority_critical_and_high_cues_lift_only_two_levels():
    decision = decide_priority(CustomerTier.STANDARD, None, "URGENT: outage, everything is broken")
    assert decision.priority is Priority.P2
    assert not any(r.startswith("severity cues:") for r in decision.reasons)


def test_decide_priority_cues_are_whole_words():
    # "unblocked" must not read as "blocked", "crashed" is not in the cue list.
    decision = decide_priority(CustomerTier.STANDARD, None, "We are unblocked now, thanks")
    assert decision.priority is Priority.P4


@pytest.mark.parametrize(
    ("tier", "declared", "text", "priority"),
    [
        (CustomerTier.STANDARD, Priority.P1, "please look", Priority.P3),  # capped at standard ceiling
        (CustomerTier.STANDARD, Priority.P2, "please look", Priority.P3),
        (CustomerTier.STANDARD, Priority.P3, "please look", Priority.P3),
        (CustomerTier.BUSINESS, Priority.P1, "please look", Priority.P2),
        (CustomerTier.ENTERPRISE, Priority.P1, "please look", Priority.P1),
        (CustomerTier.ENTERPRISE, Priority.P4, "please look", Priority.P2),  # declaring lower never lowers
        (CustomerTier.STANDARD, Priority.P1, "outage", Priority.P2),  # cue beats the capped declaration
        (CustomerTier.STANDARD, Priority.P2, "urgent", Priority.P3),
        (CustomerTier.ENTERPRISE, Priority.P1, "production down", Priority.P1),
    ],
)
def test_decide_priority_declared_capped_at_tier_ceiling(
    tier: CustomerTier, declared: Priority, text: str, priority: Priority
):
    assert decide_priority(tier, declared, text).priority is priority


def test_decide_priority_reason_mentions_cap():
    decision = decide_priority(CustomerTier.STANDARD, Priority.P1, "please look")
    assert decision.reasons[-1] == "declared P1, capped at P3 for tier"


# --- routing: shifts ------------------------------------------------------------------------------

NY = ZoneInfo("America/New_York")
DUBLIN = ZoneInfo("Europe/Dublin")
SINGAPORE = ZoneInfo("Asia/Singapore")
TOKYO = ZoneInfo("Asia/Tokyo")
LA = ZoneInfo("America/Los_Angeles")
EVERY_DAY = [1, 2, 3, 4, 5, 6, 7]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(tz: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=tz)


@pytest.mark.parametrize(
    ("tz", "start", "at", "covered"),
    [
        # Dublin, winter (GMT = UTC) and summer (IST = UTC+1); 2026-01-05 and 2026-07-06 are Mondays.
        (DUBLIN, 9, utc(2026, 1, 5, 8, 59), False),
        (DUBLIN, 9, utc(2026, 1, 5, 9, 0), True),
        (DUBLIN, 9, utc(2026, 1, 5, 16, 59), True),
        (DUBLIN, 9, utc(2026, 1, 5, 17, 0), False),
        (DUBLIN, 9, utc(2026, 7, 6, 7, 59), False),
        (DUBLIN, 9, utc(2026, 7, 6, 8, 0), True),
        (DUBLIN, 9, utc(2026, 7, 6, 15, 59), True),
        (DUBLIN, 9, utc(2026, 7, 6, 16, 0), False),
        # Singapore (UTC+8, no DST).
        (SINGAPORE, 9, utc(2026, 1, 4, 1, 0), False),  # Sunday 09:00 local
        (SINGAPORE, 9, utc(2026, 1, 5, 1, 0), True),  # Monday 09:00 local
        (SINGAPORE, 9, utc(2026, 1, 4, 23, 30), False),  # Monday 07:30 local
        (SINGAPORE, 9, utc(2026, 1, 9, 8, 59), True),  # Friday 16:59 local
        (SINGAPORE, 9, utc(2026, 1, 9, 9, 0), False),  # Friday 17:00 local
        # Tokyo (UTC+9): the weekday is the local one, not the UTC one.
        (TOKYO, 8, utc(2026, 1, 9, 23, 0), False),  # Friday in UTC, Saturday 08:00 local
        (TOKYO, 8, utc(2026, 1, 11, 23, 0), True),  # Sunday in UTC, Monday 08:00 local
    ],
)
def test_day_shift_in_time_zones(tz: ZoneInfo, start: int, at: datetime, covered: bool):
    shift = Shift(days=[1, 2, 3, 4, 5], start=time(start), end=time(17))
    assert shift.covers(at, tz) is covered


# 2026-01-09 is a Friday; 2026-01-10 Saturday; 2026-01-11 Sunday; 2026-01-12 Monday.
@pytest.mark.parametrize(
    ("at", "covered"),
    [
        (local(LA, 2026, 1, 9, 21, 59), False),  # Friday before the shift
        (local(LA, 2026, 1, 9, 22, 0), True),  # Friday night
        (local(LA, 2026, 1, 9, 23, 59), True),
        (local(LA, 2026, 1, 10, 0, 0), True),  # Saturday 00:00 is Friday's shift
        (local(LA, 2026, 1, 10, 5, 59), True),  # tail of Friday's shift
        (local(LA, 2026, 1, 10, 6, 0), False),
        (local(LA, 2026, 1, 10, 22, 0), False),  # Saturday is not a working day
        (local(LA, 2026, 1, 11, 3, 0), False),  # tail of Saturday night: not worked
        (local(LA, 2026, 1, 12, 3, 0), False),  # Monday 03:00 is Sunday night's tail: not worked
        (local(LA, 2026, 1, 12, 12, 0), False),  # mid-day gap
        (local(LA, 2026, 1, 12, 22, 30), True),  # Monday night
        (local(LA, 2026, 1, 13, 5, 59), True),  # Tuesday 05:59, tail of Monday
        # The same instants given in UTC (PST = UTC-8).
        (utc(2026, 1, 10, 6, 0), True),  # Friday 22:00 PST
        (utc(2026, 1, 10, 13, 59), True),  # Saturday 05:59 PST
        (utc(2026, 1, 10, 14, 0), False),  # Saturday 06:00 PST
    ],
)
def test_overnight_shift_tail_belongs_to_previous_day(at: datetime, covered: bool):
    shift = Shift(days=[1, 2, 3, 4, 5], start=time(22), end=time(6))
    assert shift.covers(at, LA) is covered


@pytest.mark.parametrize(
    ("at", "covered"),
    [
        (local(TOKYO, 2026, 1, 9, 23, 59), False),  # Friday
        (local(TOKYO, 2026, 1, 10, 0, 0), True),  # Saturday starts
        (local(TOKYO, 2026, 1, 10, 12, 0), True),
        (local(TOKYO, 2026, 1, 11, 23, 59), True),  # Sunday end
        (local(TOKYO, 2026, 1, 12, 0, 0), False),  # Monday
        (utc(2026, 1, 9, 15, 0), True),  # Friday in UTC, Saturday 00:00 in Tokyo
        (utc(2026, 1, 9, 14, 59), False),
    ],
)
def test_24h_shift_start_equals_end(at: datetime, covered: bool):
    shift = Shift(days=[6, 7], start=time(0), end=time(0))
    assert shift.covers(at, TOKYO) is covered


def test_24h_shift_not_starting_at_midnight_runs_from_its_start_to_the_next_day():
    shift = Shift(days=[3], start=time(9), end=time(9))
    # Wednesday 2026-01-14 09:00 to Thursday 09:00, local: the same reading as the roster's windows.
    assert not shift.covers(local(DUBLIN, 2026, 1, 14, 8, 30), DUBLIN)
    assert shift.covers(local(DUBLIN, 2026, 1, 14, 9, 0), DUBLIN)
    assert shift.covers(local(DUBLIN, 2026, 1, 15, 8, 30), DUBLIN)
    assert not shift.covers(local(DUBLIN, 2026, 1, 15, 9, 0), DUBLIN)


NY_DAY = Shift(days=EVERY_DAY, start=time(8), end=time(17))


@pytest.mark.parametrize(
    ("at", "covered"),
    [
        # Friday 2026-03-06, still EST (UTC-5): 08:00 local = 13:00 UTC.
        (utc(2026, 3, 6, 12, 59), False),
        (utc(2026, 3, 6, 13, 0), True),
        # Sunday 2026-03-08: clocks spring forward at 02:00; 08:00 EDT = 12:00 UTC.
        (utc(2026, 3, 8, 11, 59), False),
        (utc(2026, 3, 8, 12, 0), True),
        (utc(2026, 3, 8, 20, 59), True),
        (utc(2026, 3, 8, 21, 0), False),
        # Monday 2026-03-09, EDT (UTC-4).
        (utc(2026, 3, 9, 11, 59), False),
        (utc(2026, 3, 9, 12, 0), True),
        (utc(2026, 3, 9, 12, 59), True),
        (utc(2026, 3, 9, 20, 59), True),
        (utc(2026, 3, 9, 21, 0), False),
        # Saturday 2026-10-31, still EDT.
        (utc(2026, 10, 31, 11, 59), False),
        (utc(2026, 10, 31, 12, 0), True),
        # Sunday 2026-11-01: clocks fall back at 02:00; 08:00 EST = 13:00 UTC.
        (utc(2026, 11, 1, 12, 0), False),
        (utc(2026, 11, 1, 12, 59), False),
        (utc(2026, 11, 1, 13, 0), True),
        (utc(2026, 11, 1, 21, 59), True),
        (utc(2026, 11, 1, 22, 0), False),
        # Monday 2026-11-02, EST (UTC-5).
        (utc(2026, 11, 2, 12, 59), False),
        (utc(2026, 11, 2, 13, 0), True),
        (utc(2026, 11, 2, 14, 0), True),
        (utc(2026, 11, 2, 21, 59), True),
        (utc(2026, 11, 2, 22, 0), False),
        # A summer Monday (2026-07-13, EDT): 12:00 UTC is 08:00 local, 12:59 and 13:00 both covered.
        (utc(2026, 7, 13, 11, 59), False),
        (utc(2026, 7, 13, 12, 0), True),
        (utc(2026, 7, 13, 12, 59), True),
        (utc(2026, 7, 13, 13, 0), True),
        (utc(2026, 7, 13, 20, 59), True),
        (utc(2026, 7, 13, 21, 0), False),
        # A winter Monday (2026-01-12, EST): 13:00 UTC is 08:00 local.
        (utc(2026, 1, 12, 12, 59), False),
        (utc(2026, 1, 12, 13, 0), True),
        (utc(2026, 1, 12, 14, 0), True),
        (utc(2026, 1, 12, 21, 59), True),
        (utc(2026, 1, 12, 22, 0), False),
    ],
)
def test_new_york_day_shift_across_dst(at: datetime, covered: bool):
    assert NY_DAY.covers(at, NY) is covered


def test_new_york_weekday_shift_summer_vs_winter_monday():
    weekdays = Shift(days=[1, 2, 3, 4, 5], start=time(8), end=time(17))
    # Summer Monday: the shift opens at 12:00 UTC; winter Monday: at 13:00 UTC.
    assert weekdays.covers(utc(2026, 7, 13, 12, 0), NY)
    assert not weekdays.covers(utc(2026, 7, 13, 11, 59), NY)
    assert not weekdays.covers(utc(2026, 1, 12, 12, 59), NY)
    assert weekdays.covers(utc(2026, 1, 12, 13, 0), NY)
    # DST-change Sundays are not worked; the Mondays after them are.
    assert not weekdays.covers(utc(2026, 3, 8, 14, 0), NY)
    assert weekdays.covers(utc(2026, 3, 9, 12, 0), NY)
    assert not weekdays.covers(utc(2026, 11, 1, 14, 0), NY)
    assert weekdays.covers(utc(2026, 11, 2, 13, 0), NY)
    assert not weekdays.covers(utc(2026, 11, 2, 12, 0), NY)


@pytest.mark.parametrize(
    ("at", "covered"),
    [
        # Night of Sat 2026-03-07 → Sun 2026-03-08 (spring forward at 02:00 EST → 03:00 EDT).
        (utc(2026, 3, 8, 2, 59), False),  # Saturday 21:59 EST
        (utc(2026, 3, 8, 3, 0), True),  # Saturday 22:00 EST
        (utc(2026, 3, 8, 7, 0), True),  # 03:00 EDT (02:00 never happened)
        (utc(2026, 3, 8, 9, 59), True),  # 05:59 EDT
        (utc(2026, 3, 8, 10, 0), False),  # 06:00 EDT
        # Night of Sat 2026-10-31 → Sun 2026-11-01 (fall back at 02:00 EDT → 01:00 EST).
        (utc(2026, 11, 1, 1, 59), False),  # Saturday 21:59 EDT
        (utc(2026, 11, 1, 2, 0), True),  # Saturday 22:00 EDT
        (utc(2026, 11, 1, 5, 30), True),  # first 01:30 (EDT)
        (utc(2026, 11, 1, 6, 30), True),  # second 01:30 (EST)
        (utc(2026, 11, 1, 10, 59), True),  # 05:59 EST
        (utc(2026, 11, 1, 11, 0), False),  # 06:00 EST
    ],
)
def test_new_york_overnight_shift_across_dst(at: datetime, covered: bool):
    shift = Shift(days=EVERY_DAY, start=time(22), end=time(6))
    assert shift.covers(at, NY) is covered


# --- routing: ranking -----------------------------------------------------------------------------

ALWAYS = Shift(days=EVERY_DAY, start=time(0), end=time(0))
WEEKENDS = Shift(days=[6, 7], start=time(0), end=time(0))
NOW = utc(2026, 3, 9, 15, 0)  # a Monday


def agent(
    agent_id: str,
    *,
    region: str = "emea",
    timezone: str = "Europe/Dublin",
    languages: dict[str, LanguageLevel] | None = None,
    skills: dict[str, int] | None = None,
    capacity: int = 5,
    load: int = 0,
    shift: Shift = ALWAYS,
    active: bool = True,
) -> Candidate:
    languages = languages if languages is not None else {"en": LanguageLevel.NATIVE}
    return Candidate(
        id=agent_id,
        name=agent_id.title(),
        region=region,
        timezone=timezone,
        languages=[AgentLanguage(code=c, level=lvl) for c, lvl in languages.items()],
        skills=skills if skills is not None else {"billing": 3},
        capacity=capacity,
        load=load,
        shift=shift,
        active=active,
    )


def ids(candidates: list[Candidate]) -> list[str]:
    return [c.id for c in candidates]


def test_rank_candidates_excludes_agents_who_cannot_take_the_ticket():
    candidates = [
        agent("fits"),
        agent("off-shift", shift=WEEKENDS),
        agent("full", capacity=2, load=2),
        agent("over", capacity=2, load=3),
        agent("inactive", active=False),
        agent("wrong-language", languages={"de": LanguageLevel.NATIVE}),
        agent("no-skill", skills={"video": 5}),
        agent("asleep", timezone="Asia/Tokyo", shift=Shift(days=EVERY_DAY, start=time(9), end=time(17))),
    ]
    assert ids(rank_candidates(candidates, "en", "billing", NOW, "emea")) == ["fits"]


def test_rank_candidates_empty_when_nobody_fits():
    assert rank_candidates([], "en", "billing", NOW, None) == []
    assert rank_candidates([agent("a")], "ko", "billing", NOW, None) == []


def test_rank_candidates_lower_load_ratio_wins_over_everything_else():
    busy_native_expert = agent("busy", load=2, capacity=4, skills={"billing": 5})
    idle_fluent_novice = agent(
        "idle",
        region="apac",
        load=1,
        capacity=5,
        languages={"en": LanguageLevel.FLUENT},
        skills={"billing": 1},
    )
    ranked = rank_candidates([busy_native_expert, idle_fluent_novice], "en", "billing", NOW, "emea")
    assert ids(ranked) == ["idle", "busy"]


def test_rank_candidates_native_before_fluent_at_equal_load_ratio():
    fluent = agent(
        "fluent", load=1, capacity=4, languages={"en": LanguageLevel.FLUENT}, skills={"billing": 5}
    )
    native = agent("native", load=2, capacity=8, skills={"billing": 1}, region="apac")
    assert ids(rank_candidates([fluent, native], "en", "billing", NOW, "emea")) == ["native", "fluent"]


def test_rank_candidates_higher_skill_then_home_region():
    low = agent("low", skills={"billing": 2})
    high_away = agent("high-away", skills={"billing": 4}, region="apac", timezone="Asia/Singapore")
    high_home = agent("high-home", skills={"billing": 4}, region="emea")
    ranked = rank_candidates([low, high_away, high_home], "en", "billing", NOW, "emea")
    assert ids(ranked) == ["high-home", "high-away", "low"]
    ranked = rank_candidates([low, high_away, high_home], "en", "billing", NOW, "apac")
    assert ids(ranked) == ["high-away", "high-home", "low"]


def test_rank_candidates_full_tie_broken_by_id():
    ranked = rank_candidates([agent("b"), agent("c"), agent("a")], "en", "billing", NOW, None)
    assert ids(ranked) == ["a", "b", "c"]


def test_rank_candidates_uses_language_level_of_the_ticket_language():
    bilingual = agent("bi", languages={"en": LanguageLevel.NATIVE, "es": LanguageLevel.FLUENT})
    spanish = agent("es", languages={"es": LanguageLevel.NATIVE})
    assert ids(rank_candidates([bilingual, spanish], "es", "billing", NOW, None)) == ["es", "bi"]
    assert ids(rank_candidates([bilingual, spanish], "en", "billing", NOW, None)) == ["bi"]


def test_candidate_on_shift_uses_its_own_time_zone():
    nine_to_five = Shift(days=EVERY_DAY, start=time(9), end=time(17))
    dublin = agent("dublin", shift=nine_to_five)
    singapore = agent("sg", region="apac", timezone="Asia/Singapore", shift=nine_to_five)
    at = utc(2026, 3, 9, 3, 0)  # 03:00 in Dublin, 11:00 in Singapore
    assert not dublin.on_shift(at)
    assert singapore.on_shift(at)
    assert ids(rank_candidates([dublin, singapore], "en", "billing", at, "emea")) == ["sg"]


# --- language detection ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector() -> LanguageDetectorService:
    service = LanguageDetectorService(["en", "es", "pt", "fr", "de", "zh", "ja", "ko"])
    service.warm_up()
    return service


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("로그인이 안 돼요", "ko"),
        ("API 키가 작동하지 않습니다", "ko"),
        ("ログインできません", "ja"),
        ("動画が再生されません", "ja"),  # kanji + hiragana is Japanese, not Chinese
        ("データベース", "ja"),
        ("SDK crash on iOS 17 求助", "zh"),
        ("数据库无法连接 请帮忙", "zh"),
    ],
)
def test_detect_by_script(detector: LanguageDetectorService, text: str, code: str):
    detected = detector.detect(text)
    assert detected is not None
    assert detected.code == code
    assert detected.method == "script"
    assert detected.confidence == 1.0


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("No puedo iniciar sesión en mi cuenta desde ayer, ¿pueden ayudarme por favor?", "es"),
        ("La factura de este mes tiene un cobro duplicado y necesito un reembolso.", "es"),
        ("Não consigo acessar minha conta desde ontem, vocês podem me ajudar por favor?", "pt"),
        ("A fatura deste mês veio com uma cobrança duplicada e preciso de um reembolso.", "pt"),
        ("Je n'arrive plus à me connecter à mon compte depuis hier, pouvez-vous m'aider ?", "fr"),
        ("La facture de ce mois contient un double prélèvement, je voudrais un remboursement.", "fr"),
        ("Ich kann mich seit gestern nicht mehr in mein Konto einloggen, können Sie mir helfen?", "de"),
        ("Die Rechnung für diesen Monat enthält eine doppelte Abbuchung, bitte erstatten Sie.", "de"),
        ("I cannot log into my account since yesterday, could you please help me?", "en"),
        ("The invoice for this month shows a duplicate charge and I need a refund.", "en"),
    ],
)
def test_detect_with_lingua(detector: LanguageDetectorService, text: str, code: str):
    detected = detector.detect(text)
    assert detected is not None
    assert detected.code == code
    assert detected.method == "lingua"
    assert 0.0 <= detected.confidence <= 1.0
    assert detected.confidence >= CONFIDENCE_THRESHOLD


@pytest.mark.parametrize("text", ["", "12345", "!!!"])
def test_detect_without_language_is_uncertain(detector: LanguageDetectorService, text: str):
    detected = detector.detect(text)
    # Either no answer or one below the threshold, so triage falls back to the profile language.
    assert detected is None or (0.0 <= detected.confidence < CONFIDENCE_THRESHOLD)


class _NoLanguages:
    """Stands in for lingua: knows no language, so detect() has nothing to answer."""

    def compute_language_confidence_values(self, text: str) -> list:
        return []


def test_script_check_only_answers_served_languages(monkeypatch: pytest.MonkeyPatch):
    # Korean served: the script shortcut answers without loading any model.
    served = LanguageDetectorService(["en", "ko"])
    monkeypatch.setattr(served, "_load", lambda: pytest.fail("lingua should not be needed"))
    assert served.detect("로그인").code == "ko"
    # Korean not served: the shortcut is skipped and the (stubbed) model has the last word.
    unserved = LanguageDetectorService(["en"])
    monkeypatch.setattr(unserved, "_load", _NoLanguages)
    assert unserved.detect("로그인") is None
