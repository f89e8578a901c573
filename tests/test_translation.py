"""Machine translation against a real PostgreSQL, local LibreTranslate and DeepL servers, and Temporal.

The providers are one `ThreadingHTTPServer` speaking both protocols as the real services do: it
checks the path, the content type, the body's fields and the credentials, answers 403 and 400 in
their own words, and otherwise "translates" with a small word list (Japanese reverses the word
order and rewrites `{{0}}` with full-width, padded braces, as a provider moving placeholders
would). Anything our client sends that the real service would not accept is recorded as a protocol
violation and fails the test. Scripted replies (status, headers, delay) come first when a test needs failures.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio import workflow
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy as TemporalRetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities.translation import (
    DeepL,
    LibreTranslate,
    RetryPolicy,
    TranslationActivities,
    TranslationRejected,
    TranslationService,
    TranslationSettings,
    TranslationUnavailable,
    Translator,
    deepl_source,
    deepl_target,
    retry_after,
    translator_from_settings,
)
from db import translations
from domain.translation import (
    PLACEHOLDER,
    GlossaryTermFields,
    TranslationRequest,
    TranslationResult,
    glossary_pattern,
    language_key,
    protect,
    same_language,
    text_hash,
)
from meridian.settings import Settings
from tests.loopback import JsonHandler, Loopback

LIBRE_KEY = "libre-test-key"
DEEPL_KEY = "0a1b2c3d-0000-4000-8000-000000000000:fx"
GLOSSARY = ["Meridian", "Meridian SDK", "iOS", "SDK", "getUserToken()"]
FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05, max_wait=5.0)

# --- a deterministic "translation" ------------------------------------------------------------

WORDS = {
    "de": {
        "the": "das",
        "app": "App",
        "crashes": "stürzt",
        "on": "auf",
        "login": "Anmeldung",
        "fails": "scheitert",
        "with": "mit",
        "please": "bitte",
        "help": "Hilfe",
        "hello": "hallo",
        "returns": "liefert",
        "an": "einen",
        "error": "Fehler",
        "and": "und",
        # What a provider does to names nobody protected:
        "sdk": "Entwicklungskit",
        "meridian": "Mittagslinie",
        "ios": "Apfelsystem",
        "getusertoken()": "holeBenutzerMarke()",
    },
    "es": {"the": "la", "app": "aplicación", "crashes": "falla", "on": "en", "hello": "hola", "sdk": "kit"},
    "ja": {"the": "", "app": "アプリ", "crashes": "がクラッシュする", "on": "で", "hello": "こんにちは"},
    "en": {"hallo": "hello", "hola": "hello", "fehler": "error"},
}


def fake_translate(text: str, target: str) -> str:
    words = WORDS.get(target.split("-")[0].lower(), {})
    out = []
    for token in text.split(" "):
        core = token.rstrip(".,!?")
        word = words.get(core.lower())
        if word is None:
            out.append(token)
            continue
        if core[:1].isupper():
            word = word[:1].upper() + word[1:]
        out.append(word + token[len(core) :])
    if target.lower() == "ja":
        return re.sub(r"\{\{(\d+)\}\}", r"｛｛ \1 ｝｝", "".join(reversed(out)))
    return " ".join(out)


def libre_formatting(source: str, translated: str) -> str:
    """LibreTranslate re-cases its answer like the source (improve_translation_formatting)."""
    if source.islower():
        return translated.lower()
    if source.isupper():
        return translated.upper()
    return translated


# --- the protocol servers ---------------------------------------------------------------------

LIBRE_LANGUAGES = {"en", "de", "es", "fr", "ja", "zh", "pt", "ko"}
DEEPL_SOURCES = {"DE", "EN", "ES", "FR", "JA", "KO", "PT", "ZH"}
DEEPL_TARGETS = {"DE", "EN", "EN-GB", "EN-US", "ES", "FR", "JA", "KO", "PT", "PT-BR", "PT-PT", "ZH"}
DEEPL_TARGETS |= {"ZH-HANS", "ZH-HANT"}


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any


@dataclass
class Reply:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class Providers(Loopback):
    """LibreTranslate at `/translate`, DeepL at `/v2/translate`."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.script: list[Reply] = []
        self.violations: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw
                with server._lock:
                    server.requests.append(Received(self.path, headers, body))
                    reply = server.script.pop(0) if server.script else None
                if reply is not None:
                    time.sleep(reply.delay)
                    status, answer, extra = reply.status, reply.body or {"error": "scripted"}, reply.headers
                elif headers.get("content-type") != "application/json":
                    status, answer, extra = server.violation(f"content type {headers.get('content-type')}")
                elif self.path == "/translate":
                    status, answer, extra = server.libretranslate(body)
                elif self.path == "/v2/translate":
                    status, answer, extra = server.deepl(headers, body)
                else:
                    status, answer, extra = 404, {"error": "Not Found"}, {}
                self.send_json(status, answer, extra)

        self.serve(Handler)

    def violation(self, what: str) -> tuple[int, dict, dict]:
        self.violations.append(what)
        return 400, {"error": f"test server: {what}", "message": f"test server: {what}"}, {}

    def libretranslate(self, body: Any) -> tuple[int, dict, dict]:
        if not isinstance(body, dict) or set(body) - {"q", "source", "target", "format", "api_key"}:
            return self.violation(f"LibreTranslate body {body!r}")
        if body.get("api_key") != LIBRE_KEY:
            return 403, {"error": "Invalid API key"}, {}
        q, source, target = body.get("q"), body.get("source"), body.get("target")
        batch = isinstance(q, list)
        texts = q if batch else [q]
        if not q or not all(isinstance(t, str) and t.strip() for t in texts):
            return self.violation(f"q {q!r}")
        if body.get("format") != "text":
            return self.violation(f"format {body.get('format')!r}")
        for lang in (target, source):
            if lang != "auto" and lang not in LIBRE_LANGUAGES:
                return 400, {"error": f"{lang} is not supported"}, {}
        translated = [libre_formatting(t, fake_translate(t, target)) for t in texts]
        answer: dict[str, Any] = {"translatedText": translated if batch else translated[0]}
        if source == "auto":
            detected = [{"confidence": 90.0, "language": "en"} for _ in texts]
            answer["detectedLanguage"] = detected if batch else detected[0]
        return 200, answer, {}

    def deepl(self, headers: dict[str, str], body: Any) -> tuple[int, dict, dict]:
        if headers.get("authorization") != f"DeepL-Auth-Key {DEEPL_KEY}":
            return 403, {"message": "Wrong endpoint or invalid authentication key."}, {}
        if not isinstance(body, dict) or set(body) - {"text", "target_lang", "source_lang"}:
            return self.violation(f"DeepL body {body!r}")
        texts = body.get("text")
        if not isinstance(texts, list) or not 1 <= len(texts) <= 50:
            return self.violation(f"text {texts!r}")
        if not all(isinstance(t, str) for t in texts):
            return self.violation(f"text {texts!r}")
        target, source = body.get("target_lang"), body.get("source_lang")
        if target not in DEEPL_TARGETS:
            return 400, {"message": "Value for 'target_lang' not supported."}, {}
        if source is not None and source not in DEEPL_SOURCES:
            return 400, {"message": "Value for 'source_lang' not supported."}, {}
        translations = [
            {"detected_source_language": source or "EN", "text": fake_translate(t, target)} for t in texts
        ]
        return 200, {"translations": translations}, {}

    def answer(self, *replies: int | Reply) -> None:
        self.script.extend(r if isinstance(r, Reply) else Reply(r) for r in replies)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]


# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def web() -> Iterator[Providers]:
    with Providers() as server:
        yield server
        assert server.violations == [], "our client broke the provider's protocol"


@pytest_asyncio.fixture
async def tdb(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    """The cache and glossary emptied; the glossary then holds GLOSSARY."""
    async with pool.acquire() as conn:
        await conn.execute("TRUNCATE translation_cache, glossary_terms")
        for term in GLOSSARY:
            await translations.add_glossary_term(conn, GlossaryTermFields(term=term))
    yield pool


def libre(http: httpx.AsyncClient, web: Providers, **kwargs: Any) -> LibreTranslate:
    values: dict[str, Any] = dict(api_key=LIBRE_KEY, timeout=2.0, retry=FAST)
    values.update(kwargs)
    return LibreTranslate(http, web.base, **values)


def deepl(http: httpx.AsyncClient, web: Providers, **kwargs: Any) -> DeepL:
    values: dict[str, Any] = dict(auth_key=DEEPL_KEY, timeout=2.0, retry=FAST)
    values.update(kwargs)
    return DeepL(http, url=web.base, **values)


PROVIDERS = [pytest.param(libre, id="libretranslate"), pytest.param(deepl, id="deepl")]


async def run(
    translator: Translator | None, pool: asyncpg.Pool, text: str, source, target
) -> TranslationResult:
    acts = TranslationActivities(pool, translator)
    request = TranslationRequest(text=text, source=source, target=target)
    return await ActivityEnvironment().run(acts.translate_text, request)


async def cache_rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch("SELECT * FROM translation_cache ORDER BY id")


def sent_texts(web: Providers) -> list[str]:
    texts: list[str] = []
    for req in web.requests:
        if req.path == "/v2/translate":
            texts += req.body["text"]
        else:
            q = req.body["q"]
            texts += q if isinstance(q, list) else [q]
    return texts


# --- LibreTranslate ---------------------------------------------------------------------------


async def test_libretranslate_batch_is_one_request_in_its_protocol(tdb, http, web):
    service = TranslationService(tdb, libre(http, web))

    results = await service.translate(["Hello", "The app crashes.", "Please help"], "en", "de")

    assert [r.text for r in results] == ["Hallo", "Das App stürzt.", "Bitte Hilfe"]
    assert all(r.machine_translated and not r.cached for r in results)
    assert {(r.provider, r.source, r.target) for r in results} == {("libretranslate", "en", "de")}
    [req] = web.requests
    assert req.path == "/translate"
    assert req.headers["content-type"] == "application/json"
    assert req.body == {
        "q": ["Hello", "The app crashes.", "Please help"],
        "source": "en",
        "target": "de",
        "format": "text",
        "api_key": LIBRE_KEY,
    }


async def test_libretranslate_single_text_with_detected_source(tdb, http, web):
    result = await run(libre(http, web), tdb, "hello", None, "es")

    assert result.text == "hola"
    assert (result.source, result.provider, result.machine_translated) == (None, "libretranslate", True)
    [req] = web.requests
    # One text is sent as a string, which every LibreTranslate version accepts; no source means auto.
    assert req.body == {
        "q": "hello",
        "source": "auto",
        "target": "es",
        "format": "text",
        "api_key": LIBRE_KEY,
    }
    [row] = await cache_rows(tdb)
    assert (row["provider"], row["source_lang"], row["target_lang"]) == ("libretranslate", "auto", "es")


async def test_libretranslate_without_key_sends_none(tdb, http, web):
    with pytest.raises(ApplicationError) as caught:
        await run(libre(http, web, api_key=None), tdb, "Hello", "en", "de")

    [req] = web.requests
    assert "api_key" not in req.body
    assert caught.value.type == "TranslationRejected"
    assert caught.value.non_retryable is True
    assert caught.value.message == "libretranslate answered 403: Invalid API key"


# --- DeepL ------------------------------------------------------------------------------------


async def test_deepl_batch_is_one_request_in_its_protocol(tdb, http, web):
    service = TranslationService(tdb, deepl(http, web))

    results = await service.translate(["Hello", "The app crashes."], "en", "de")

    assert [r.text for r in results] == ["Hallo", "Das App stürzt."]
    assert {r.provider for r in results} == {"deepl"}
    [req] = web.requests
    assert req.path == "/v2/translate"
    assert req.headers["authorization"] == f"DeepL-Auth-Key {DEEPL_KEY}"
    assert req.headers["content-type"] == "application/json"
    assert req.body == {"text": ["Hello", "The app crashes."], "target_lang": "DE", "source_lang": "EN"}


@pytest.mark.parametrize(
    ("source", "target", "sent"),
    [
        (None, "en", {"target_lang": "EN-US"}),
        ("de", "en-GB", {"target_lang": "EN-GB", "source_lang": "DE"}),
        ("en-US", "pt", {"target_lang": "PT-BR", "source_lang": "EN"}),
        ("en", "pt-PT", {"target_lang": "PT-PT", "source_lang": "EN"}),
        ("en", "zh", {"target_lang": "ZH-HANS", "source_lang": "EN"}),
        ("en", "zh-TW", {"target_lang": "ZH-HANT", "source_lang": "EN"}),
        ("zh-Hans", "ja", {"target_lang": "JA", "source_lang": "ZH"}),
    ],
)
async def test_deepl_language_codes(tdb, http, web, source, target, sent):
    await run(deepl(http, web), tdb, "Hallo", source, target)

    [req] = web.requests
    assert req.body == {"text": ["Hallo"], **sent}


def test_deepl_code_mapping():
    assert [deepl_target(c) for c in ["en", "EN", "pt", "zh", "zh-hant", "de", "en_gb", "ja"]] == [
        "EN-US",
        "EN-US",
        "PT-BR",
        "ZH-HANS",
        "ZH-HANT",
        "DE",
        "EN-GB",
        "JA",
    ]
    assert [deepl_source(c) for c in ["en", "en-US", "pt-BR", "zh-Hans", "ko"]] == [
        "EN",
        "EN",
        "PT",
        "ZH",
        "KO",
    ]


async def test_deepl_splits_batches_at_fifty_texts(tdb, http, web):
    texts = [f"Hello {n}" for n in range(60)]
    results = await TranslationService(tdb, deepl(http, web)).translate(texts, "en", "de")

    assert [r.text for r in results] == [f"Hallo {n}" for n in range(60)]
    assert [len(r.body["text"]) for r in web.requests] == [50, 10]


# --- glossary ---------------------------------------------------------------------------------

TECHNICAL = "The Meridian SDK crashes on iOS and getUserToken() returns an error with the SDK"


@pytest.mark.parametrize("make", PROVIDERS)
async def test_glossary_terms_are_never_sent_and_come_back_untouched(tdb, http, web, make):
    result = await run(make(http, web), tdb, TECHNICAL, "en", "de")

    assert result.text == (
        "Das Meridian SDK stürzt auf iOS und getUserToken() liefert einen Fehler mit das SDK"
    )
    [sent] = sent_texts(web)
    assert sent == "The {{0}} crashes on {{1}} and {{2}} returns an error with the {{3}}"
    # The cache holds what the provider saw and said, placeholders included.
    [row] = await cache_rows(tdb)
    assert row["source_text"] == sent
    assert row["translated_text"] == "Das {{0}} stürzt auf {{1}} und {{2}} liefert einen Fehler mit das {{3}}"
    assert row["text_hash"] == hashlib.sha256(sent.encode()).hexdigest()


async def test_without_a_glossary_the_provider_translates_names(tdb, http, web):
    # The control for the test above: the fake provider really does mangle unprotected names.
    async with tdb.acquire() as conn:
        await conn.execute("TRUNCATE glossary_terms")

    result = await run(libre(http, web), tdb, TECHNICAL, "en", "de")

    assert "Entwicklungskit" in result.text
    assert "holeBenutzerMarke()" in result.text
    assert "Apfelsystem" in result.text


async def test_moved_and_respaced_placeholders_are_restored(tdb, http, web):
    # The fake Japanese reverses the word order and writes `{{0}}` with full-width, padded braces.
    result = await run(deepl(http, web), tdb, "The app crashes on iOS", "en", "ja")

    assert result.text == "iOSでがクラッシュするアプリ"
    [row] = await cache_rows(tdb)
    assert row["translated_text"] == "｛｛ 0 ｝｝でがクラッシュするアプリ"


async def test_glossary_matching_is_case_sensitive_and_whole_term(tdb, http, web):
    # "sdk" is not "SDK", "iOS17" is not "iOS".
    result = await run(libre(http, web), tdb, "the sdk crashes on iOS17", "en", "de")

    assert result.text == "das Entwicklungskit stürzt auf iOS17"
    assert sent_texts(web) == ["the sdk crashes on iOS17"]


async def test_glossary_terms_in_the_database(tdb):
    async with tdb.acquire() as conn:
        updated = await translations.add_glossary_term(conn, GlossaryTermFields(term="  SDK ", note="ours"))
        assert (updated.term, updated.note) == ("SDK", "ours")
        assert [t.term for t in await translations.list_glossary_terms(conn)] == sorted(GLOSSARY)
        assert await translations.delete_glossary_term(conn, "iOS") is True
        assert await translations.delete_glossary_term(conn, "iOS") is False
        assert "iOS" not in [t.term for t in await translations.list_glossary_terms(conn)]
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO glossary_terms (term) VALUES (' padded')")
    with pytest.raises(ValueError, match="one line"):
        GlossaryTermFields(term="two\nlines")
    with pytest.raises(ValueError):
        GlossaryTermFields(term="   ")


# --- the cache --------------------------------------------------------------------------------


@pytest.mark.parametrize("make", PROVIDERS)
async def test_a_cache_hit_does_not_call_the_provider(tdb, http, web, make):
    translator = make(http, web)
    first = await run(translator, tdb, "Hello", "en", "de")
    second = await run(translator, tdb, "Hello", "en", "de")

    assert (first.text, first.cached) == ("Hallo", False)
    assert (second.text, second.cached, second.machine_translated) == ("Hallo", True, True)
    assert len(web.requests) == 1
    [row] = await cache_rows(tdb)
    assert (row["provider"], row["source_lang"], row["target_lang"]) == (translator.name, "en", "de")
    assert (row["source_text"], row["translated_text"], row["text_hash"]) == (
        "Hello",
        "Hallo",
        text_hash("Hello"),
    )


async def test_only_misses_go_to_the_provider(tdb, http, web):
    service = TranslationService(tdb, libre(http, web))
    await service.translate(["Hello"], "en", "de")

    results = await service.translate(["Please help", "Hello", "Please help", "   "], "en", "de")

    assert [(r.text, r.cached) for r in results] == [
        ("Bitte Hilfe", False),
        ("Hallo", True),
        ("Bitte Hilfe", False),
        ("   ", False),
    ]
    assert results[3].machine_translated is False
    assert results[3].note == "nothing to translate"
    # Duplicates are sent once; the cached text and the blank one not at all.
    assert web.requests[1].body["q"] == "Please help"
    assert len(web.requests) == 2


async def test_the_cache_is_per_provider_and_language_pair(tdb, http, web):
    await run(libre(http, web), tdb, "Hello", "en", "de")
    await run(deepl(http, web), tdb, "Hello", "en", "de")
    await run(libre(http, web), tdb, "Hello", "en", "es")
    await run(libre(http, web), tdb, "Hello", None, "de")

    assert len(web.requests) == 4
    keys = [(r["provider"], r["source_lang"], r["target_lang"]) for r in await cache_rows(tdb)]
    assert keys == [
        ("libretranslate", "en", "de"),
        ("deepl", "en", "de"),
        ("libretranslate", "en", "es"),
        ("libretranslate", "auto", "de"),
    ]


async def test_one_cache_entry_serves_texts_that_differ_only_in_glossary_terms(tdb, http, web):
    translator = libre(http, web)
    first = await run(translator, tdb, "Hello SDK", "en", "de")
    second = await run(translator, tdb, "Hello Meridian", "en", "de")

    assert (first.text, second.text, second.cached) == ("Hallo SDK", "Hallo Meridian", True)
    assert len(web.requests) == 1


async def test_a_stored_translation_is_never_overwritten(tdb):
    async with tdb.acquire() as conn:
        await translations.put_cached(conn, "deepl", "en", "de", [(text_hash("Hi"), "Hi", "Hallo")])
        await translations.put_cached(conn, "deepl", "en", "de", [(text_hash("Hi"), "Hi", "Servus")])
        assert await translations.get_cached(conn, "deepl", "en", "de", {text_hash("Hi"): "Hi"}) == {
            text_hash("Hi"): "Hallo"
        }
        # A different text under the same hash (a collision) is a miss, not someone else's answer.
        assert await translations.get_cached(conn, "deepl", "en", "de", {text_hash("Hi"): "Ho"}) == {}


# --- retries inside the provider call ---------------------------------------------------------


@pytest.mark.parametrize("make", PROVIDERS)
async def test_429_waits_for_retry_after_then_succeeds(tdb, http, web, make):
    web.answer(Reply(429, {"error": "Slowdown: 1 per 1 second"}, {"Retry-After": "1"}))
    started = time.monotonic()

    result = await run(make(http, web), tdb, "Hello", "en", "de")

    assert result.text == "Hallo"
    assert len(web.requests) == 2
    assert time.monotonic() - started >= 0.95
    assert web.requests[0].body == web.requests[1].body


@pytest.mark.parametrize("make", PROVIDERS)
@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_retried_then_succeeds(tdb, http, web, make, status):
    web.answer(Reply(status, {"message": "Internal error"}))

    result = await run(make(http, web), tdb, "Hello", "en", "de")

    assert (result.text, result.machine_translated) == ("Hallo", True)
    assert len(web.requests) == 2


async def test_retries_are_bounded_and_then_left_to_temporal(tdb, http, web):
    web.answer(*[Reply(503, {"error": "overloaded"})] * 3)

    with pytest.raises(ApplicationError) as caught:
        await run(libre(http, web), tdb, "Hello", "en", "de")

    assert len(web.requests) == FAST.attempts
    err = caught.value
    assert err.type == "TranslationUnavailable"
    assert err.non_retryable is False
    assert err.message == "libretranslate answered 503: overloaded"
    assert await cache_rows(tdb) == []


async def test_a_long_retry_after_is_left_to_temporal(tdb, http, web):
    web.answer(Reply(429, {"message": "Too many requests"}, {"Retry-After": "120"}))
    started = time.monotonic()

    with pytest.raises(ApplicationError) as caught:
        await run(deepl(http, web), tdb, "Hello", "en", "de")

    assert time.monotonic() - started < 5
    assert len(web.requests) == 1
    assert caught.value.type == "TranslationUnavailable"
    assert caught.value.non_retryable is False
    assert caught.value.next_retry_delay == timedelta(seconds=120)


def test_retry_after_reads_seconds_and_dates():
    now = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)

    def response(value: str) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": value})

    assert retry_after(response("7"), now) == timedelta(seconds=7)
    assert retry_after(response(format_datetime(now + timedelta(seconds=30), usegmt=True)), now) == timedelta(
        seconds=30
    )
    assert retry_after(response(format_datetime(now - timedelta(hours=1), usegmt=True)), now) == timedelta(0)
    assert retry_after(response("soon"), now) is None
    assert retry_after(httpx.Response(429), now) is None


