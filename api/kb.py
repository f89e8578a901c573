"""The knowledge base: articles with translations and versions, their review, and search.

Publishing a translation starts `PublishTranslationWorkflow` (one per translation version):
the translation is indexed for search in the background and, when it is an article's source,
machine-translated drafts open for every other language the desk serves.
"""

from __future__ import annotations

from typing import Annotated

import asyncpg
import structlog
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, Field
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from activities.embeddings import search_knowledge_base
from activities.translation import TranslationRejected, TranslationUnavailable
from api.auth import ANYONE, STAFF, Principal, require
from db import kb
from domain.directory import LANGUAGE_CODE, SLUG
from domain.enums import Role
from domain.kb import (
    InvalidKbTransition,
    KbArticleDetail,
    KbStatus,
    KbTranslation,
    KbTranslationVersion,
    SearchResult,
)
from domain.text import PlainText
from workflows.knowledge import PublishRequest, PublishTranslationWorkflow, publish_workflow_id

router = APIRouter(prefix="/v1/kb", tags=["knowledge base"])
log = structlog.get_logger(__name__)

ArticleId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Language = Annotated[str, Path(pattern=LANGUAGE_CODE)]
MAX_ARTICLE_CHARS = 200_000


class ArticleCreate(BaseModel):
    module: str = Field(pattern=SLUG)
    language: str = Field(pattern=LANGUAGE_CODE, description="the source language")
    title: PlainText = Field(min_length=1, max_length=300)
    body: PlainText = Field(min_length=1, max_length=MAX_ARTICLE_CHARS)


class TranslationWrite(BaseModel):
    title: PlainText = Field(min_length=1, max_length=300)
    body: PlainText = Field(min_length=1, max_length=MAX_ARTICLE_CHARS)
    source_version: int | None = Field(
        default=None, ge=1, description="the source version translated; default: current"
    )


class StatusWrite(BaseModel):
    status: KbStatus


class SearchAnswer(BaseModel):
    query: str
    language: str
    results: list[SearchResult]


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


def _not_found(article_id: int, language: str | None = None) -> HTTPException:
    what = f"article {article_id}" + (f" has no {language} translation" if language else " not found")
    return HTTPException(status.HTTP_404_NOT_FOUND, what)


def _editor(principal: Principal) -> str:
    return f"{principal.role.value}:{principal.subject_id or 'admin'}"


# --- search -----------------------------------------------------------------------------------------


@router.get("/search", response_model=SearchAnswer)
async def search(
    request: Request,
    q: Annotated[PlainText, Query(min_length=1, max_length=500)],
    lang: Annotated[str, Query(pattern=LANGUAGE_CODE, description="the reader's language")] = "en",
    module: Annotated[str | None, Query(pattern=SLUG)] = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
    _: Principal = Depends(require(*ANYONE)),
) -> SearchAnswer:
    """Hybrid search: full text in `lang`, vectors across languages, fused by reciprocal rank.

    Results not available in `lang` are machine-translated (title and snippet) when a provider is
    configured, and marked `machine_translated`; otherwise they are shown in their own language.
    """
    results = await search_knowledge_base(_pool(request), request.app.state.embedder, q, lang, module, limit)
    for result in results:
        if result.language == lang:
            continue
        try:
            title, snippet = await request.app.state.translation.translate(
                [result.title, result.snippet], result.language, lang
            )
        except (TranslationRejected, TranslationUnavailable) as err:
            log.warning("search result left untranslated", article_id=result.article_id, error=str(err))
            continue
        if title.machine_translated and snippet.machine_translated:
            result.title, result.snippet = title.text, snippet.text
            result.language, result.machine_translated = lang, True
    return SearchAnswer(query=q, language=lang, results=results)


# --- articles ---------------------------------------------------------------------------------------


@router.post("/articles", status_code=status.HTTP_201_CREATED, response_model=KbArticleDetail)
async def create_article(
    body: ArticleCreate, request: Request, principal: Principal = Depends(require(*STAFF))
) -> KbArticleDetail:
    """A draft article in its source language."""
    async with _pool(request).acquire() as conn:
        try:
            return await kb.create_article(
                conn,
                module=body.module,
                source_language=body.language,
                title=body.title,
                body=body.body,
                edited_by=_editor(principal),
            )
        except asyncpg.ForeignKeyViolationError:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown module {body.module!r}"
            ) from None


