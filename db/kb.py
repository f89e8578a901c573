"""SQL for the knowledge base: articles, translations and their history, chunks, hybrid search.

Version history and the outdated flags are kept by triggers (0009_knowledge_base.sql), so every
writer gets them; this module only ever bumps a version when the text really changed. Search
reads published translations of published articles only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import asyncpg

from domain.kb import (
    CJK_LANGUAGES,
    CJK_MIN_COVERAGE,
    MAX_QUERY_LEXEMES,
    MIN_COVERAGE,
    ChunkDraft,
    InvalidKbTransition,
    KbArticle,
    KbArticleDetail,
    KbStatus,
    KbTranslation,
    KbTranslationVersion,
    SearchHit,
    SearchResult,
    allowed_from,
    any_lexeme_query,
    base_language,
    content_lexemes,
    index_text,
    language_lexeme,
    match_query,
    reciprocal_rank_fusion,
    selective_lexemes,
    snippet,
    text_search_config,
)

# How many translations each method hands to the fusion: RRF only reorders what either found.
CANDIDATES = 30
# Chunks fetched per translation wanted: a translation's chunks often rank next to each other.
# Kept low for vectors, where a filtered HNSW scan costs time in proportion to the rows it returns.
FULLTEXT_CHUNKS_PER_TRANSLATION = 4
VECTOR_CHUNKS_PER_TRANSLATION = 2
# HNSW candidate list per scan; pgvector's default of 40 misses neighbours once filters apply.
EF_SEARCH = 100
# A lexeme in more than this share of all chunks is not used to select them (see
# selective_lexemes). Below COMMON_MIN_CHUNKS chunks matching is cheap anyway, and statistics of a
# few rows would call ordinary words common. PostgreSQL's ANALYZE statistics of kb_chunks.tsv
# provide the shares; they are read again every COMMON_TTL seconds.
COMMON_SHARE = 0.05
COMMON_MIN_CHUNKS = 20_000
COMMON_TTL = 600.0
_common: tuple[float, dict[str, float]] | None = None
# asyncpg prepares every statement; after a few runs PostgreSQL may switch to a generic plan, which
# cannot see the LIMIT or which filters are NULL and scans every chunk (30x slower, measured).
_CUSTOM_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan"


def _article(row: asyncpg.Record) -> KbArticle:
    return KbArticle(**dict(row))


def _translation(row: asyncpg.Record) -> KbTranslation:
    return KbTranslation(**dict(row))


def vector_literal(values: Sequence[float]) -> str:
    """pgvector's text form; asyncpg has no codec for the type, and `$n::vector` parses this."""
    return "[" + ",".join(format(float(v), ".7g") for v in values) + "]"


# --- articles and translations ----------------------------------------------------------------


async def create_article(
    conn: asyncpg.Connection,
    *,
    module: str,
    source_language: str,
    title: str,
    body: str,
    status: KbStatus = KbStatus.DRAFT,
    created_from_ticket: int | None = None,
    edited_by: str | None = None,
) -> KbArticleDetail:
    """The article and its source translation (version 1), which share the article's status."""
    async with conn.transaction():
        article = await conn.fetchrow(
            """INSERT INTO kb_articles (module, source_language, status, created_from_ticket)
               VALUES ($1, $2, $3, $4) RETURNING *""",
            module,
            source_language,
            status.value,
            created_from_ticket,
        )
        source = await conn.fetchrow(
            """INSERT INTO kb_translations (article_id, language, title, body, status, edited_by)
               VALUES ($1, $2, $3, $4, $5, $6) RETURNING *""",
            article["id"],
            source_language,
            title,
            body,
            status.value,
            edited_by,
        )
    return KbArticleDetail(**dict(article), translations=[_translation(source)])


