"""Customer and agent without a common language: the ticket workflow translates both ways.

Real workflow on the time-skipping server, real activities and PostgreSQL, and a local server
that speaks LibreTranslate's protocol (from tests/test_translation.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from domain.enums import ActorType, CustomerTier, LanguageLevel
from domain.tickets import Actor, AssignRequest, CustomerMessage
from tests.conftest import add_agent, add_customer, make_settings, running_worker
from tests.test_ticket_workflow import Desk, reply
from tests.test_translation import LIBRE_KEY, Providers, Reply
from workflows.ticket import TicketWorkflow

SUBJECT = "La aplicación se cierra al abrir el informe"
BODY = "Hola, la aplicación se cierra cada vez que abro el informe de facturación del mes pasado."
GLOBEX = Actor(type=ActorType.CUSTOMER, id="globex")


async def _desk(db, skipping_env, shared_deps, database_url, **settings) -> AsyncIterator[Desk]:
    settings = make_settings(database_url, **settings)
    await add_customer(db, "globex", tier=CustomerTier.BUSINESS, language="es")
    # Nobody speaks Spanish: ana (English only) takes the ticket by hand.
    await add_agent(db, "ana", languages={"en": LanguageLevel.NATIVE, "de": LanguageLevel.FLUENT})
    desk = Desk(skipping_env, db, settings)
    async with running_worker(skipping_env.client, shared_deps, settings):
        try:
            yield desk
        finally:
            await desk.terminate_all()


@pytest_asyncio.fixture
async def libre_server():
    with Providers() as server:
        yield server
        assert server.violations == []


@pytest_asyncio.fixture(loop_scope="session")
async def translating_desk(db, skipping_env, shared_deps, database_url, libre_server):
    async for desk in _desk(
        db,
        skipping_env,
        shared_deps,
        database_url,
        translation_provider="libretranslate",
        libretranslate_url=libre_server.base,
        libretranslate_api_key=LIBRE_KEY,
        translation_timeout=2.0,
    ):
        yield desk


@pytest_asyncio.fixture(loop_scope="session")
async def plain_desk(db, skipping_env, shared_deps, database_url):
    async for desk in _desk(db, skipping_env, shared_deps, database_url):
        yield desk


async def _assigned_to_ana(desk: Desk):
    handle, ticket_id, _ = await desk.open(customer="globex", subject=SUBJECT, body=BODY)
    agent = await handle.execute_update(
        TicketWorkflow.assign, AssignRequest(agent_id="ana", actor=Actor(type=ActorType.SYSTEM, id="lead"))
    )
    assert agent.languages == ["en", "de"]
    state = await desk.state(handle)
    assert state.language == "es" and state.machine_translation
    return handle, ticket_id


async def test_each_side_reads_their_own_language_and_both_versions_stay(translating_desk, libre_server):
    desk = translating_desk
    handle, ticket_id = await _assigned_to_ana(desk)

    await handle.signal(
        TicketWorkflow.customer_message,
        CustomerMessage(message_id="m1", body="Hola, sigue fallando.", actor=GLOBEX),
    )
    await desk.until(handle, lambda s: True)
    (translated,) = await desk.events(ticket_id, "message_translated")
    assert translated.internal
    assert translated.data["message_id"] == "m1"
    assert translated.data["body"] == "Hello, sigue fallando."
    assert translated.data["translation"] == {
        "source": "es",
        "target": "en",
        "provider": "libretranslate",
        "machine_translated": True,
        "note": None,
    }
    sent = [r.body for r in libre_server.requests if r.path == "/translate"]
    assert sent[-1]["source"] == "es" and sent[-1]["target"] == "en"

    await handle.execute_update(TicketWorkflow.reply, reply("ana", body="The app crashes on Android."))
    (answer,) = await desk.events(ticket_id, "agent_reply")
    assert answer.internal is False
    assert answer.data["body"] == "La aplicación falla en Android."
    assert answer.data["original_body"] == "The app crashes on Android."
    assert answer.data["translation"]["target"] == "es" and answer.data["translation"]["machine_translated"]

    # An internal note is for colleagues: never translated.
    await handle.execute_update(
        TicketWorkflow.reply, reply("ana", body="Escalate?", internal=True, reply_id="n1")
    )
    (note,) = await desk.events(ticket_id, "internal_note")
    assert note.data["body"] == "Escalate?" and "translation" not in note.data


async def test_a_failing_provider_never_loses_a_message_or_a_reply(translating_desk, libre_server):
    desk = translating_desk
    handle, ticket_id = await _assigned_to_ana(desk)
    # A rejection (bad key) is final: the original goes through, with the reason on the timeline.
    libre_server.answer(Reply(403, {"error": "Invalid API key"}), Reply(403, {"error": "Invalid API key"}))
    await handle.signal(
        TicketWorkflow.customer_message,
        CustomerMessage(message_id="m1", body="¿Alguna novedad?", actor=GLOBEX),
    )
    await desk.until(handle, lambda s: True)
    (translated,) = await desk.events(ticket_id, "message_translated")
    assert translated.data["body"] == "¿Alguna novedad?"
    assert not translated.data["translation"]["machine_translated"]
    assert "translation failed" in translated.data["translation"]["note"]
    assert "Invalid API key" in translated.data["translation"]["note"]

    await handle.execute_update(TicketWorkflow.reply, reply("ana", body="Still checking."))
    (answer,) = await desk.events(ticket_id, "agent_reply")
    assert answer.data["body"] == "Still checking."
    assert "translation failed" in answer.data["translation"]["note"]


async def test_without_a_provider_the_ticket_says_nothing_was_translated(plain_desk):
    desk = plain_desk
    handle, ticket_id = await _assigned_to_ana(desk)
    await handle.signal(
        TicketWorkflow.customer_message,
        CustomerMessage(message_id="m1", body="¿Alguna novedad?", actor=GLOBEX),
    )
    await desk.until(handle, lambda s: True)
    (translated,) = await desk.events(ticket_id, "message_translated")
    assert translated.data["body"] == "¿Alguna novedad?"
    assert translated.data["translation"]["provider"] == "none"
    assert translated.data["translation"]["note"] == "no translation provider configured"
    await handle.execute_update(TicketWorkflow.reply, reply("ana", body="Still checking."))
    (answer,) = await desk.events(ticket_id, "agent_reply")
    assert answer.data["body"] == "Still checking." and answer.data["original_body"] == "Still checking."


async def test_an_agent_who_speaks_the_language_gets_no_translation(plain_desk):
    desk = plain_desk
    await add_agent(desk.pool, "sofia", languages={"es": LanguageLevel.NATIVE})
    handle, ticket_id, _ = await desk.open(customer="globex", subject=SUBJECT, body=BODY)
    state = await desk.until(handle, lambda s: s.assignee is not None)
    assert state.assignee.id == "sofia" and not state.machine_translation
    await handle.signal(
        TicketWorkflow.customer_message,
        CustomerMessage(message_id="m1", body="¿Alguna novedad?", actor=GLOBEX),
    )
    await desk.until(handle, lambda s: True)
    assert await desk.events(ticket_id, "message_translated") == []