@router.get("/articles", response_model=list[KbArticleDetail])
async def list_articles(
    request: Request,
    state: Annotated[KbStatus | None, Query(alias="status")] = None,
    module: Annotated[str | None, Query(pattern=SLUG)] = None,
    outdated: bool | None = None,
    reviewer: Annotated[str | None, Query(max_length=64)] = None,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="ids below this (next page)")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    _: Principal = Depends(require(*STAFF)),
) -> list[KbArticleDetail]:
    """Newest first. `reviewer=<agent id>` lists what waits for that reviewer; `outdated=true`
    what needs a translator because its source changed."""
    async with _pool(request).acquire() as conn:
        return await kb.list_articles(
            conn,
            status=state,
            module=module,
            outdated=outdated,
            reviewer_id=reviewer,
            limit=limit,
            before_id=before,
        )


@router.get("/articles/{article_id}", response_model=KbArticleDetail)
async def get_article(
    article_id: ArticleId, request: Request, principal: Principal = Depends(require(*ANYONE))
) -> KbArticleDetail:
    """Customers see published articles and only their published translations."""
    async with _pool(request).acquire() as conn:
        article = await kb.get_article(conn, article_id)
    if article is None:
        raise _not_found(article_id)
    if principal.role is Role.CUSTOMER:
        if article.status is not KbStatus.PUBLISHED:
            raise _not_found(article_id)
        article.translations = [t for t in article.translations if t.status is KbStatus.PUBLISHED]
    return article


@router.put("/articles/{article_id}/translations/{language}", response_model=KbTranslation)
async def write_translation(
    article_id: ArticleId,
    language: Language,
    body: TranslationWrite,
    request: Request,
    principal: Principal = Depends(require(*STAFF)),
) -> KbTranslation:
    """A new translation, or a new version of one (the same text again changes nothing). A new
    version of the source marks every translation made from an older one outdated; a new
    version of a published translation is indexed again at once."""
    async with _pool(request).acquire() as conn:
        try:
            translation = await kb.save_translation(
                conn,
                article_id,
                language,
                title=body.title,
                body=body.body,
                source_version=body.source_version,
                edited_by=_editor(principal),
            )
        except LookupError:
            raise _not_found(article_id) from None
        except ValueError as err:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from None
        article = await kb.get_article(conn, article_id)
    if translation.status is KbStatus.PUBLISHED and article is not None:
        await _start_publishing(
            request.app.state.client, request.app.state.settings.task_queue, article, translation
        )
    return translation


@router.get(
    "/articles/{article_id}/translations/{language}/versions", response_model=list[KbTranslationVersion]
)
async def translation_versions(
    article_id: ArticleId, language: Language, request: Request, _: Principal = Depends(require(*STAFF))
) -> list[KbTranslationVersion]:
    async with _pool(request).acquire() as conn:
        article = await kb.get_article(conn, article_id)
        translation = article.translation(language) if article else None
        if translation is None:
            raise _not_found(article_id, language if article else None)
        return await kb.translation_versions(conn, translation.id)


@router.post("/articles/{article_id}/translations/{language}/status", response_model=KbArticleDetail)
async def set_status(
    article_id: ArticleId,
    language: Language,
    body: StatusWrite,
    request: Request,
    principal: Principal = Depends(require(*STAFF)),
) -> KbArticleDetail:
    """Review flow: draft → in_review → published → archived. The source language's status is the
    article's; a translation is shown only while both it and its article are published."""
    reviewer = principal.subject_id if principal.role is Role.AGENT else None
    async with _pool(request).acquire() as conn:
        article = await kb.get_article(conn, article_id)
        translation = article.translation(language) if article else None
        if translation is None:
            raise _not_found(article_id, language if article else None)
        try:
            if language == article.source_language:
                await kb.set_article_status(conn, article_id, body.status, reviewer_id=reviewer)
            else:
                await kb.set_translation_status(conn, translation.id, body.status, reviewer_id=reviewer)
        except InvalidKbTransition as err:
            raise HTTPException(status.HTTP_409_CONFLICT, str(err)) from None
        article = await kb.get_article(conn, article_id)
    changed = article.translation(language)
    if body.status is KbStatus.PUBLISHED and changed is not None:
        await _start_publishing(
            request.app.state.client, request.app.state.settings.task_queue, article, changed
        )
    return article


async def _start_publishing(
    client: Client, task_queue: str, article: KbArticleDetail, translation: KbTranslation
) -> None:
    """Once per translation version; if Temporal is unreachable the article is still published,
    and the embedding sweep of the worker indexes it later."""
    request = PublishRequest(
        article_id=article.id,
        translation_id=translation.id,
        version=translation.version,
        is_source=translation.language == article.source_language,
    )
    try:
        await client.start_workflow(
            PublishTranslationWorkflow.run,
            request,
            id=publish_workflow_id(translation.id, translation.version),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        pass
    except RPCError as err:
        log.warning("publishing workflow not started", translation_id=translation.id, error=str(err))