# --- permanent failures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda http, web: libre(http, web, api_key="wrong"), "libretranslate answered 403: Invalid API key"),
        (
            lambda http, web: deepl(http, web, auth_key="wrong:fx"),
            "deepl answered 403: Wrong endpoint or invalid authentication key.",
        ),
    ],
    ids=["libretranslate", "deepl"],
)
async def test_a_bad_key_is_rejected_for_good(tdb, http, web, make, message):
    with pytest.raises(ApplicationError) as caught:
        await run(make(http, web), tdb, "Hello", "en", "de")

    err = caught.value
    assert (err.type, err.non_retryable, err.message) == ("TranslationRejected", True, message)
    assert len(web.requests) == 1  # no retry inside the call either
    assert "wrong" not in err.message  # the key itself never lands in a failure


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (libre, "libretranslate answered 400: xx is not supported"),
        (deepl, "deepl answered 400: Value for 'target_lang' not supported."),
    ],
    ids=["libretranslate", "deepl"],
)
async def test_an_unsupported_language_is_rejected_for_good(tdb, http, web, make, message):
    with pytest.raises(ApplicationError) as caught:
        await run(make(http, web), tdb, "Hello", "en", "xx")

    assert (caught.value.type, caught.value.non_retryable, caught.value.message) == (
        "TranslationRejected",
        True,
        message,
    )
    assert len(web.requests) == 1


