"""Knowledge-base work that must finish even if a process dies half-way.

- `ArticleFromTicketWorkflow` (a child of the ticket, left running when the ticket closes):
  drafts an article from a resolved ticket and asks a lead of its module to review it.
- `PublishTranslationWorkflow` (started by the API when a translation is published, one per
  translation version): indexes it for search and, for a source, opens machine-translated
  drafts for every other language the desk serves.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.embeddings import EmbeddingActivities, EmbedTranslationRequest
    from activities.knowledge import DraftedArticle, DraftRequest, KnowledgeActivities
    from activities.notifications import NotificationActivities
    from domain.notifications import Notification

KB_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=5))


def draft_workflow_id(ticket_id: int) -> str:
    return f"kb-draft-ticket-{ticket_id}"


def publish_workflow_id(translation_id: int, version: int) -> str:
    return f"kb-publish-{translation_id}-v{version}"


class PublishRequest(BaseModel):
    article_id: int
    translation_id: int
    version: int
    is_source: bool


class PublishReport(BaseModel):
    chunks: int
    drafted_languages: list[str]


@workflow.defn(name="ArticleFromTicketWorkflow")
class ArticleFromTicketWorkflow:
    @workflow.run
    async def run(self, request: DraftRequest) -> DraftedArticle:
        drafted = await workflow.execute_activity_method(
            KnowledgeActivities.draft_article_from_ticket,
            request,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=KB_RETRY,
        )
        # Without any lead the review request still lands in the notifications log for the desk.
        await workflow.execute_activity_method(
            NotificationActivities.deliver_notification,
            Notification(
                id=str(workflow.uuid4()),
                ticket_id=request.ticket_id,
                kind="kb_review",
                recipient_type="agent" if drafted.reviewer_id else "region",
                recipient_id=drafted.reviewer_id,
                at=workflow.now(),
                data={"article_id": drafted.article_id, "removed_personal_data": drafted.removed},
            ),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=KB_RETRY,
        )
        return drafted


@workflow.defn(name="PublishTranslationWorkflow")
class PublishTranslationWorkflow:
    @workflow.run
    async def run(self, request: PublishRequest) -> PublishReport:
        indexed = await workflow.execute_activity_method(
            EmbeddingActivities.embed_translation,
            EmbedTranslationRequest(translation_id=request.translation_id),
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(minutes=2),
            retry_policy=KB_RETRY,
        )
        drafted: list[str] = []
        if request.is_source:
            drafted = await workflow.execute_activity_method(
                KnowledgeActivities.open_machine_translations,
                request.article_id,
                start_to_close_timeout=timedelta(minutes=10),
                retry_policy=KB_RETRY,
            )
        return PublishReport(chunks=indexed.chunks, drafted_languages=drafted)
