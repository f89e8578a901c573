"""SQL for machine translation: the translation cache and the glossary of terms never translated."""

from __future__ import annotations

import asyncpg

from domain.translation import GlossaryTerm, GlossaryTermFields

# --- the cache --------------------------------------------------------------------------------


async def get_cached(
    conn: asyncpg.Connection, provider: str, source_lang: str, target_lang: str, texts: dict[str, str]
) -> dict[str, str]:
    """Cached translations of `texts` (hash -> text as sent), by hash. A row whose stored text differs
    from the one asked for is a hash collision and counts as a miss."""
    if not texts:
        return {}
    rows = await conn.fetch(
        """SELECT text_hash, source_text, translated_text FROM translation_cache
           WHERE provider = $1 AND source_lang = $2 AND target_lang = $3 AND text_hash = ANY($4::text[])""",
        provider,
        source_lang,
        target_lang,
        list(texts),
    )
    return {
        row["text_hash"]: row["translated_text"]
        for row in rows
        if texts.get(row["text_hash"]) == row["source_text"]
    }


async def put_cached(
    conn: asyncpg.Connection,
    provider: str,
    source_lang: str,
    target_lang: str,
    translations: list[tuple[str, str, str]],
) -> None:
    """Stores (hash, text as sent, translation) rows; the first translation stored for a key stays,
    so two workers translating the same text at once agree on what later readers get."""
    if not translations:
        return
    await conn.executemany(
        """INSERT INTO translation_cache
               (provider, source_lang, target_lang, text_hash, source_text, translated_text)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (provider, source_lang, target_lang, text_hash) DO NOTHING""",
        [(provider, source_lang, target_lang, *row) for row in translations],
    )


# --- the glossary -----------------------------------------------------------------------------


async def list_glossary_terms(conn: asyncpg.Connection) -> list[GlossaryTerm]:
    rows = await conn.fetch("SELECT term, note, created_at FROM glossary_terms ORDER BY term")
    return [GlossaryTerm(**dict(r)) for r in rows]


async def add_glossary_term(conn: asyncpg.Connection, fields: GlossaryTermFields) -> GlossaryTerm:
    """Adds the term, or updates the note of an existing one (the term keeps its creation time)."""
    row = await conn.fetchrow(
        """INSERT INTO glossary_terms (term, note) VALUES ($1, $2)
           ON CONFLICT (term) DO UPDATE SET note = EXCLUDED.note
           RETURNING term, note, created_at""",
        fields.term,
        fields.note,
    )
    return GlossaryTerm(**dict(row))


async def delete_glossary_term(conn: asyncpg.Connection, term: str) -> bool:
    """True when the term existed."""
    status = await conn.execute("DELETE FROM glossary_terms WHERE term = $1", term)
    return status == "DELETE 1"