async def test_a_malformed_answer_is_rejected(tdb, http, web):
    web.answer(Reply(200, {"translatedText": ["only one"]}))

    with pytest.raises(TranslationRejected, match="unexpected body"):
        await TranslationService(tdb, libre(http, web)).translate(["Hello", "Please help"], "en", "de")
    assert await cache_rows(tdb) == []


# --- timeouts and unreachable providers -------------------------------------------------------


@pytest.mark.parametrize("make", PROVIDERS)
async def test_a_slow_provider_times_out_and_temporal_retries(tdb, http, web, make):
    web.answer(Reply(200, {"translatedText": "late"}, delay=1.0))
    started = time.monotonic()

    with pytest.raises(ApplicationError) as caught:
        await run(make(http, web, timeout=0.2), tdb, "Hello", "en", "de")

    assert time.monotonic() - started < 0.9
    assert caught.value.type == "TranslationUnavailable"
    assert caught.value.non_retryable is False
    assert "did not answer within 0.2 s" in caught.value.message
    assert len(web.requests) == 1


async def test_an_unreachable_provider_is_retried_by_temporal(tdb, http, closed_port):
    translator = LibreTranslate(http, f"http://127.0.0.1:{closed_port}", timeout=2.0, retry=FAST)

    with pytest.raises(TranslationUnavailable, match="unreachable: ConnectError"):
        await TranslationService(tdb, translator).translate(["Hello"], "en", "de")