async def save_translation(
    conn: asyncpg.Connection,
    article_id: int,
    language: str,
    *,
    title: str,
    body: str,
    machine_translated: bool = False,
    source_version: int | None = None,
    edited_by: str | None = None,
    status: KbStatus = KbStatus.DRAFT,
) -> KbTranslation:
    """Add a translation or a new version of it; saving the same text again changes nothing.

    `source_version` (ignored for the source language) is the source version this text was
    translated from, by default the current one. A new version of the source marks every
    translation made from an older one outdated. `status` applies to a new translation only;
    statuses change through `set_translation_status`.
    """
    async with conn.transaction():
        # Locking the article serialises saves of its translations: versions and the source
        # version a translation defaults to cannot interleave.
        article = await conn.fetchrow("SELECT * FROM kb_articles WHERE id = $1 FOR UPDATE", article_id)
        if article is None:
            raise LookupError(f"knowledge-base article {article_id} does not exist")
        if language == article["source_language"]:
            source_version = None
        else:
            current = await conn.fetchval(
                "SELECT version FROM kb_translations WHERE article_id = $1 AND language = $2",
                article_id,
                article["source_language"],
            )
            if source_version is None:
                source_version = current
            elif current is not None and source_version > current:
                raise ValueError(f"the source has no version {source_version} (latest is {current})")
        row = await conn.fetchrow(
            """INSERT INTO kb_translations (article_id, language, title, body, machine_translated,
                                            source_version, edited_by, status)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
               ON CONFLICT (article_id, language) DO UPDATE SET
                   title = EXCLUDED.title, body = EXCLUDED.body,
                   machine_translated = EXCLUDED.machine_translated,
                   source_version = EXCLUDED.source_version, edited_by = EXCLUDED.edited_by,
                   version = kb_translations.version + 1, updated_at = now()
               WHERE (kb_translations.title, kb_translations.body, kb_translations.machine_translated,
                      kb_translations.source_version)
                     IS DISTINCT FROM
                     (EXCLUDED.title, EXCLUDED.body, EXCLUDED.machine_translated, EXCLUDED.source_version)
               RETURNING *""",
            article_id,
            language,
            title,
            body,
            machine_translated,
            source_version,
            edited_by,
            status.value,
        )
        if row is None:
            row = await conn.fetchrow(
                "SELECT * FROM kb_translations WHERE article_id = $1 AND language = $2", article_id, language
            )
        await conn.execute("UPDATE kb_articles SET updated_at = now() WHERE id = $1", article_id)
    return _translation(row)


async def set_article_status(
    conn: asyncpg.Connection, article_id: int, status: KbStatus, *, reviewer_id: str | None = None
) -> KbArticle | None:
    """Move the article (and its source translation with it); None if it does not exist."""
    async with conn.transaction():
        row = await conn.fetchrow(
            """UPDATE kb_articles SET status = $2, updated_at = now()
               WHERE id = $1 AND status = ANY($3::text[]) RETURNING *""",
            article_id,
            status.value,
            [s.value for s in allowed_from(status)],
        )
        if row is None:
            current = await conn.fetchval("SELECT status FROM kb_articles WHERE id = $1", article_id)
            if current is None:
                return None
            raise InvalidKbTransition(f"article {article_id} is {current}; it cannot become {status.value}")
        await conn.execute(
            """UPDATE kb_translations SET status = $3, reviewer_id = coalesce($4, reviewer_id),
                   reviewed_at = CASE WHEN $3 = 'published' AND status <> 'published' THEN now()
                                      ELSE reviewed_at END,
                   updated_at = now()
               WHERE article_id = $1 AND language = $2""",
            article_id,
            row["source_language"],
            status.value,
            reviewer_id,
        )
    return _article(row)


async def set_translation_status(
    conn: asyncpg.Connection, translation_id: int, status: KbStatus, *, reviewer_id: str | None = None
) -> KbTranslation | None:
    """Move one translation; publishing stamps `reviewed_at`. None if it does not exist."""
    row = await conn.fetchrow(
        """UPDATE kb_translations SET status = $2, reviewer_id = coalesce($3, reviewer_id),
               reviewed_at = CASE WHEN $2 = 'published' AND status <> 'published' THEN now()
                                  ELSE reviewed_at END,
               updated_at = now()
           WHERE id = $1 AND status = ANY($4::text[]) RETURNING *""",
        translation_id,
        status.value,
        reviewer_id,
        [s.value for s in allowed_from(status)],
    )
    if row is None:
        current = await conn.fetchval("SELECT status FROM kb_translations WHERE id = $1", translation_id)
        if current is None:
            return None
        raise InvalidKbTransition(
            f"translation {translation_id} is {current}; it cannot become {status.value}"
        )
    return _translation(row)


async def get_article(conn: asyncpg.Connection, article_id: int) -> KbArticleDetail | None:
    row = await conn.fetchrow("SELECT * FROM kb_articles WHERE id = $1", article_id)
    if row is None:
        return None
    translations = await conn.fetch(
        """SELECT * FROM kb_translations WHERE article_id = $1
           ORDER BY language <> $2, language""",
        article_id,
        row["source_language"],
    )
    return KbArticleDetail(**dict(row), translations=[_translation(t) for t in translations])


async def get_translation(conn: asyncpg.Connection, translation_id: int) -> KbTranslation | None:
    row = await conn.fetchrow("SELECT * FROM kb_translations WHERE id = $1", translation_id)
    return _translation(row) if row else None


