"""What the knowledge base does for tickets and tickets do for the knowledge base.

- `ticket_insights`: embeds a new ticket's text, links possible duplicates (open tickets of the
  same customer that say the same), finds the articles that may answer it (shown to the
  customer in their language, machine-translated and marked so where no human translation
  exists) and, when keywords left the module open, suggests one from those articles.
- `draft_article_from_ticket`: a resolved ticket without a linked article becomes a draft
  article, free of personal data, in review by a lead of its module.
- `open_machine_translations`: once a source is published, a machine-translated draft for
  every other language the desk serves, each waiting for a person to review it.
"""

from __future__ import annotations

import asyncpg
import structlog
from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.embeddings import Embedder, EmbeddingError
from activities.translation import TranslationRejected, TranslationService, TranslationUnavailable
from db import kb, problems
from domain.kb import KbStatus
from domain.privacy import redact
from domain.triage import GENERAL_MODULE

log = structlog.get_logger(__name__)


class KnowledgeSettings(BaseModel):
    languages: list[str]
    kb_suggestions: int = 3
    # Cosine similarity (multilingual-e5-small) above which an article is worth showing without a
    # full-text match; e5 puts unrelated texts around 0.75, so the bar sits well above that.
    kb_suggestion_similarity: float = 0.84
    duplicate_similarity: float = 0.93


class InsightsRequest(BaseModel):
    ticket_id: int
    customer_id: str
    subject: str
    body: str
    language: str
    module: str


class ArticleSuggestion(BaseModel):
    article_id: int
    translation_id: int
    module: str
    language: str
    title: str
    snippet: str
    machine_translated: bool = Field(description="title and snippet machine-translated for this customer")
    matched: list[str]


class TicketInsights(BaseModel):
    suggestions: list[ArticleSuggestion] = Field(default_factory=list)
    duplicates: dict[int, float] = Field(default_factory=dict, description="ticket id -> similarity")
    module_hint: str | None = None
    note: str | None = None  # why something is missing (the embedder was unreachable, say)


class DraftRequest(BaseModel):
    ticket_id: int
    resolution: str | None = None


class DraftedArticle(BaseModel):
    article_id: int
    reviewer_id: str | None
    removed: dict[str, int] = Field(default_factory=dict, description="personal data taken out, by kind")