# --- nothing to do ----------------------------------------------------------------------------


async def test_no_provider_configured_says_so(tdb):
    result = await run(None, tdb, "再生が途中で止まります", "ja", "en")

    assert result == TranslationResult(
        text="再生が途中で止まります",
        source="ja",
        target="en",
        provider="none",
        machine_translated=False,
        cached=False,
        note="no translation provider configured",
    )
    assert await cache_rows(tdb) == []


async def test_the_same_language_is_not_sent(tdb, http, web):
    result = await run(libre(http, web), tdb, "Hello", "en-GB", "en")

    assert (result.text, result.machine_translated, result.note) == (
        "Hello",
        False,
        "already in the target language",
    )
    assert web.requests == []


# --- settings and the worker ------------------------------------------------------------------


def test_the_provider_is_chosen_by_settings(http):
    assert translator_from_settings(http, TranslationSettings()) is None
    libre_translator = translator_from_settings(
        http, TranslationSettings(translation_provider="libretranslate", libretranslate_url="http://lt:5000/")
    )
    assert isinstance(libre_translator, LibreTranslate)
    assert (libre_translator.url, libre_translator.api_key) == ("http://lt:5000", None)
    deepl_translator = translator_from_settings(
        http,
        TranslationSettings(translation_provider="deepl", deepl_auth_key=DEEPL_KEY, translation_timeout=3),
    )
    assert isinstance(deepl_translator, DeepL)
    assert (deepl_translator.url, deepl_translator.timeout) == ("https://api-free.deepl.com", 3.0)
    with pytest.raises(ValueError, match="MERIDIAN_LIBRETRANSLATE_URL"):
        translator_from_settings(http, TranslationSettings(translation_provider="libretranslate"))
    with pytest.raises(ValueError, match="MERIDIAN_DEEPL_AUTH_KEY"):
        translator_from_settings(http, TranslationSettings(translation_provider="deepl"))