async def translation_versions(conn: asyncpg.Connection, translation_id: int) -> list[KbTranslationVersion]:
    rows = await conn.fetch(
        "SELECT * FROM kb_translation_versions WHERE translation_id = $1 ORDER BY version", translation_id
    )
    return [KbTranslationVersion(**dict(r)) for r in rows]


# --- chunks -----------------------------------------------------------------------------------


async def replace_chunks(
    conn: asyncpg.Connection,
    translation_id: int,
    translation_version: int,
    language: str,
    chunks: Sequence[ChunkDraft],
    embeddings: Sequence[Sequence[float]] | None = None,
    embedding_model: str | None = None,
) -> bool:
    """Swap a translation's chunks for these in one transaction. Without embeddings the chunks are
    searchable by full text only. False (and nothing written) when chunks of a newer version are
    already stored: a slow run for an old version must not undo a faster newer one."""
    if embeddings is not None and (len(embeddings) != len(chunks) or not embedding_model):
        raise ValueError("one embedding per chunk, and the model that made them, are required")
    config = text_search_config(language)
    marker = language_lexeme(language)
    async with conn.transaction():
        # Serialises runs for one translation, so the version check below cannot race.
        await conn.execute("SELECT 1 FROM kb_translations WHERE id = $1 FOR UPDATE", translation_id)
        stored = await conn.fetchval(
            "SELECT max(translation_version) FROM kb_chunks WHERE translation_id = $1", translation_id
        )
        if stored is not None and stored > translation_version:
            return False
        await conn.execute("DELETE FROM kb_chunks WHERE translation_id = $1", translation_id)
        await conn.executemany(
            """INSERT INTO kb_chunks (translation_id, chunk_index, translation_version, language, text, tsv,
                                      embedding, embedding_model)
               VALUES ($1, $2, $3, $4, $5,
                       setweight(to_tsvector($6::text::regconfig, $7), 'A')
                         || setweight(to_tsvector($6::text::regconfig, $8), 'B')
                         || array_to_tsvector(ARRAY[$11]),
                       $9::text::vector, $10)""",
            [
                (
                    translation_id,
                    chunk.chunk_index,
                    translation_version,
                    language,
                    chunk.text,
                    config,
                    chunk.index_title,
                    chunk.index_text,
                    vector_literal(embeddings[n]) if embeddings is not None else None,
                    embedding_model if embeddings is not None else None,
                    marker,
                )
                for n, chunk in enumerate(chunks)
            ],
        )
    return True


async def chunks_current(
    conn: asyncpg.Connection, translation_id: int, translation_version: int, embedding_model: str
) -> bool:
    """The translation's chunks are of this version and all embedded by this model."""
    return await conn.fetchval(
        """SELECT count(*) > 0 AND bool_and(translation_version = $2 AND embedding_model = $3)
           FROM kb_chunks WHERE translation_id = $1""",
        translation_id,
        translation_version,
        embedding_model,
    )


async def translations_to_embed(
    conn: asyncpg.Connection, embedding_model: str, limit: int = 100
) -> list[int]:
    """Translations (not archived) whose chunks are missing, stale, or another model's."""
    rows = await conn.fetch(
        """SELECT t.id FROM kb_translations t
           WHERE t.status <> 'archived' AND NOT EXISTS (
               SELECT 1 FROM kb_chunks c WHERE c.translation_id = t.id
               AND c.translation_version = t.version AND c.embedding_model = $1)
           ORDER BY t.updated_at LIMIT $2""",
        embedding_model,
        limit,
    )
    return [r["id"] for r in rows]


# --- search -----------------------------------------------------------------------------------


def _published(module_param: str) -> str:
    """Joins chunks `c` to what may be shown: published translations of published articles."""
    return f"""JOIN kb_translations t ON t.id = c.translation_id
               JOIN kb_articles a ON a.id = t.article_id
               WHERE t.status = 'published' AND a.status = 'published'
                 AND ({module_param}::text IS NULL OR a.module = {module_param})"""


def _best_per_translation(rows: Sequence[asyncpg.Record], limit: int) -> list[SearchHit]:
    hits: dict[int, SearchHit] = {}
    for r in rows:
        if r["translation_id"] not in hits:
            hits[r["translation_id"]] = SearchHit(**dict(r))
    return sorted(hits.values(), key=lambda h: h.score, reverse=True)[:limit]