class KnowledgeActivities:
    def __init__(
        self,
        pool: asyncpg.Pool,
        embedder: Embedder,
        translation: TranslationService,
        settings: KnowledgeSettings,
    ):
        self.pool = pool
        self.embedder = embedder
        self.translation = translation
        self.settings = settings

    # --- suggestions and duplicates ---------------------------------------------------------------

    @activity.defn(name="ticket_insights")
    async def ticket_insights(self, request: InsightsRequest) -> TicketInsights:
        """Idempotent: the ticket's vector is replaced, links are inserted once."""
        text = f"{request.subject}\n{request.body}"
        insights = TicketInsights()
        try:
            [vector] = await self.embedder.embed([text], "query")
        except EmbeddingError as err:
            if err.retryable and activity.info().attempt < 3:
                raise ApplicationError(
                    str(err), type="EmbeddingFailed", next_retry_delay=err.retry_after
                ) from err
            # Suggestions are a courtesy: a ticket never waits for them. Full text still answers.
            vector, insights.note = None, f"embedder unavailable: {err}"
        if vector is not None:
            async with self.pool.acquire() as conn:
                await problems.save_ticket_embedding(
                    conn, request.ticket_id, request.customer_id, request.module, vector, self.embedder.name
                )
                found = await problems.link_possible_duplicates(
                    conn, request.ticket_id, self.settings.duplicate_similarity
                )
            insights.duplicates = {ticket: round(similarity, 4) for ticket, similarity in found}
        results = await kb.search(
            self.pool,
            text,
            vector,
            request.language,
            None,
            self.settings.kb_suggestions * 2,
            embedding_model=self.embedder.name,
        )
        relevant = [
            r
            for r in results
            if "fulltext" in r.matched
            or (r.similarity is not None and r.similarity >= self.settings.kb_suggestion_similarity)
        ][: self.settings.kb_suggestions]
        if request.module == GENERAL_MODULE and relevant:
            insights.module_hint = relevant[0].module
        insights.suggestions = await self._in_language(relevant, request.language)
        return insights

    async def _in_language(self, results: list, language: str) -> list[ArticleSuggestion]:
        suggestions = []
        for r in results:
            title, snippet, machine = r.title, r.snippet, r.machine_translated
            if r.language != language:
                try:
                    done = await self.translation.translate([r.title, r.snippet], r.language, language)
                except (TranslationRejected, TranslationUnavailable) as err:
                    log.warning("suggestion left untranslated", article_id=r.article_id, error=str(err))
                    done = []
                if done and all(d.machine_translated for d in done):
                    title, snippet, machine = done[0].text, done[1].text, True
            suggestions.append(
                ArticleSuggestion(
                    article_id=r.article_id,
                    translation_id=r.translation_id,
                    module=r.module,
                    language=language if machine and r.language != language else r.language,
                    title=title,
                    snippet=snippet,
                    machine_translated=machine,
                    matched=r.matched,
                )
            )
        return suggestions

    # --- the ticket-to-article loop ---------------------------------------------------------------

    @activity.defn(name="draft_article_from_ticket")
    async def draft_article_from_ticket(self, request: DraftRequest) -> DraftedArticle:
        """Idempotent: a ticket drafts at most one article (a rerun returns the first)."""
        async with self.pool.acquire() as conn:
            existing = await conn.fetchrow(
                "SELECT id FROM kb_articles WHERE created_from_ticket = $1 ORDER BY id LIMIT 1",
                request.ticket_id,
            )
            ticket = await conn.fetchrow(
                """SELECT t.id, t.subject, t.language, coalesce(t.module, 'general') AS module,
                          c.name AS customer_name, c.email AS customer_email
                   FROM tickets t JOIN customers c ON c.id = t.customer_id WHERE t.id = $1""",
                request.ticket_id,
            )
            if ticket is None:
                raise ApplicationError(
                    f"ticket {request.ticket_id} does not exist", type="UnknownTicket", non_retryable=True
                )
            reviewer = await _module_lead(conn, ticket["module"])
            if existing is not None:
                return DraftedArticle(article_id=existing["id"], reviewer_id=reviewer)
            events = await conn.fetch(
                """SELECT kind, data FROM ticket_events
                   WHERE ticket_id = $1 AND kind IN ('created', 'customer_message', 'agent_reply', 'resolved')
                   ORDER BY seq""",
                request.ticket_id,
            )
        names = [n for n in (ticket["customer_name"], ticket["customer_email"]) if n]
        problem = [e["data"].get("body") for e in events if e["kind"] in ("created", "customer_message")]
        answers = [
            e["data"].get("original_body") or e["data"].get("body")
            for e in events
            if e["kind"] == "agent_reply"
        ]
        resolution = request.resolution or next(
            (
                e["data"].get("resolution")
                for e in reversed(events)
                if e["kind"] == "resolved" and e["data"].get("resolution")
            ),
            None,
        )
        sections = [
            ("Problem", "\n\n".join(p for p in problem if p)),
            ("What we did", "\n\n".join(a for a in answers if a)),
            ("Resolution", resolution or ""),
        ]
        body = "\n\n".join(f"{heading}\n\n{text}" for heading, text in sections if text.strip())
        title, text = redact(ticket["subject"], names), redact(body or ticket["subject"], names)
        removed = {
            k: title.removed.get(k, 0) + text.removed.get(k, 0) for k in {*title.removed, *text.removed}
        }
        async with self.pool.acquire() as conn:
            article = await kb.create_article(
                conn,
                module=ticket["module"],
                source_language=ticket["language"] or "en",
                title=title.text,
                body=text.text,
                status=KbStatus.IN_REVIEW,
                created_from_ticket=request.ticket_id,
                edited_by="meridian",
            )
            if reviewer is not None:
                await conn.execute(
                    "UPDATE kb_translations SET reviewer_id = $2 WHERE article_id = $1", article.id, reviewer
                )
        return DraftedArticle(article_id=article.id, reviewer_id=reviewer, removed=removed)

    @activity.defn(name="open_machine_translations")
    async def open_machine_translations(self, article_id: int) -> list[str]:
        """Machine-translated drafts (in review) for every served language without a current human
        translation; returns the languages drafted. Idempotent: current ones are left alone."""
        async with self.pool.acquire() as conn:
            article = await kb.get_article(conn, article_id)
        if article is None:
            raise ApplicationError(
                f"article {article_id} does not exist", type="UnknownArticle", non_retryable=True
            )
        source = article.translation(article.source_language)
        if source is None or source.status is not KbStatus.PUBLISHED:
            return []
        wanted = [
            language
            for language in self.settings.languages
            if language != article.source_language
            and (
                (existing := article.translation(language)) is None
                or (existing.outdated and existing.machine_translated)
            )
        ]
        drafted = []
        for language in wanted:
            try:
                title, body = await self.translation.translate(
                    [source.title, source.body], source.language, language
                )
            except TranslationRejected as err:
                log.warning(
                    "machine translation refused", article_id=article_id, language=language, error=str(err)
                )
                continue
            except TranslationUnavailable as err:
                raise ApplicationError(
                    str(err), type="TranslationUnavailable", next_retry_delay=err.retry_after
                ) from err
            if not (title.machine_translated and body.machine_translated):
                continue  # no provider: nothing to review
            async with self.pool.acquire() as conn:
                translation = await kb.save_translation(
                    conn,
                    article_id,
                    language,
                    title=title.text,
                    body=body.text,
                    machine_translated=True,
                    source_version=source.version,
                    edited_by=f"machine:{title.provider}",
                    status=KbStatus.IN_REVIEW,
                )
                if translation.status is not KbStatus.IN_REVIEW:
                    await kb.set_translation_status(conn, translation.id, KbStatus.IN_REVIEW)
            drafted.append(language)
        return drafted


async def _module_lead(conn: asyncpg.Connection, module: str) -> str | None:
    """A lead skilled in the module (the most skilled first), else any lead."""
    return await conn.fetchval(
        """SELECT id FROM agents WHERE active AND roles @> ARRAY['lead']
           ORDER BY coalesce((skills ->> $1)::int, 0) DESC, id LIMIT 1""",
        module,
    )