def test_settings_read_the_environment(monkeypatch):
    monkeypatch.setenv("MERIDIAN_TRANSLATION_PROVIDER", "deepl")
    monkeypatch.setenv("MERIDIAN_DEEPL_AUTH_KEY", DEEPL_KEY)
    monkeypatch.setenv("MERIDIAN_TRANSLATION_TIMEOUT", "4.5")
    settings = Settings()
    picked = settings.section(TranslationSettings)
    assert (picked.translation_provider, picked.deepl_auth_key, picked.translation_timeout) == (
        "deepl",
        DEEPL_KEY,
        4.5,
    )
    assert picked.deepl_url == "https://api-free.deepl.com"


# --- through a real Temporal server -----------------------------------------------------------


@workflow.defn(name="TranslationProbe", sandboxed=False)
class TranslationProbe:
    @workflow.run
    async def run(self, request: TranslationRequest) -> TranslationResult:
        return await workflow.execute_activity(
            "translate_text",
            request,
            result_type=TranslationResult,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=TemporalRetryPolicy(initial_interval=timedelta(milliseconds=50), maximum_attempts=3),
        )


async def probe(env: WorkflowEnvironment, translator: Translator, pool: asyncpg.Pool, target: str):
    task_queue = f"translation-{uuid.uuid4().hex[:8]}"
    acts = TranslationActivities(pool, translator)
    async with Worker(
        env.client, task_queue=task_queue, workflows=[TranslationProbe], activities=[acts.translate_text]
    ):
        return await env.client.execute_workflow(
            TranslationProbe.run,
            TranslationRequest(text="Hello", source="en", target=target),
            id=f"translation-probe-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )


async def test_temporal_retries_what_the_provider_could_not_do_now(tdb, http, web, dev_env):
    # The provider gives up after one 503; Temporal's next attempt gets the translation.
    web.answer(Reply(503, {"error": "overloaded"}))
    translator = libre(http, web, retry=RetryPolicy(attempts=1))

    result = await probe(dev_env, translator, tdb, "de")

    assert (result.text, result.provider, result.machine_translated) == ("Hallo", "libretranslate", True)
    assert len(web.requests) == 2


async def test_temporal_does_not_retry_a_rejection(tdb, http, web, dev_env):
    with pytest.raises(WorkflowFailureError) as caught:
        await probe(dev_env, libre(http, web, api_key="wrong"), tdb, "de")

    activity_error = caught.value.cause
    assert isinstance(activity_error, ActivityError)
    assert isinstance(activity_error.cause, ApplicationError)
    assert activity_error.cause.type == "TranslationRejected"
    assert len(web.requests) == 1


# --- glossary protection (pure) ---------------------------------------------------------------


def test_protect_numbers_each_distinct_term_once_longest_first():
    protected = protect("Meridian SDK on iOS; the SDK and Meridian, again the Meridian SDK", GLOSSARY)

    assert protected.text == "{{0}} on {{1}}; the {{2}} and {{3}}, again the {{0}}"
    assert protected.terms == ["Meridian SDK", "iOS", "SDK", "Meridian"]


@pytest.mark.parametrize(
    ("text", "protected"),
    [
        ("SDK crash on iOS 17 求助", "{{0}} crash on {{1}} 17 求助"),
        ("iOS上的SDK崩溃", "{{0}}上的{{1}}崩溃"),  # CJK needs no spaces around a term
        ("SDKのログイン", "{{0}}のログイン"),
        ("SDK로 로그인", "{{0}}로 로그인"),
        ("SDKs, sdk, MySDK, SDK_v2, iOS17", "SDKs, sdk, MySDK, SDK_v2, iOS17"),  # not whole, or other case
        ('(SDK) "iOS" SDK. SDK-2', '({{0}}) "{{1}}" {{0}}. {{0}}-2'),
        ("call getUserToken() twice: getUserToken()getUserToken()", "call {{0}} twice: {{0}}{{0}}"),
        ("mygetUserToken() is not ours", "mygetUserToken() is not ours"),
        ("Ärger mit SDKé und SDK", "Ärger mit SDKé und {{0}}"),  # accented Latin letters are word letters
    ],
)
def test_protect_matches_whole_terms_only(text, protected):
    result = protect(text, GLOSSARY)
    assert result.text == protected
    assert result.restore(result.text) == text


@pytest.mark.parametrize(
    "translated",
    [
        "Das {{0}} stürzt auf {{1}} ab",
        "Das {{ 0 }} stürzt auf {{1 }} ab",
        "Das {0} stürzt auf {{1}} ab",
        "Das ｛｛0｝｝ stürzt auf ｛｛ 1 ｝｝ ab",
        "Das {{０}} stürzt auf {{１}} ab",  # full-width digits
        "Auf {{1}} stürzt das {{0}} ab",  # moved
    ],
)
def test_restore_tolerates_what_providers_do_to_placeholders(translated):
    protected = protect("The SDK crashes on iOS", GLOSSARY)
    restored = protected.restore(translated)
    assert "SDK" in restored and "iOS" in restored
    assert PLACEHOLDER.search(restored) is None
    assert protected.missing(translated) == []


def test_restore_leaves_unknown_numbers_and_reports_dropped_terms():
    protected = protect("The SDK crashes on iOS", GLOSSARY)
    assert protected.restore("Das {{0}} und {{7}}") == "Das SDK und {{7}}"
    assert protected.missing("Das {{0}} stürzt ab") == ["iOS"]


def test_text_that_looks_like_a_placeholder_survives():
    text = "Template {{0}} and {1} render SDK as ｛｛2｝｝"
    protected = protect(text, GLOSSARY)
    assert protected.text == "Template {{0}} and {{1}} render {{2}} as {{3}}"
    assert protected.terms == ["{{0}}", "{1}", "SDK", "｛｛2｝｝"]
    assert protected.restore("Vorlage {{0}} und {{1}} zeigen {{2}} als {{3}}") == (
        "Vorlage {{0}} und {1} zeigen SDK als ｛｛2｝｝"
    )


def test_text_hash_and_language_keys():
    assert text_hash("hello") == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert text_hash("Hello") != text_hash("hello")
    assert [language_key(c) for c in [None, "", "auto", "EN", "pt_BR", " de "]] == [
        "auto",
        "auto",
        "auto",
        "en",
        "pt-br",
        "de",
    ]
    assert same_language("en", "en-GB") and same_language("pt-BR", "pt")
    assert not same_language(None, "en") and not same_language("en", "de")


def test_blank_and_duplicate_glossary_entries_are_ignored():
    assert protect("SDK", ["", "  ", "SDK", " SDK "]).terms == ["SDK"]
    assert protect("nothing here", []).text == "nothing here"


# --- glossary protection (properties) ---------------------------------------------------------

NAMES = ["Meridian", "iOS", "SDK", "getUserToken()", "C++", "v2.1", "Node.js", "OAuth2", "useQuery"]
PIECES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(NAMES),
    st.sampled_from(["{{0}}", "{1}", "｛｛2｝｝", "{{", "}}", "{", "}", " ", "上", "{{ 3 }}"]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(PIECES, max_size=12), st.lists(st.sampled_from(NAMES), max_size=5))
def test_protect_then_restore_gives_the_text_back(pieces, terms):
    text = "".join(pieces)
    protected = protect(text, terms)
    assert protected.restore(protected.text) == text
    # Nothing the provider sees is a glossary term any more: every match left is a placeholder.
    pattern = glossary_pattern(terms)
    for match in pattern.finditer(protected.text):
        assert PLACEHOLDER.fullmatch(match.group(0)), (text, protected.text)


FILLER = st.text(alphabet="qwxz", min_size=1, max_size=6)
STYLES = ["{{%s}}", "{{ %s }}", "{%s}", "｛｛%s｝｝", "{{ %s}}", "｛｛ %s ｝｝"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(FILLER, st.sampled_from(NAMES)), min_size=1, max_size=12),
    st.randoms(use_true_random=False),
)
def test_terms_survive_a_provider_that_moves_recases_and_respaces(units, rnd):
    protected = protect(" ".join(units), NAMES)
    tokens = protected.text.split(" ")
    assert len(tokens) == len(units)
    assert [PLACEHOLDER.fullmatch(t) is not None for t in tokens] == [u in NAMES for u in units]

    # The "provider": upper-cases every word, reorders, and writes placeholders its own way.
    order = list(range(len(tokens)))
    rnd.shuffle(order)
    rewritten = []
    for i in order:
        match = PLACEHOLDER.fullmatch(tokens[i])
        rewritten.append(rnd.choice(STYLES) % match.group(1) if match else tokens[i].upper())
    restored = protected.restore(" ".join(rewritten))

    assert restored.split(" ") == [units[i] if units[i] in NAMES else units[i].upper() for i in order]
    assert Counter(w for w in restored.split(" ") if w in NAMES) == Counter(u for u in units if u in NAMES)