async def common_lexemes(conn: asyncpg.Connection) -> dict[str, float]:
    """Lexemes in more than COMMON_SHARE of the chunks, with their share (cached per process)."""
    global _common
    now = time.monotonic()
    if _common is None or now - _common[0] > COMMON_TTL:
        row = await conn.fetchrow(
            """SELECT c.reltuples, s.most_common_elems::text::text[] AS lexemes,
                      s.most_common_elem_freqs AS shares
               FROM pg_class c
               LEFT JOIN pg_stats s ON s.schemaname = current_schema() AND s.tablename = 'kb_chunks'
                                   AND s.attname = 'tsv'
               WHERE c.oid = 'kb_chunks'::regclass"""
        )
        common: dict[str, float] = {}
        if row is not None and row["reltuples"] >= COMMON_MIN_CHUNKS and row["lexemes"]:
            # The shares array ends with three summary numbers, which zip() leaves out.
            common = {x: f for x, f in zip(row["lexemes"], row["shares"], strict=False) if f > COMMON_SHARE}
        _common = (now, common)
    return _common[1]


def forget_common_lexemes() -> None:
    """Read the statistics again on the next search (after a bulk load and ANALYZE)."""
    global _common
    _common = None


async def search_fulltext(
    conn: asyncpg.Connection,
    query: str,
    lang: str,
    *,
    module: str | None = None,
    limit: int = CANDIDATES,
    min_coverage: float | None = None,
) -> list[SearchHit]:
    """Translations in `lang` ranked by ts_rank of their best chunk, with `lang`'s configuration.

    A chunk is found when it holds half of the query's lexemes (after stemming and stop words; a
    third for CJK bigrams): support questions are long and worded unlike the article, so requiring
    every word finds too little, while any single shared word finds noise.
    """
    if min_coverage is None:
        min_coverage = CJK_MIN_COVERAGE if base_language(lang) in CJK_LANGUAGES else MIN_COVERAGE
    async with conn.transaction():
        await conn.execute(_CUSTOM_PLANS)
        rows = await conn.fetch(
            "SELECT lexeme FROM unnest(to_tsvector($1::text::regconfig, $2)) ORDER BY positions[1]",
            text_search_config(lang),
            index_text(query),
        )
        lexemes = content_lexemes([r["lexeme"] for r in rows], lang)[:MAX_QUERY_LEXEMES]
        if not lexemes:
            return []
        selective, required = selective_lexemes(lexemes, await common_lexemes(conn))
        rows = await conn.fetch(
            f"""SELECT t.article_id, c.translation_id, c.language, c.chunk_index,
                       ts_rank(c.tsv, $2::tsquery) AS score
                FROM kb_chunks c
                {_published("$4")}
                  AND c.tsv @@ $1::tsquery AND c.language = $3
                ORDER BY score DESC LIMIT $5""",
            match_query(selective, lang, required or min_coverage),
            any_lexeme_query(lexemes),
            lang,
            module,
            limit * FULLTEXT_CHUNKS_PER_TRANSLATION,
        )
    return _best_per_translation(rows, limit)


async def search_vector(
    conn: asyncpg.Connection,
    embedding: Sequence[float],
    *,
    embedding_model: str | None = None,
    module: str | None = None,
    limit: int = CANDIDATES,
) -> list[SearchHit]:
    """Translations in any language ranked by cosine similarity of their nearest chunk.

    `embedding_model` keeps vectors of other models out (None compares with every vector).
    """
    async with conn.transaction():
        # Filters apply after the index scan; iterating keeps scanning until enough rows pass.
        await conn.execute(
            f"SET LOCAL hnsw.ef_search = {EF_SEARCH}; SET LOCAL hnsw.iterative_scan = relaxed_order; "
            + _CUSTOM_PLANS
        )
        rows = await conn.fetch(
            f"""SELECT article_id, translation_id, language, chunk_index, 1 - distance AS score FROM (
                    SELECT t.article_id, c.translation_id, c.language, c.chunk_index,
                           c.embedding <=> $1::text::vector AS distance
                    FROM kb_chunks c
                    {_published("$3")}
                      AND c.embedding IS NOT NULL AND ($2::text IS NULL OR c.embedding_model = $2)
                    ORDER BY distance LIMIT $4) AS nearest
                ORDER BY distance""",
            vector_literal(embedding),
            embedding_model,
            module,
            limit * VECTOR_CHUNKS_PER_TRANSLATION,
        )
    return _best_per_translation(rows, limit)


def _articles(hits: Sequence[SearchHit]) -> list[int]:
    return list(dict.fromkeys(h.article_id for h in hits))


