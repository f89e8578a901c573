"""Quality alerts: rules measured against the real PostgreSQL, and the scheduled workflow firing
once per episode and clearing on the time-skipping server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from db import quality
from domain.enums import LanguageLevel
from domain.quality import Decision, Measurement, QualityRule, QualityRuleFields, RuleKind, decide, describe
from tests.conftest import add_agent, add_customer, make_settings, running_worker, saved_ticket
from workflows.quality import QualityAlertsWorkflow

T0 = datetime(2026, 3, 9, 12, tzinfo=UTC)


def rule(kind: RuleKind = RuleKind.QUEUE_AGE, **changes) -> QualityRule:
    values = {"region": "apac", "threshold": 10, "sustain_minutes": 5} | changes
    return QualityRule(id="rule", kind=kind, **values)


def test_an_episode_opens_after_its_sustain_time_once_and_resolves_when_clear():
    r = rule()
    over, under = Measurement(value=15), Measurement(value=3)
    assert decide(r, under, False, T0) == (Decision.QUIET, None)
    assert decide(r, over, False, T0) == (Decision.PENDING, T0)
    started = r.model_copy(update={"breaching_since": T0})
    assert decide(started, over, False, T0 + timedelta(minutes=4)) == (Decision.PENDING, T0)
    assert decide(started, over, False, T0 + timedelta(minutes=5)) == (Decision.OPEN, T0)
    assert decide(started, over, True, T0 + timedelta(minutes=9)) == (Decision.STILL_OPEN, T0)
    assert decide(started, under, True, T0 + timedelta(minutes=10)) == (Decision.RESOLVE, None)
    assert decide(rule(), Measurement(value=None), False, T0) == (Decision.QUIET, None)


def test_csat_breaches_below_its_floor_and_messages_carry_figures_and_a_suggestion():
    csat = rule(RuleKind.CSAT_MEAN, module="video").model_copy(
        update={"threshold": 4.0, "sustain_minutes": 0}
    )
    assert decide(csat, Measurement(value=3.2), False, T0)[0] is Decision.OPEN
    assert decide(csat, Measurement(value=4.5), False, T0)[0] is Decision.QUIET
    frt = rule(RuleKind.FIRST_RESPONSE_P90).model_copy(update={"threshold": 30})
    message = describe(frt, Measurement(value=48, details={"queued": {"ja/video": 14}, "on_shift": 1}))
    assert message == (
        "APAC first response p90 48.0 min vs 30 min target; 14 tickets queued (14 for ja/video); "
        "1 agent(s) on shift. Suggestion: consider pulling in the next region or extra cover."
    )


async def apac_ticket(pool: asyncpg.Pool, created: datetime, **columns) -> int:
    row = await saved_ticket(pool, "sakura", created_at=created)
    sets = ", ".join(f"{name} = ${n}" for n, name in enumerate(columns, 2))
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE tickets SET region = 'apac', language = 'ja', module = 'video'"
            f"{', ' + sets if sets else ''} WHERE id = $1",
            row["id"],
            *columns.values(),
        )
    return row["id"]


async def test_measurements(db: asyncpg.Pool):
    await add_customer(db, "sakura", region="apac", language="ja")
    now = T0
    # First responses after 10, 20 and 50 minutes, and one still waiting for 70 minutes.
    for minutes in (10, 20, 50):
        created = now - timedelta(minutes=80)
        await apac_ticket(db, created, first_response_at=created + timedelta(minutes=minutes))
    waiting = await apac_ticket(db, now - timedelta(minutes=70))
    async with db.acquire() as conn:
        await conn.execute(
            """INSERT INTO ticket_queue (ticket_id, home_region, language, module, priority, queued_at)
               VALUES ($1, 'apac', 'ja', 'video', 'P2', $2)""",
            waiting,
            now - timedelta(minutes=70),
        )
        frt = await quality.measure(conn, rule(RuleKind.FIRST_RESPONSE_P90, window_minutes=120), now)
        assert round(frt.value, 1) == 64.0  # p90 of 10, 20, 50, 70 (interpolated)
        assert frt.details["queued"] == {"ja/video": 1}
        age = await quality.measure(conn, rule(), now)
        assert round(age.value) == 70
        assert (await quality.measure(conn, rule(region="emea"), now)).value is None
        gap = await quality.measure(
            conn, rule(RuleKind.COVERAGE_GAP, language="ja", module="video", window_minutes=12 * 60), now
        )
        assert gap.value == 12 * 60  # nobody speaks Japanese yet
        await add_agent(
            db, "kenji", region="apac", languages={"ja": LanguageLevel.NATIVE}, skills={"video": 4}
        )
        assert (
            await quality.measure(conn, rule(RuleKind.COVERAGE_GAP, language="ja", module="video"), now)
        ).value == 0


async def test_the_schedule_fires_once_per_episode_and_clears(db, skipping_env, shared_deps, database_url):
    env = skipping_env
    settings = make_settings(database_url)
    await add_customer(db, "sakura", region="apac", language="ja")
    await add_agent(db, "kenji", region="apac")
    async with db.acquire() as conn:
        await conn.execute("UPDATE agents SET roles = '{lead}' WHERE id = 'kenji'")
        await quality.put_rule(
            conn,
            "apac-queue",
            QualityRuleFields(kind=RuleKind.QUEUE_AGE, region="apac", threshold=10, sustain_minutes=5),
        )
    now = await env.get_current_time()
    ticket = await apac_ticket(db, now - timedelta(minutes=20))
    async with db.acquire() as conn:
        await conn.execute(
            """INSERT INTO ticket_queue (ticket_id, home_region, language, module, priority, queued_at)
               VALUES ($1, 'apac', 'ja', 'video', 'P2', $2)""",
            ticket,
            now - timedelta(minutes=20),
        )

    async def run():
        # Only env.sleep moves the clock: left to skip on its own while the run waits, the
        # server would leap to the run's ten-year timeout.
        with env.auto_time_skipping_disabled():
            return await env.client.execute_workflow(
                QualityAlertsWorkflow.run,
                id=f"quality-{uuid.uuid4().hex[:8]}",
                task_queue=settings.task_queue,
            )

    async def told(kind: str) -> list:
        async with db.acquire() as conn:
            return await conn.fetch("SELECT * FROM notifications WHERE kind = $1", kind)

    async with running_worker(env.client, shared_deps, settings):
        first = await run()
        assert first.opened == []  # breaching, but not yet for 5 minutes
        async with db.acquire() as conn:
            # The workflow's clock (which the time-skipping server runs) started the episode.
            started = (await quality.get_rule(conn, "apac-queue")).breaching_since
            await conn.execute("UPDATE ticket_queue SET queued_at = $1", started - timedelta(minutes=20))
        await env.sleep(timedelta(minutes=6))
        second = await run()
        assert second.opened == ["apac-queue"]
        [alert] = await told("quality_alert_opened")
        assert alert["recipient_id"] == "kenji"
        assert alert["payload"]["data"]["message"].startswith("APAC oldest queued ticket 26.0 min vs 10 min")
        assert "1 tickets queued (1 for ja/video)" in alert["payload"]["data"]["message"]

        third = await run()
        assert third.opened == [] and len(await told("quality_alert_opened")) == 1  # once per episode

        async with db.acquire() as conn:
            await conn.execute("DELETE FROM ticket_queue WHERE ticket_id = $1", ticket)
        cleared = await run()
        assert cleared.resolved == ["apac-queue"]
        [resolved] = await told("quality_alert_resolved")
        assert resolved["payload"]["data"]["message"].startswith("Resolved: APAC")
        async with db.acquire() as conn:
            [row] = await quality.list_alerts(conn, open_only=False)
        assert row["resolved_at"] is not None


async def test_rules_and_alerts_api(api):
    rule_body = {"kind": "first_response_p90", "region": "apac", "threshold": 30, "sustain_minutes": 30}
    put = await api.http.put("/v1/quality/rules/apac-frt", json=rule_body, headers=api.admin)
    assert put.status_code == 200, put.text
    assert put.json()["window_minutes"] == 60
    listed = await api.http.get("/v1/quality/rules", headers=api.admin)
    assert [r["id"] for r in listed.json()] == ["apac-frt"]
    bad = await api.http.put("/v1/quality/rules/x-y", json=rule_body | {"kind": "vibes"}, headers=api.admin)
    assert bad.status_code == 422
    unknown = await api.http.put(
        "/v1/quality/rules/mars", json=rule_body | {"region": "mars"}, headers=api.admin
    )
    assert unknown.status_code == 422 and "unknown region" in unknown.text
    assert (await api.http.get("/v1/quality/alerts", headers=api.admin)).json() == []
    assert (await api.http.delete("/v1/quality/rules/apac-frt", headers=api.admin)).status_code == 200
    assert (await api.http.delete("/v1/quality/rules/apac-frt", headers=api.admin)).status_code == 404
    assert (await api.http.get("/v1/quality/rules")).status_code == 401