async def search(
    pool: asyncpg.Pool,
    query: str,
    query_embedding: Sequence[float] | None,
    lang: str,
    module: str | None = None,
    limit: int = 10,
    *,
    embedding_model: str | None = None,
) -> list[SearchResult]:
    """Hybrid search: full text in `lang` and vectors in every language, fused by reciprocal rank.

    One result per article, shown in `lang` when that translation is published and in the
    article's source language otherwise (the API machine-translates it, or says so). Without a
    query embedding (no embedder reachable) only full text runs.
    """

    async def fulltext() -> list[SearchHit]:
        async with pool.acquire() as conn:
            return await search_fulltext(conn, query, lang, module=module)

    async def vector() -> list[SearchHit]:
        if query_embedding is None:
            return []
        async with pool.acquire() as conn:
            return await search_vector(conn, query_embedding, embedding_model=embedding_model, module=module)

    text_hits, vector_hits = await asyncio.gather(fulltext(), vector())
    text_articles, vector_articles = set(_articles(text_hits)), set(_articles(vector_hits))
    nearest: dict[int, float] = {}
    for hit in vector_hits:
        nearest[hit.article_id] = max(nearest.get(hit.article_id, -1.0), hit.score)
    fused = reciprocal_rank_fusion([_articles(text_hits), _articles(vector_hits)])[:limit]
    if not fused:
        return []
    # The chunk to quote per translation: its best full-text match, else its nearest vector chunk.
    quote: dict[int, int] = {}
    for hit in [*text_hits, *vector_hits]:
        quote.setdefault(hit.translation_id, hit.chunk_index)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_CUSTOM_PLANS)
        rows = await conn.fetch(
            """WITH shown AS (
                   SELECT DISTINCT ON (t.article_id) t.*, a.module
                   FROM kb_translations t JOIN kb_articles a ON a.id = t.article_id
                   WHERE t.article_id = ANY($1::bigint[]) AND t.status = 'published'
                   ORDER BY t.article_id, t.language = $2 DESC, t.language = a.source_language DESC,
                            t.language)
               SELECT shown.*, c.text AS chunk_text
               FROM shown
               LEFT JOIN unnest($3::bigint[], $4::int[]) AS q(translation_id, chunk_index)
                      ON q.translation_id = shown.id
               LEFT JOIN kb_chunks c ON c.translation_id = shown.id
                                    AND c.chunk_index = coalesce(q.chunk_index, 0)""",
            [article_id for article_id, _ in fused],
            lang,
            list(quote),
            list(quote.values()),
        )
    shown = {r["article_id"]: r for r in rows}
    results: list[SearchResult] = []
    for article_id, score in fused:
        row = shown.get(article_id)
        if row is None:  # unpublished between the two queries
            continue
        results.append(
            SearchResult(
                article_id=article_id,
                translation_id=row["id"],
                module=row["module"],
                language=row["language"],
                title=row["title"],
                snippet=snippet(row["chunk_text"] or row["body"], query),
                score=round(score, 6),
                matched=[
                    method
                    for method, found in (("fulltext", text_articles), ("vector", vector_articles))
                    if article_id in found
                ],
                similarity=round(nearest[article_id], 4) if article_id in nearest else None,
                machine_translated=row["machine_translated"],
                outdated=row["outdated"],
            )
        )
    return results


async def list_articles(
    conn: asyncpg.Connection,
    *,
    status: KbStatus | None = None,
    module: str | None = None,
    outdated: bool | None = None,
    reviewer_id: str | None = None,
    limit: int = 50,
    before_id: int | None = None,
) -> list[KbArticleDetail]:
    """Newest first; `outdated` keeps articles with (or without) an outdated translation,
    `reviewer_id` those with a translation waiting for that reviewer."""
    rows = await conn.fetch(
        """SELECT a.id FROM kb_articles a
           WHERE ($1::text IS NULL OR a.status = $1) AND ($2::text IS NULL OR a.module = $2)
             AND ($3::boolean IS NULL OR EXISTS (
                    SELECT 1 FROM kb_translations t WHERE t.article_id = a.id AND t.outdated) = $3)
             AND ($4::text IS NULL OR EXISTS (
                    SELECT 1 FROM kb_translations t WHERE t.article_id = a.id AND t.reviewer_id = $4
                    AND t.status = 'in_review'))
             AND ($6::bigint IS NULL OR a.id < $6)
           ORDER BY a.id DESC LIMIT $5""",
        status.value if status else None,
        module,
        outdated,
        reviewer_id,
        limit,
        before_id,
    )
    articles = [await get_article(conn, r["id"]) for r in rows]
    return [a for a in articles if a is not None]
