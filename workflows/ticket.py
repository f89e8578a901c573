"""One workflow per ticket: triage, assignment, SLA clocks, conversation, CSAT, close.

The workflow is the only writer of a ticket after creation. Every change appends timeline
events to `state.pending_events`; `_flush` projects them with a snapshot into PostgreSQL in
one activity, so readers never see a state without the events that led to it.

The main loop sleeps until the next due instant (an SLA warning or breach, a survey step, the
close) or until a handler changes something, then re-evaluates. Deadlines are derived from
state, never stored as timers, so a pause or a priority change simply moves them.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutType, WorkflowAlreadyStartedError
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from activities.assignment import (
        AssignmentActivities,
        ClaimAgentRequest,
        ClaimBestRequest,
        HandoffRequest,
        ReleaseRequest,
        ShiftEndRequest,
    )
    from activities.calendars import CalendarActivities, CalendarWindowsRequest, SlaRulesRequest
    from activities.channels import ChannelActivities
    from activities.escalations import EscalationActivities, RecipientsRequest
    from activities.knowledge import DraftRequest, InsightsRequest, KnowledgeActivities
    from activities.notifications import NotificationActivities
    from activities.projection import ProjectionActivities
    from activities.surveys import PraiseRequest, RecoveryRequest, SendSurveyRequest, SurveyActivities
    from activities.translation import TranslationActivities
    from activities.triage import TriageActivities, TriageRequest
    from domain.directory import delivery_task_queue, regional_task_queue
    from domain.enums import TicketStatus
    from domain.errors import AGENT_UNAVAILABLE, INVALID_INPUT, INVALID_STATE, NOT_ASSIGNEE, refuse
    from domain.escalation import Escalation, Recipient
    from domain.messages import Phrase, say
    from domain.notifications import Notification
    from domain.pages import Page, PageAction, PageChannel
    from domain.routing import LanguageMatch
    from domain.sla import SlaClock, SlaTarget, worst_state
    from domain.tickets import (
        OFFER_SIGNAL,
        Actor,
        AgentRef,
        AgentReply,
        AssignmentOffer,
        AssignRequest,
        CsatAnswer,
        CustomerMessage,
        EscalationAck,
        Handoff,
        HandoffAck,
        HandoffNoteInput,
        PriorityChange,
        ProjectionBatch,
        ReopenRequest,
        ReplyAccepted,
        ResolveRequest,
        SelfServiceRequest,
        SlaView,
        StatusChange,
        Survey,
        TicketInput,
        TicketOutcome,
        TicketSnapshot,
        TicketState,
        TimelineEvent,
    )
    from domain.translation import TranslationRequest, TranslationResult
    from domain.triage import GENERAL_MODULE
    from workflows import search_attributes as sa
    from workflows.knowledge import ArticleFromTicketWorkflow, draft_workflow_id
    from workflows.recovery import RecoveryWorkflow, recovery_workflow_id

DB_TIMEOUT = timedelta(seconds=30)
# A provider call retries 429/5xx itself for up to ~40 s; two attempts bound what a reply waits.
TRANSLATION_TIMEOUT = timedelta(seconds=60)
TRANSLATION_RETRY = RetryPolicy(maximum_attempts=2, initial_interval=timedelta(seconds=2))
KB_TIMEOUT = timedelta(seconds=60)
KB_RETRY = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=1))
TRIAGE_TIMEOUT = timedelta(seconds=60)
NOTIFY_TIMEOUT = timedelta(seconds=30)
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=10,
)
# Ids of messages, replies and offers remembered to drop duplicates.
REMEMBERED_IDS = 100
OPEN_STATES = (TicketStatus.QUEUED, TicketStatus.OPEN, TicketStatus.PENDING_CUSTOMER)

# workflow.patched ids: behaviour changes that running tickets must replay without.
DISPATCH_OUTSIDE_UPDATES = "dispatch-outside-updates"  # resolve/assign no longer dispatch under the lock
NOTIFY_LATE_MESSAGES = "notify-late-messages"  # a message after the reopen window notifies someone
# A message that cannot reopen the ticket (after the reopen window) owes no answer within the SLA.
NO_CLOCK_AFTER_REOPEN_WINDOW = "no-clock-after-reopen-window"
SHIFT_HANDOFF = "shift-handoff"  # tickets move to the next on-shift engineer before a shift ends
WARNING_THRESHOLDS = "sla-warning-thresholds"  # a warning at each configured share of a target
ROUTING_FALLBACK = "routing-fallback"  # native speakers first, then fluent, then machine translation
ESCALATION_CHAINS = "escalation-chains"  # a breach starts the priority's escalation chain
REGIONAL_QUEUES = "regional-queues"  # notifications and pages run on the ticket region's task queue
LOCALISED_TEAM_CHANGE = "localised-team-change"  # "now with our APAC team" in the customer's language
TRANSLATED_CONVERSATION = "translated-conversation"  # machine translation between customer and agent
KB_SUGGESTIONS = "kb-suggestions"  # articles, duplicates and a module hint from the knowledge base
TICKET_TO_ARTICLE = "ticket-to-article"  # a resolution without an article drafts one
SIGNED_SURVEYS = "signed-surveys"  # the survey goes out as a signed single-use link
CSAT_FOLLOW_UP = "csat-follow-up"  # low scores open a recovery task, praise reaches the engineers
# Deliveries without a regional worker go to the central worker's delivery queue, not to the queue
# of ticket lifecycles. Not in ALL_PATCHES: asked only where a delivery leaves the regional queues
# (a ticket without a region, or no regional worker in time), so most tickets record no marker.
DELIVERY_QUEUE = "delivery-queue"
# Every patch above in one marker. Each patched() call records a marker and upserts the
# TemporalChangeVersion search attribute: two history events and a visibility write, 12 of a new
# ticket's first 37 events (docs/performance.md). A ticket started with ALL_PATCHES records only it
# and takes every patch in COVERED_BY_ALL; one started before still asks for each, as it did. A
# patch added later is not covered: it must be asked for on its own (`_patched` does so).
ALL_PATCHES = "all-patches-2026-11"
COVERED_BY_ALL = frozenset(
    {
        DISPATCH_OUTSIDE_UPDATES,
        NOTIFY_LATE_MESSAGES,
        NO_CLOCK_AFTER_REOPEN_WINDOW,
        SHIFT_HANDOFF,
        WARNING_THRESHOLDS,
        ROUTING_FALLBACK,
        ESCALATION_CHAINS,
        REGIONAL_QUEUES,
        LOCALISED_TEAM_CHANGE,
        TRANSLATED_CONVERSATION,
        KB_SUGGESTIONS,
        TICKET_TO_ARTICLE,
        SIGNED_SURVEYS,
        CSAT_FOLLOW_UP,
    }
)
PAGE_SEVERITY = {"P1": "critical", "P2": "error", "P3": "warning", "P4": "warning"}
LAST_MESSAGE_CHARS = 500
# What SREs count on /metrics: escalations, breaches, acknowledgements, handoffs, surveys.
COUNTED_EVENTS = frozenset(
    {
        "triaged",
        "queued",
        "assigned",
        "resolved",
        "reopened",
        "closed",
        "sla_warning",
        "sla_breached",
        "handed_off",
        "handoff_acknowledged",
        "handoff_unacknowledged",
        "csat_sent",
        "csat_received",
        "csat_expired",
        "csat_reminder",
        "qa_review_flagged",
        "escalated",
        "escalation_acknowledged",
        "escalation_resolved",
        "suggested_articles",
        "possible_duplicates",
        "message_translated",
        "notification_failed",
        "routing_widened",
    }
)
# Ask for more business-calendar windows when fewer than this remain ahead.
CALENDAR_REFRESH_MARGIN = timedelta(days=7)


def _about(translated: TranslationResult) -> dict[str, Any]:
    """What the timeline says of a translation, beside the translated text."""
    return {
        "source": translated.source,
        "target": translated.target,
        "provider": translated.provider,
        "machine_translated": translated.machine_translated,
        "note": translated.note,
    }


@workflow.defn(name="TicketWorkflow")
class TicketWorkflow:
    @workflow.init
    def __init__(self, input: TicketInput) -> None:
        self.lifecycle = input.lifecycle
        self.s = input.state or TicketState(
            ticket_id=input.ticket_id,
            customer_id=input.customer_id,
            subject=input.subject,
            channel=input.channel,
            created_at=input.created_at,
            declared_priority=input.declared_priority,
            next_seq=2,  # the API wrote event 1 ('created') with the ticket row
        )
        self.lock = asyncio.Lock()
        self.dirty = input.state is None
        self.offers: list[AssignmentOffer] = []
        # Notification deliveries and queue dispatches: awaited before the run ends, never under the lock.
        self.background: set[asyncio.Task[None]] = set()
        self.published: dict[str, str | None] = {}
        self.handoffs = False  # set in run(): histories from before handoffs replay without them
        self.warning_ratios = [self.lifecycle.sla_warning_ratio]  # several thresholds: set in run()
        self.fallback = False  # likewise for the native -> fluent -> machine translation fallback
        self.escalations = False  # and for escalation chains
        self.regional = False  # and for region-facing activities on regional task queues
        self.all_patches: bool | None = None  # whether this run recorded ALL_PATCHES; asked once
        # Replay-safe: the Runtime's Prometheus exporter serves it on the worker's /metrics.
        self.event_counter = workflow.metric_meter().create_counter(
            "meridian_ticket_events", "Timeline events of tickets by kind, region and priority"
        )

    # --- the main loop --------------------------------------------------------------------

    @workflow.run
    async def run(self, input: TicketInput) -> TicketOutcome:
        self.handoffs = self._patched(SHIFT_HANDOFF)
        if self._patched(WARNING_THRESHOLDS):
            self.warning_ratios = sorted(self.lifecycle.sla_warning_ratios)
        self.fallback = self._patched(ROUTING_FALLBACK)
        self.escalations = self._patched(ESCALATION_CHAINS)
        self.regional = self._patched(REGIONAL_QUEUES)
        if input.state is None:
            async with self.lock:
                await self._triage(input.body)
                if self._patched(KB_SUGGESTIONS):
                    await self._consult_knowledge_base(input.body)
                await self._assign(preferred=None)
        while True:
            async with self.lock:
                await self._refresh_sla_calendar()
                self._process_due()
                await self._process_offers()
                await self._widen_routing()
                await self._process_escalation()
                await self._process_handoff()
                await self._flush()
            if self.s.status is TicketStatus.CLOSED:
                break
            if workflow.info().is_continue_as_new_suggested():
                await self._quiesce()
                workflow.continue_as_new(
                    TicketInput(
                        ticket_id=self.s.ticket_id,
                        customer_id=self.s.customer_id,
                        subject=self.s.subject,
                        body="",
                        channel=self.s.channel,
                        created_at=self.s.created_at,
                        lifecycle=self.lifecycle,
                        state=self.s,
                    )
                )
            await self._sleep_until_due()
        await self._quiesce()
        return TicketOutcome(ticket_id=self.s.ticket_id, status=self.s.status, csat_score=self.s.survey.score)

    async def _quiesce(self) -> None:
        """Settle everything before closing or continuing as new: handlers, background activities,
        assignment offers and unwritten events. A signal can arrive while we flush, so repeat until
        a pass finds nothing left; nothing yields between the last check and the caller's exit."""
        while True:
            await workflow.wait_condition(lambda: workflow.all_handlers_finished() and not self.background)
            async with self.lock:
                await self._process_offers()
                await self._flush()
            settled = not (self.offers or self.background or self.dirty or self.s.pending_events)
            if settled and workflow.all_handlers_finished():
                return

    async def _sleep_until_due(self) -> None:
        due = self._next_due()
        woken = lambda: self.dirty or bool(self.offers) or bool(self.s.pending_events)  # noqa: E731
        if due is None:
            await workflow.wait_condition(woken)
            return
        delay = due - workflow.now()
        if delay <= timedelta(0):
            return
        try:
            await workflow.wait_condition(woken, timeout=delay)
        except TimeoutError:
            pass

    def _next_due(self) -> datetime | None:
        candidates: list[datetime] = []
        cal = self.s.sla_calendar
        for clock in self.s.clocks.values():
            if clock.is_running and not clock.is_stopped:
                candidates.append(clock.next_warning_at(self.warning_ratios, cal))
                if not clock.breach_sent:
                    candidates.append(clock.due_at(cal))
        if cal is not None and any(c.is_running for c in self.s.clocks.values()):
            candidates.append(cal.end - CALENDAR_REFRESH_MARGIN)
        candidates = [c for c in candidates if c is not None]
        if self.s.status is TicketStatus.RESOLVED and self.s.resolved_at is not None:
            candidates.extend(self._survey_deadlines())
        if self.handoffs:
            candidates.extend(self._handoff_deadlines())
        if (widening := self._widening_due()) is not None:
            candidates.append(widening)
        if self.escalations and self.s.escalation is not None and self.s.status in OPEN_STATES:
            if (escalation_due := self.s.escalation.next_due()) is not None:
                candidates.append(escalation_due)
        return min(candidates) if candidates else None

    # --- SLA clocks beyond first response and resolution --------------------------------

    def _awaiting_answer(self, now: datetime) -> None:
        """A customer wrote after our first response: the next-response clock starts afresh."""
        s = self.s
        budget = s.policies[s.priority].next_response if s.priority in s.policies else None
        first = s.clocks.get(SlaTarget.FIRST_RESPONSE)
        if budget is None or first is None or not first.is_stopped:
            return
        clock = s.clocks.get(SlaTarget.NEXT_RESPONSE)
        if clock is None:
            s.clocks[SlaTarget.NEXT_RESPONSE] = SlaClock.start(SlaTarget.NEXT_RESPONSE, budget, now)
        elif clock.is_stopped:
            clock.budget = budget
            clock.reset(now)

    def _answered(self, now: datetime) -> None:
        """A public reply answers the customer's last message and starts a new update period."""
        s = self.s
        waiting = s.clocks.get(SlaTarget.NEXT_RESPONSE)
        if waiting is not None and not waiting.is_stopped:
            waiting.stop(now, s.sla_calendar)
        budget = s.policies[s.priority].periodic_update if s.priority in s.policies else None
        if budget is None:
            return
        period = s.clocks.get(SlaTarget.PERIODIC_UPDATE)
        if period is None:
            s.clocks[SlaTarget.PERIODIC_UPDATE] = SlaClock.start(SlaTarget.PERIODIC_UPDATE, budget, now)
        else:
            period.budget = budget
            period.reset(now)
            if s.status is TicketStatus.PENDING_CUSTOMER:
                period.pause(now, s.sla_calendar)

    @workflow.signal(name="sla_rules_changed")
    async def sla_rules_changed(self) -> None:
        """Policies, the customer's tier or their contract calendar changed: recompute the clocks."""
        async with self.lock:
            s, now = self.s, workflow.now()
            if s.status not in OPEN_STATES or s.priority is None:
                return
            running = [c.running_since for c in s.clocks.values() if c.running_since is not None]
            rules = await workflow.execute_activity_method(
                CalendarActivities.current_sla_rules,
                SlaRulesRequest(customer_id=s.customer_id, start=min([now, *running]), now=now),
                start_to_close_timeout=DB_TIMEOUT,
            )
            if rules is None or s.priority not in rules.policies:
                return
            for clock in s.clocks.values():
                if not clock.is_stopped:
                    clock.pause(now, s.sla_calendar)  # what was used so far, counted the old way
            s.policies, s.sla_calendar = rules.policies, rules.calendar
            for target, clock in s.clocks.items():
                budget = s.policies[s.priority].budget(target)
                if clock.is_stopped or budget is None:
                    continue
                clock.retarget(budget, now, self.warning_ratios, s.sla_calendar)
                if s.status is not TicketStatus.PENDING_CUSTOMER or target in (
                    SlaTarget.FIRST_RESPONSE,
                    SlaTarget.NEXT_RESPONSE,
                ):
                    clock.resume(now)
            self._event(
                "sla_recomputed",
                Actor.system(s.region),
                internal=True,
                data={
                    "calendar_id": rules.calendar.calendar_id if rules.calendar else None,
                    "due": {
                        t.value: d.isoformat() if (d := c.due_at(s.sla_calendar)) else None
                        for t, c in s.clocks.items()
                    },
                },
            )

    async def _refresh_sla_calendar(self) -> None:
        """Fetch the next stretch of business-calendar windows before the current ones run out."""
        s, now = self.s, workflow.now()
        cal = s.sla_calendar
        if cal is None or now < cal.end - CALENDAR_REFRESH_MARGIN:
            return
        running = [c.running_since for c in s.clocks.values() if c.running_since is not None]
        fresh = await workflow.execute_activity_method(
            CalendarActivities.sla_calendar,
            CalendarWindowsRequest(calendar_id=cal.calendar_id, start=min([now, *running]), now=now),
            start_to_close_timeout=DB_TIMEOUT,
        )
        s.sla_calendar = fresh
        self.dirty = True

    # --- escalation chains ----------------------------------------------------------------

    def _start_escalation(self, trigger: str) -> None:
        s = self.s
        policy = s.escalation_policies.get(s.priority) if s.priority else None
        if not self.escalations or policy is None:
            return
        if s.escalation is not None and s.escalation.acknowledged_at is None:
            return  # one chain at a time: people are already being paged for this ticket
        s.escalation = Escalation(policy=policy, trigger=trigger, started_at=workflow.now())
        self.dirty = True

    async def _process_escalation(self) -> None:
        s, now = self.s, workflow.now()
        chain = s.escalation
        if not self.escalations or chain is None or s.status not in OPEN_STATES:
            return
        breached = s.clocks.get(SlaTarget(chain.trigger))
        if chain.acknowledged_at is None and breached is not None and breached.is_stopped:
            # The late answer came: nobody needs paging about this breach any more.
            chain.acknowledged_at, chain.acknowledged_by = now, "meridian"
            self._event(
                "escalation_resolved",
                Actor.system(s.region),
                internal=True,
                data={
                    "trigger": chain.trigger,
                    "level_reached": chain.fired,
                },
            )
            self._close_pagerduty_incident(PageAction.RESOLVE)
            return
        schedule = chain.policy.schedule(chain.started_at)
        while (due := chain.next_due()) is not None and now >= due:
            level_index = schedule[chain.fired][0]
            chain.fired += 1
            level = chain.policy.levels[level_index]
            people = await workflow.execute_activity_method(
                EscalationActivities.escalation_recipients,
                RecipientsRequest(
                    region=s.region,
                    assignee_id=s.assignee.id if s.assignee else None,
                    targets=level.targets,
                    at=now,
                ),
                start_to_close_timeout=DB_TIMEOUT,
            )
            awake = [p for p in people if not chain.policy.quiet_for(s.priority, p.local_time)]
            summary = (
                f"{s.priority.value} ticket {s.ticket_id} breached {chain.trigger} "
                f"({s.region or 'no region'}): {s.subject}"
            )
            for channel in level.channels:
                if channel in (PageChannel.SLACK, PageChannel.PAGERDUTY):
                    # Channel-wide: once per level, and not at all when everyone it reaches sleeps.
                    if awake or not people:
                        self._page(channel, None, summary, level_index)
                        chain.paged_pagerduty |= channel is PageChannel.PAGERDUTY
                    continue
                for person in awake:
                    self._page(channel, person, summary, level_index)
            self._event(
                "escalated",
                Actor.system(s.region),
                internal=True,
                data={
                    "level": level_index + 1,
                    "trigger": chain.trigger,
                    "targets": [t.value for t in level.targets],
                    "channels": [c.value for c in level.channels],
                    "paged": [p.agent_id for p in awake],
                    "quiet_hours": [p.agent_id for p in people if p not in awake],
                },
            )

    def _page(
        self,
        channel: PageChannel,
        person: Recipient | None,
        summary: str,
        level_index: int,
        action: PageAction = PageAction.TRIGGER,
    ) -> None:
        s = self.s
        page = Page(
            id=str(workflow.uuid4()),
            ticket_id=s.ticket_id,
            channel=channel,
            action=action,
            recipient_id=person.agent_id if person else None,
            recipient_email=person.email if person else None,
            summary=summary,
            severity=PAGE_SEVERITY.get(s.priority.value if s.priority else "P4", "warning"),
            at=workflow.now(),
            details={"level": level_index + 1, "region": s.region, "priority": s.priority},
        )
        self._in_background(
            self._deliver(ChannelActivities.send_page, page, page.id, f"page:{page.channel.value}")
        )

    def _close_pagerduty_incident(self, action: PageAction) -> None:
        chain = self.s.escalation
        if self.escalations and chain is not None and chain.paged_pagerduty:
            self._page(PageChannel.PAGERDUTY, None, f"ticket {self.s.ticket_id}: {action.value}", 0, action)
            chain.paged_pagerduty = action is not PageAction.RESOLVE

    @workflow.update(name="acknowledge_escalation")
    async def acknowledge_escalation(self, ack: EscalationAck) -> Escalation:
        async with self.lock:
            self._check_escalation_ack()
            chain = self.s.escalation
            chain.acknowledged_at, chain.acknowledged_by = workflow.now(), ack.actor.id
            self._event(
                "escalation_acknowledged",
                ack.actor,
                internal=True,
                data={
                    "level_reached": chain.fired,
                    "note": ack.note,
                },
            )
            self._close_pagerduty_incident(PageAction.ACKNOWLEDGE)
            await self._flush()
            return chain

    @acknowledge_escalation.validator
    def _validate_escalation_ack(self, ack: EscalationAck) -> None:
        self._check_escalation_ack()

    def _check_escalation_ack(self) -> None:
        chain = self.s.escalation
        if chain is None or chain.acknowledged_at is not None:
            raise refuse(INVALID_STATE, "no escalation is waiting for acknowledgement")

    # --- shift-end handoff ----------------------------------------------------------------

    def _handoff_deadlines(self) -> list[datetime]:
        deadlines = []
        s = self.s
        if s.handoff is not None and s.handoff.acknowledged_at is None and not s.handoff.escalated:
            deadlines.append(s.handoff.ack_deadline)
        if self._moves_at_shift_end() and s.assignee.shift_ends_at is not None:
            deadlines.append(s.assignee.shift_ends_at - self.lifecycle.handoff_lead)
        return deadlines

    def _moves_at_shift_end(self) -> bool:
        s = self.s
        if s.assignee is None:
            return False
        return s.status is TicketStatus.OPEN or (
            s.status is TicketStatus.PENDING_CUSTOMER and self.lifecycle.pending_customer_handoff == "move"
        )

    async def _process_handoff(self) -> None:
        if not self.handoffs:
            return
        s, now = self.s, workflow.now()
        pending = s.handoff
        if (
            pending
            and pending.acknowledged_at is None
            and not pending.escalated
            and now >= pending.ack_deadline
        ):
            pending.escalated = True
            data = {"to_agent_id": pending.to_agent_id, "since": pending.at.isoformat()}
            self._event("handoff_unacknowledged", Actor.system(s.region), internal=True, data=data)
            self._notify("handoff_unacknowledged", "region", s.region, data)
        if not self._moves_at_shift_end() or s.assignee.shift_ends_at is None:
            return
        if now >= s.assignee.shift_ends_at - self.lifecycle.handoff_lead:
            await self._hand_off(f"shift of {s.assignee.name} ends at {s.assignee.shift_ends_at.isoformat()}")

    async def _hand_off(self, reason: str) -> None:
        s, now = self.s, workflow.now()
        leaving = s.assignee
        outcome = await workflow.execute_activity_method(
            AssignmentActivities.hand_off,
            HandoffRequest(
                **self._routing_fields(),
                from_agent_id=leaving.id,
                at=now,
                lead=self.lifecycle.handoff_lead,
                # A handoff does not wait for a native speaker; a ticket already on machine
                # translation may go to any skilled agent again.
                match=LanguageMatch.ANY if s.language_match is LanguageMatch.ANY else LanguageMatch.FLUENT,
            ),
            start_to_close_timeout=DB_TIMEOUT,
        )
        receiver = outcome.claim.agent
        note = s.handoff_note
        handoff_note = {
            "from_agent_id": leaving.id,
            "from_region": leaving.region,
            "to_agent_id": receiver.id if receiver else None,
            "to_region": receiver.region if receiver else None,
            "reason": reason,
            "routing": outcome.claim.reason,
            "status": s.status.value,
            "what_was_tried": note.what_was_tried if note else None,
            "last_customer_message": s.last_customer_message,
            "next_action": note.next_action if note else None,
            "promised_update": note.promised_update if note else None,
            "sla_due": {
                target.value: due.isoformat() if (due := clock.due_at(s.sla_calendar)) else None
                for target, clock in s.clocks.items()
            },
        }
        self._event("handed_off", Actor.system(leaving.region), internal=True, data=handoff_note)
        s.handoff_note = None
        if receiver is None:
            s.assignee, s.handoff, s.status, s.queued_since = None, None, TicketStatus.QUEUED, now
            if s.language_match is LanguageMatch.NATIVE:
                s.language_match = LanguageMatch.FLUENT  # the queue row says so too
            self._notify("coverage_gap", "region", s.home_region or leaving.region, handoff_note)
            return
        s.assignee, s.region = receiver, receiver.region
        s.machine_translation = outcome.claim.machine_translation
        s.handoff = Handoff(
            from_agent_id=leaving.id,
            to_agent_id=receiver.id,
            at=now,
            ack_deadline=now + self.lifecycle.handoff_ack_timeout,
        )
        team = outcome.region_name or receiver.region
        if self._patched(LOCALISED_TEAM_CHANGE):
            message, language = say(Phrase.TEAM_CHANGED, s.language, team=team)
        else:
            message, language = f"Your ticket is now with our {team} team.", "en"
        self._event(
            "team_changed",
            Actor.system(receiver.region),
            data={"region": receiver.region, "message": message, "language": language},
        )
        self._notify("handoff", "agent", receiver.id, handoff_note)

    @workflow.signal(name="roster_changed")
    async def roster_changed(self) -> None:
        """The assignee's shift or overrides changed: re-read when their shift ends."""
        async with self.lock:
            if self.s.assignee is None or self.s.status not in OPEN_STATES:
                return
            current = await workflow.execute_activity_method(
                AssignmentActivities.current_shift,
                ShiftEndRequest(agent_id=self.s.assignee.id, at=workflow.now()),
                start_to_close_timeout=DB_TIMEOUT,
            )
            if current is not None and self.s.assignee is not None and current.id == self.s.assignee.id:
                self.s.assignee = current
                self.dirty = True

    @workflow.update(name="write_handoff_note")
    async def write_handoff_note(self, request: HandoffNoteInput) -> int:
        async with self.lock:
            self._check_owner(request.agent)
            self.s.handoff_note = request.note
            seq = self._event("handoff_note", request.actor, internal=True, data=request.note.model_dump())
            await self._flush()
            return seq

    @write_handoff_note.validator
    def _validate_handoff_note(self, request: HandoffNoteInput) -> None:
        self._check_owner(request.agent)

    def _check_owner(self, agent: AgentRef) -> None:
        if self.s.status not in OPEN_STATES:
            raise refuse(INVALID_STATE, f"a {self.s.status.value} ticket takes no handoff note")
        if self.s.assignee is None or self.s.assignee.id != agent.id:
            raise refuse(NOT_ASSIGNEE, "only the assignee writes the handoff note")

    @workflow.update(name="acknowledge_handoff")
    async def acknowledge_handoff(self, ack: HandoffAck) -> Handoff:
        async with self.lock:
            self._check_ack(ack)
            handoff = self.s.handoff
            handoff.acknowledged_at = workflow.now()
            self._event("handoff_acknowledged", ack.actor, internal=True, data={"agent_id": ack.agent.id})
            await self._flush()
            return handoff

    @acknowledge_handoff.validator
    def _validate_ack(self, ack: HandoffAck) -> None:
        self._check_ack(ack)

    def _check_ack(self, ack: HandoffAck) -> None:
        handoff = self.s.handoff
        if handoff is None or handoff.acknowledged_at is not None:
            raise refuse(INVALID_STATE, "there is no handoff waiting for acknowledgement")
        if handoff.to_agent_id != ack.agent.id:
            raise refuse(NOT_ASSIGNEE, f"the handoff was made to {handoff.to_agent_id}")

    def _survey_deadlines(self) -> list[datetime]:
        survey, policy, resolved_at = self.s.survey, self.lifecycle, self.s.resolved_at
        if survey.finished:
            return [resolved_at + policy.reopen_window]
        if survey.sent_at is None:
            return [resolved_at + policy.csat_delay]
        deadlines = [survey.sent_at + policy.csat_expires_after]
        if survey.reminded_at is None:
            deadlines.append(survey.sent_at + policy.csat_reminder_after)
        return deadlines

    def _process_due(self) -> None:
        now = workflow.now()
        cal = self.s.sla_calendar
        for clock in self.s.clocks.values():
            if not clock.is_running or clock.is_stopped:
                continue
            due_at = clock.due_at(cal)
            while (
                warning_at := clock.next_warning_at(self.warning_ratios, cal)
            ) is not None and now >= warning_at:
                clock.warnings_sent += 1
                clock.warning_sent = True
                self._sla_event("sla_warning", clock)
            if not clock.breach_sent and due_at is not None and now >= due_at:
                clock.breach_sent = True
                self._sla_event("sla_breached", clock)
        if self.s.status is TicketStatus.RESOLVED:
            self._process_survey(now)

    def _process_survey(self, now: datetime) -> None:
        survey, policy, resolved_at = self.s.survey, self.lifecycle, self.s.resolved_at
        if survey.sent_at is None and not survey.finished and now >= resolved_at + policy.csat_delay:
            survey.sent_at = now
            self._event("csat_sent", Actor.system(self.s.region))
            if self._patched(SIGNED_SURVEYS):
                survey.survey_id = str(workflow.uuid4())
                self._send_survey(reminder=False)
            else:
                self._notify("csat_survey", "customer", self.s.customer_id, {"subject": self.s.subject})
        elif survey.sent_at is not None and not survey.finished:
            if now >= survey.sent_at + policy.csat_expires_after:
                survey.expired_at = now
                self._event("csat_expired", Actor.system(self.s.region), internal=True)
            elif survey.reminded_at is None and now >= survey.sent_at + policy.csat_reminder_after:
                survey.reminded_at = now
                self._event("csat_reminder", Actor.system(self.s.region), internal=True)
                if survey.survey_id is not None:
                    self._send_survey(reminder=True)
                else:
                    self._notify("csat_reminder", "customer", self.s.customer_id, {"subject": self.s.subject})
        if survey.finished and now >= resolved_at + policy.reopen_window:
            self.s.status = TicketStatus.CLOSED
            self.s.closed_at = now
            self._event("closed", Actor.system(self.s.region))

    # --- stages ---------------------------------------------------------------------------

    async def _triage(self, body: str) -> None:
        result = await workflow.execute_activity_method(
            TriageActivities.triage_ticket,
            TriageRequest(
                ticket_id=self.s.ticket_id,
                customer_id=self.s.customer_id,
                subject=self.s.subject,
                body=body,
                declared_priority=self.s.declared_priority,
                created_at=self.s.created_at,
            ),
            start_to_close_timeout=TRIAGE_TIMEOUT,
        )
        s = self.s
        s.language, s.language_confidence = result.language, result.language_confidence
        s.module, s.priority = result.module, result.priority
        s.customer_tier, s.home_region, s.region = (
            result.customer_tier,
            result.home_region,
            result.home_region,
        )
        s.policies = result.policies
        s.escalation_policies = result.escalation_policies
        targets = s.policies[s.priority]
        s.sla_calendar = result.sla_calendar
        s.clocks = {
            t: SlaClock.start(t, targets.budget(t), s.created_at)
            for t in (SlaTarget.FIRST_RESPONSE, SlaTarget.RESOLUTION)
        }
        self._event(
            "triaged",
            Actor.system(s.region),
            internal=True,
            data={
                "language": s.language,
                "language_confidence": s.language_confidence,
                "language_uncertain": result.language_uncertain,
                "language_method": result.language_method,
                "module": s.module,
                "module_keywords": result.module_keywords,
                "priority": s.priority.value,
                "priority_reasons": result.priority_reasons,
                "customer_tier": result.customer_tier.value,
            },
        )

    async def _assign(self, preferred: str | None) -> None:
        s = self.s
        now = workflow.now()
        fallback = {}
        if self.fallback:
            s.language_match = LanguageMatch.NATIVE if self.lifecycle.native_wait else LanguageMatch.FLUENT
            fallback = {"match": s.language_match, "customer_id": s.customer_id}
        if self.handoffs:
            fallback["min_shift_left"] = self.lifecycle.handoff_lead
        outcome = await workflow.execute_activity_method(
            AssignmentActivities.claim_best_agent,
            ClaimBestRequest(
                **self._routing_fields(),
                at=now,
                queued_since=now,
                preferred_agent_id=preferred,
                **fallback,
            ),
            start_to_close_timeout=DB_TIMEOUT,
        )
        if outcome.agent is not None:
            self._take(outcome.agent, outcome.reason, Actor.system(s.region), outcome.machine_translation)
        else:
            s.status, s.queued_since = TicketStatus.QUEUED, now
            self._event("queued", Actor.system(s.region), internal=True, data={"reason": outcome.reason})

    def _widening_due(self) -> datetime | None:
        s, policy = self.s, self.lifecycle
        if not self.fallback or s.status is not TicketStatus.QUEUED or s.queued_since is None:
            return None
        if s.language_match is LanguageMatch.NATIVE:
            return s.queued_since + policy.native_wait
        if s.language_match is LanguageMatch.FLUENT:
            return s.queued_since + policy.native_wait + policy.fluent_wait
        return None

    async def _widen_routing(self) -> None:
        """Nobody matched while the ticket waited: accept fluent speakers, then machine translation."""
        due = self._widening_due()
        if due is None or workflow.now() < due:
            return
        s = self.s
        s.language_match = s.language_match.widened()
        self._event(
            "routing_widened", Actor.system(s.region), internal=True, data={"match": s.language_match.value}
        )
        outcome = await workflow.execute_activity_method(
            AssignmentActivities.claim_best_agent,
            ClaimBestRequest(
                **self._routing_fields(),
                at=workflow.now(),
                queued_since=s.queued_since,
                match=s.language_match,
                customer_id=s.customer_id,
                min_shift_left=self.lifecycle.handoff_lead if self.handoffs else timedelta(0),
            ),
            start_to_close_timeout=DB_TIMEOUT,
        )
        if outcome.agent is not None:
            self._take(outcome.agent, outcome.reason, Actor.system(s.region), outcome.machine_translation)

    def _routing_fields(self) -> dict[str, Any]:
        """What every claim for this ticket needs to know about it."""
        s = self.s
        return {
            "ticket_id": s.ticket_id,
            "language": s.language,
            "module": s.module,
            "priority": s.priority,
            "home_region": s.home_region,
        }

    async def _translate(self, text: str, source: str | None, target: str) -> TranslationResult:
        """A translation, or the original with the reason it is not one: nothing is ever lost."""
        try:
            return await workflow.execute_activity_method(
                TranslationActivities.translate_text,
                TranslationRequest(text=text, source=source, target=target),
                start_to_close_timeout=TRANSLATION_TIMEOUT,
                retry_policy=TRANSLATION_RETRY,
            )
        except ActivityError as err:
            reason = err.cause.message if err.cause is not None else str(err)
            return TranslationResult(
                text=text,
                source=source,
                target=target,
                provider="unavailable",
                machine_translated=False,
                note=f"translation failed: {reason}",
            )

    async def _translate_for_agent(self, message: CustomerMessage) -> None:
        s = self.s
        assert s.assignee is not None
        target = s.assignee.languages[0] if s.assignee.languages else "en"
        translated = await self._translate(message.body, s.language, target)
        self._event(
            "message_translated",
            Actor.system(s.region),
            internal=True,
            data={
                "message_id": message.message_id,
                "body": translated.text,
                "translation": _about(translated),
            },
        )

    def _take(self, agent: AgentRef, reason: str, actor: Actor, machine_translation: bool = False) -> None:
        s = self.s
        previous = s.assignee
        s.machine_translation = machine_translation
        s.assignee, s.region, s.queued_since, s.handoff = agent, agent.region, None, None
        if s.status in (TicketStatus.NEW, TicketStatus.QUEUED):
            s.status = TicketStatus.OPEN
        self._event(
            "assigned",
            actor,
            internal=True,
            data={
                "agent_id": agent.id,
                "agent_name": agent.name,
                "agent_region": agent.region,
                "reason": reason,
                "previous_agent_id": previous.id if previous else None,
                "machine_translation": machine_translation,
            },
        )
        self._notify("ticket_assigned", "agent", agent.id, {"subject": s.subject, "priority": s.priority})

    async def _process_offers(self) -> None:
        while self.offers:
            offer = self.offers.pop(0)
            if self._seen(offer.offer_id):
                continue
            if self.s.assignee is not None and self.s.assignee.id == offer.agent.id:
                continue
            if self.s.status is TicketStatus.QUEUED:
                self._take(
                    offer.agent,
                    f"capacity freed: {offer.agent.region}/{offer.agent.name}",
                    Actor.system(offer.agent.region),
                    offer.machine_translation,
                )
            else:
                await workflow.execute_activity_method(
                    AssignmentActivities.decline_offer, offer, start_to_close_timeout=DB_TIMEOUT
                )

    async def _open_again(self, actor: Actor, reason: str | None) -> None:
        s, now = self.s, workflow.now()
        previous = s.assignee.id if s.assignee else None
        s.reopen_count += 1
        s.status, s.assignee, s.resolved_at, s.survey = TicketStatus.QUEUED, None, None, Survey()
        s.clocks[SlaTarget.RESOLUTION].restart(now)
        self._event("reopened", actor, data={"reason": reason, "reopen_count": s.reopen_count})
        await self._assign(preferred=previous)

    # --- handlers -------------------------------------------------------------------------

    @workflow.signal(name="customer_message")
    async def customer_message(self, message: CustomerMessage) -> None:
        async with self.lock:
            if self._seen(message.message_id):
                return
            s, now = self.s, workflow.now()
            s.last_customer_message = message.body[:LAST_MESSAGE_CHARS]
            stays_resolved = s.status is TicketStatus.CLOSED or (
                s.status is TicketStatus.RESOLVED and now >= s.resolved_at + self.lifecycle.reopen_window
            )
            if not (stays_resolved and self._patched(NO_CLOCK_AFTER_REOPEN_WINDOW)):
                self._awaiting_answer(now)
            self._event(
                "customer_message",
                message.actor,
                data={
                    "message_id": message.message_id,
                    "body": message.body,
                    "after_close": s.status is TicketStatus.CLOSED,
                },
            )
            if s.status is TicketStatus.RESOLVED and now < s.resolved_at + self.lifecycle.reopen_window:
                await self._open_again(message.actor, "customer wrote again")
            elif s.status is TicketStatus.RESOLVED and self._patched(NOTIFY_LATE_MESSAGES):
                # Too late to reopen, but someone must read it.
                recipient = ("agent", s.assignee.id) if s.assignee else ("region", s.region)
                self._notify("late_customer_message", *recipient, {"message_id": message.message_id})
            elif s.status is TicketStatus.PENDING_CUSTOMER:
                self._set_status(TicketStatus.OPEN, message.actor, "customer replied")
            if s.assignee is not None and s.status in OPEN_STATES:
                if s.machine_translation and self._patched(TRANSLATED_CONVERSATION):
                    await self._translate_for_agent(message)
                self._notify("customer_message", "agent", s.assignee.id, {"message_id": message.message_id})

    @workflow.signal(name=OFFER_SIGNAL)
    def offer_assignment(self, offer: AssignmentOffer) -> None:
        self.offers.append(offer)

    @workflow.update(name="reply")
    async def reply(self, reply: AgentReply) -> ReplyAccepted:
        async with self.lock:
            if reply.reply_id in self.s.recent_replies:  # a retry, maybe into a continued run
                return ReplyAccepted(seq=self.s.recent_replies[reply.reply_id], first_response=False)
            self._check_reply(reply)
            s = self.s
            data: dict[str, Any] = {
                "reply_id": reply.reply_id,
                "body": reply.body,
                "agent_id": reply.agent.id,
                "agent_name": reply.agent.name,
            }
            if not reply.internal and s.machine_translation and self._patched(TRANSLATED_CONVERSATION):
                # The customer reads their language; the agent's own words stay on the event.
                translated = await self._translate(reply.body, None, s.language or "en")
                data |= {
                    "body": translated.text,
                    "original_body": reply.body,
                    "translation": _about(translated),
                }
            now = workflow.now()
            seq = self._event(
                "internal_note" if reply.internal else "agent_reply",
                reply.actor,
                internal=reply.internal,
                data=data,
            )
            first = False
            if not reply.internal:
                self._answered(now)
            clock = s.clocks.get(SlaTarget.FIRST_RESPONSE)
            if not reply.internal and clock is not None and not clock.is_stopped:
                clock.stop(now, s.sla_calendar)
                s.first_response_at, first = now, True
            kept = list(s.recent_replies.items())[-(REMEMBERED_IDS - 1) :]
            s.recent_replies = {**dict(kept), reply.reply_id: seq}
            await self._flush()
            return ReplyAccepted(seq=seq, first_response=first)

    @reply.validator
    def _validate_reply(self, reply: AgentReply) -> None:
        self._check_reply(reply)

    def _check_reply(self, reply: AgentReply) -> None:
        s = self.s
        if reply.reply_id in s.recent_replies:
            return
        if s.status is TicketStatus.CLOSED:
            raise refuse(INVALID_STATE, "the ticket is closed")
        if reply.internal:
            return
        if s.status is TicketStatus.RESOLVED:
            raise refuse(INVALID_STATE, "the ticket is resolved; reopen it before replying to the customer")
        if s.assignee is None:
            raise refuse(NOT_ASSIGNEE, "the ticket has no assignee yet; assign it before replying")
        if reply.agent.id != s.assignee.id:
            raise refuse(NOT_ASSIGNEE, f"only the assignee ({s.assignee.id}) may reply to the customer")

    @workflow.update(name="set_status")
    async def set_status(self, change: StatusChange) -> TicketStatus:
        async with self.lock:
            self._check_status(change)
            self._set_status(change.status, change.actor, change.reason)
            await self._flush()
            return self.s.status

    @set_status.validator
    def _validate_status(self, change: StatusChange) -> None:
        self._check_status(change)

    def _check_status(self, change: StatusChange) -> None:
        if self.s.status not in (TicketStatus.OPEN, TicketStatus.PENDING_CUSTOMER):
            raise refuse(INVALID_STATE, f"the status of a {self.s.status.value} ticket cannot be set by hand")
        if change.status is self.s.status:
            raise refuse(INVALID_STATE, f"the ticket is already {change.status.value}")

    def _set_status(self, status: TicketStatus, actor: Actor, reason: str | None) -> None:
        s, now = self.s, workflow.now()
        previous, s.status = s.status, status
        # Waiting on the customer stops counting against us; so does the update promise.
        for target in (SlaTarget.RESOLUTION, SlaTarget.PERIODIC_UPDATE):
            clock = s.clocks.get(target)
            if clock is None:
                continue
            if status is TicketStatus.PENDING_CUSTOMER:
                clock.pause(now, s.sla_calendar)
            elif previous is TicketStatus.PENDING_CUSTOMER:
                clock.resume(now)
        self._event(
            "status_changed", actor, data={"from": previous.value, "to": status.value, "reason": reason}
        )

    @workflow.update(name="assign")
    async def assign(self, request: AssignRequest) -> AgentRef:
        async with self.lock:
            self._check_assign(request)
            dispatch_outside = self._patched(DISPATCH_OUTSIDE_UPDATES)
            try:
                agent = await workflow.execute_activity_method(
                    AssignmentActivities.claim_agent,
                    ClaimAgentRequest(
                        ticket_id=self.s.ticket_id,
                        agent_id=request.agent_id,
                        at=workflow.now(),
                        dispatch=not dispatch_outside,
                    ),
                    start_to_close_timeout=DB_TIMEOUT,
                )
            except ActivityError as err:
                raise _refusal_from(err) from None
            if dispatch_outside and self.s.assignee is not None:
                self._dispatch_queue_soon()  # the previous assignee has room now
            needs_translation = False
            if agent.languages and self.s.language and self._patched(TRANSLATED_CONVERSATION):
                needs_translation = self.s.language not in agent.languages
            self._take(agent, request.reason or "assigned by hand", request.actor, needs_translation)
            await self._flush()
            return agent

    @assign.validator
    def _validate_assign(self, request: AssignRequest) -> None:
        self._check_assign(request)

    def _check_assign(self, request: AssignRequest) -> None:
        if self.s.status not in OPEN_STATES:
            raise refuse(INVALID_STATE, f"a {self.s.status.value} ticket cannot be assigned")
        if self.s.assignee is not None and self.s.assignee.id == request.agent_id:
            raise refuse(INVALID_STATE, f"the ticket is already assigned to {request.agent_id}")

    @workflow.update(name="change_priority")
    async def change_priority(self, change: PriorityChange) -> list[SlaView]:
        async with self.lock:
            self._check_priority(change)
            s, now = self.s, workflow.now()
            previous, s.priority = s.priority, change.priority
            for target, clock in s.clocks.items():
                if clock.is_stopped:
                    continue  # a met or breached target keeps the verdict it had
                budget = s.policies[change.priority].budget(target)
                if budget is not None:
                    clock.retarget(budget, now, self.warning_ratios, s.sla_calendar)
            self._event(
                "priority_changed",
                change.actor,
                internal=True,
                data={
                    "from": previous.value,
                    "to": change.priority.value,
                    "reason": change.reason,
                },
            )
            await self._flush()
            return self._sla_views(now)

    @change_priority.validator
    def _validate_priority(self, change: PriorityChange) -> None:
        self._check_priority(change)

    def _check_priority(self, change: PriorityChange) -> None:
        if self.s.status not in OPEN_STATES:
            raise refuse(INVALID_STATE, f"the priority of a {self.s.status.value} ticket cannot change")
        if change.priority is self.s.priority:
            raise refuse(INVALID_INPUT, f"the ticket is already {change.priority.value}")

    @workflow.update(name="resolve")
    async def resolve(self, request: ResolveRequest) -> TicketStatus:
        async with self.lock:
            self._check_resolve()
            s = self.s
            if s.first_response_at is None:
                s.first_response_at = workflow.now()  # the customer is told: resolving answers them too
            data: dict[str, Any] = {"resolution": request.resolution}
            if request.article_id is not None:
                data["article_id"] = request.article_id
            await self._resolved(request.actor, data)
            if (
                request.article_id is None
                and self.lifecycle.draft_articles
                and self._patched(TICKET_TO_ARTICLE)
            ):
                await self._draft_article(request.resolution)
            await self._flush()
            return s.status

    @workflow.update(name="solved_by_article")
    async def solved_by_article(self, request: SelfServiceRequest) -> TicketStatus:
        async with self.lock:
            self._check_self_service(request)
            await self._resolved(request.actor, {"self_service": True, "article_id": request.article_id})
            await self._flush()
            return self.s.status

    @solved_by_article.validator
    def _validate_self_service(self, request: SelfServiceRequest) -> None:
        self._check_self_service(request)

    def _check_self_service(self, request: SelfServiceRequest) -> None:
        self._check_resolve()
        if request.article_id not in self.s.suggested_articles:
            raise refuse(INVALID_INPUT, f"article {request.article_id} was not suggested for this ticket")

    async def _resolved(self, actor: Actor, data: dict[str, Any]) -> None:
        s, now = self.s, workflow.now()
        for clock in s.clocks.values():
            clock.stop(now, s.sla_calendar)
        s.status, s.resolved_at, s.survey = TicketStatus.RESOLVED, now, Survey()
        self._event("resolved", actor, data=data)
        self._close_pagerduty_incident(PageAction.RESOLVE)
        dispatch_outside = self._patched(DISPATCH_OUTSIDE_UPDATES)
        await workflow.execute_activity_method(
            AssignmentActivities.release_agent,
            ReleaseRequest(ticket_id=s.ticket_id, at=now, dispatch=not dispatch_outside),
            start_to_close_timeout=DB_TIMEOUT,
        )
        if dispatch_outside:
            self._dispatch_queue_soon()

    async def _draft_article(self, resolution: str | None) -> None:
        """What the engineer learnt goes to the knowledge base; the draft outlives the ticket."""
        await self._start_follow_up(
            ArticleFromTicketWorkflow.run,
            DraftRequest(ticket_id=self.s.ticket_id, resolution=resolution),
            draft_workflow_id(self.s.ticket_id),
        )

    async def _start_follow_up(self, run: Any, request: Any, workflow_id: str) -> None:
        """A child that outlives the ticket, started once per ticket whatever happens after: a ticket
        resolved, reopened and resolved again keeps its first draft, its first recovery."""
        try:
            await workflow.start_child_workflow(
                run,
                request,
                id=workflow_id,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            )
        except WorkflowAlreadyStartedError:
            pass

    async def _consult_knowledge_base(self, body: str) -> None:
        s = self.s
        try:
            insights = await workflow.execute_activity_method(
                KnowledgeActivities.ticket_insights,
                InsightsRequest(
                    ticket_id=s.ticket_id,
                    customer_id=s.customer_id,
                    subject=s.subject,
                    body=body,
                    language=s.language or "en",
                    module=s.module or GENERAL_MODULE,
                ),
                start_to_close_timeout=KB_TIMEOUT,
                retry_policy=KB_RETRY,
            )
        except ActivityError:
            workflow.logger.exception("knowledge base unavailable; the ticket goes on without it")
            return
        actor = Actor.system(s.region)
        if insights.duplicates:
            self._event(
                "possible_duplicates",
                actor,
                internal=True,
                data={
                    "tickets": [{"ticket_id": t, "similarity": sim} for t, sim in insights.duplicates.items()]
                },
            )
        if insights.module_hint and insights.module_hint != s.module:
            self._event(
                "module_changed",
                actor,
                internal=True,
                data={
                    "from": s.module,
                    "to": insights.module_hint,
                    "reason": "similar knowledge-base articles",
                },
            )
            s.module = insights.module_hint
        if insights.suggestions:
            message, language = say(Phrase.SUGGESTED_ARTICLES, s.language)
            s.suggested_articles = [a.article_id for a in insights.suggestions]
            self._event(
                "suggested_articles",
                actor,
                data={
                    "message": message,
                    "language": language,
                    "articles": [a.model_dump(mode="json") for a in insights.suggestions],
                    "machine_translated_label": say(Phrase.MACHINE_TRANSLATED, s.language)[0],
                },
            )

    @resolve.validator
    def _validate_resolve(self, request: ResolveRequest) -> None:
        self._check_resolve()

    def _check_resolve(self) -> None:
        if self.s.status not in OPEN_STATES:
            raise refuse(INVALID_STATE, f"a {self.s.status.value} ticket cannot be resolved")

    @workflow.update(name="reopen")
    async def reopen_ticket(self, request: ReopenRequest) -> TicketStatus:
        async with self.lock:
            self._check_reopening()
            await self._open_again(request.actor, request.reason)
            await self._flush()
            return self.s.status

    @reopen_ticket.validator
    def _validate_reopening(self, request: ReopenRequest) -> None:
        self._check_reopening()

    def _check_reopening(self) -> None:
        s = self.s
        if s.status is not TicketStatus.RESOLVED:
            raise refuse(
                INVALID_STATE, f"only a resolved ticket can be reopened; this one is {s.status.value}"
            )
        closes = s.resolved_at + self.lifecycle.reopen_window
        if workflow.now() >= closes:
            raise refuse(INVALID_STATE, f"the reopen window closed at {closes.isoformat()}")

    def _send_survey(self, reminder: bool) -> None:
        s = self.s
        assert s.survey.survey_id is not None and s.survey.sent_at is not None
        request = SendSurveyRequest(
            ticket_id=s.ticket_id,
            survey_id=s.survey.survey_id,
            customer_id=s.customer_id,
            language=s.language or "en",
            subject=s.subject,
            expires_at=s.survey.sent_at + self.lifecycle.csat_expires_after,
            at=workflow.now(),
            reminder=reminder,
        )
        self._in_background(
            workflow.execute_activity_method(
                SurveyActivities.send_survey,
                request,
                start_to_close_timeout=NOTIFY_TIMEOUT,
                retry_policy=NOTIFY_RETRY,
            )
        )

    @workflow.update(name="submit_csat")
    async def submit_csat(self, answer: CsatAnswer) -> Survey:
        async with self.lock:
            self._check_csat()
            survey, now = self.s.survey, workflow.now()
            survey.answered_at, survey.score, survey.comment = now, answer.score, answer.comment
            data: dict[str, Any] = {"score": answer.score, "comment": answer.comment}
            if answer.reason or answer.answers:
                data |= {"reason": answer.reason, "answers": answer.answers}
            self._event("csat_received", answer.actor, data=data)
            if self._patched(CSAT_FOLLOW_UP):
                await self._follow_up(answer, now)
            await self._flush()
            return survey

    async def _follow_up(self, answer: CsatAnswer, now: datetime) -> None:
        s = self.s
        if answer.score <= 2:
            self._event(
                "qa_review_flagged", Actor.system(s.region), internal=True, data={"score": answer.score}
            )
            if self.lifecycle.csat_recovery:
                request = RecoveryRequest(
                    ticket_id=s.ticket_id,
                    region=s.region,
                    score=answer.score,
                    comment=answer.comment,
                    due_at=now + self.lifecycle.recovery_deadline,
                    at=now,
                )
                await self._start_follow_up(RecoveryWorkflow.run, request, recovery_workflow_id(s.ticket_id))
        elif answer.score >= 4 and answer.comment:
            self._in_background(
                workflow.execute_activity_method(
                    SurveyActivities.praise_engineers,
                    PraiseRequest(
                        ticket_id=s.ticket_id,
                        region=s.region,
                        score=answer.score,
                        comment=answer.comment,
                        at=now,
                    ),
                    start_to_close_timeout=NOTIFY_TIMEOUT,
                    retry_policy=NOTIFY_RETRY,
                )
            )

    @submit_csat.validator
    def _validate_csat(self, answer: CsatAnswer) -> None:
        self._check_csat()

    def _check_csat(self) -> None:
        s = self.s
        if s.status is not TicketStatus.RESOLVED:
            raise refuse(
                INVALID_STATE, f"satisfaction is asked after resolution; this ticket is {s.status.value}"
            )
        if s.survey.answered_at is not None:
            raise refuse(INVALID_STATE, "the survey was already answered")
        if s.survey.expired_at is not None:
            raise refuse(INVALID_STATE, "the survey has expired")

    @workflow.query(name="state")
    def state(self) -> TicketState:
        return self.s

    # --- bookkeeping ----------------------------------------------------------------------

    def _patched(self, patch_id: str) -> bool:
        """`workflow.patched`, with every patch of COVERED_BY_ALL behind the one ALL_PATCHES marker.

        The first call (at the start of `run`) decides: replaying a ticket started before
        ALL_PATCHES finds no such marker and asks for each patch as before; a new ticket records
        the marker once and skips the others' markers."""
        if patch_id not in COVERED_BY_ALL:
            return workflow.patched(patch_id)
        if self.all_patches is None:
            self.all_patches = workflow.patched(ALL_PATCHES)
        return self.all_patches or workflow.patched(patch_id)

    def _seen(self, key: str) -> bool:
        if key in self.s.recent_message_ids:
            return True
        self.s.recent_message_ids = [*self.s.recent_message_ids[-(REMEMBERED_IDS - 1) :], key]
        return False

    def _event(
        self, kind: str, actor: Actor, *, internal: bool = False, data: dict[str, Any] | None = None
    ) -> int:
        seq = self.s.next_seq
        self.s.next_seq += 1
        self.s.pending_events.append(
            TimelineEvent(
                seq=seq,
                at=workflow.now(),
                kind=kind,
                actor=actor,
                region=actor.region or self.s.region,
                internal=internal,
                data=data or {},
            )
        )
        self.dirty = True
        if kind in COUNTED_EVENTS:
            self.event_counter.add(
                1,
                {
                    "kind": kind,
                    "region": self.s.region or "none",
                    "priority": self.s.priority.value if self.s.priority else "none",
                },
            )
        workflow.logger.info(
            "timeline event",
            extra={"ticket_id": self.s.ticket_id, "seq": seq, "kind": kind, "internal": internal},
        )
        return seq

    def _sla_event(self, kind: str, clock: SlaClock) -> None:
        s = self.s
        data = {
            "target": clock.target.value,
            "due_at": due.isoformat() if (due := clock.due_at(s.sla_calendar)) else None,
            "priority": s.priority.value,
        }
        if kind == "sla_warning":
            data["threshold_percent"] = round(self.warning_ratios[clock.warnings_sent - 1] * 100)
        self._event(kind, Actor.system(s.region), internal=True, data=data)
        recipient = ("agent", s.assignee.id) if s.assignee else ("region", s.region)
        self._notify(kind, recipient[0], recipient[1], data)
        if kind == "sla_breached":
            self._start_escalation(clock.target.value)

    def _notify(self, kind: str, recipient_type: str, recipient_id: str | None, data: dict[str, Any]) -> None:
        notification = Notification(
            id=str(workflow.uuid4()),
            ticket_id=self.s.ticket_id,
            kind=kind,
            recipient_type=recipient_type,
            recipient_id=recipient_id,
            at=workflow.now(),
            data=data,
        )
        self._in_background(
            self._deliver(NotificationActivities.deliver_notification, notification, notification.id, kind)
        )

    def _in_background(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def _dispatch_queue_soon(self) -> None:
        """Capacity freed: let the queue have it, without holding this ticket's lock meanwhile."""
        self._in_background(
            workflow.execute_activity_method(
                AssignmentActivities.dispatch_queue, workflow.now(), start_to_close_timeout=DB_TIMEOUT
            )
        )

    async def _in_region(self, activity: Any, arg: Any, region: str | None) -> Any:
        """Run a region-facing activity on that region's queue; if no regional worker picks it up in
        time (a region's outage, or no regional workers at all), the central worker runs it on its
        delivery queue, whose slots a hanging receiver may fill without holding up any ticket."""
        options = {"start_to_close_timeout": NOTIFY_TIMEOUT, "retry_policy": NOTIFY_RETRY}
        if self.regional and region:
            try:
                return await workflow.execute_activity_method(
                    activity,
                    arg,
                    task_queue=regional_task_queue(workflow.info().task_queue, region),
                    schedule_to_start_timeout=self.lifecycle.regional_pickup_timeout,
                    **options,
                )
            except ActivityError as err:
                timed_out = (
                    isinstance(err.cause, ActivityTimeout) and err.cause.type == TimeoutType.SCHEDULE_TO_START
                )
                if not timed_out:
                    raise
                workflow.logger.warning(
                    "no %s worker picked up %s; using the central queue", region, activity
                )
        if self._patched(DELIVERY_QUEUE):
            options["task_queue"] = delivery_task_queue(workflow.info().task_queue)
        return await workflow.execute_activity_method(activity, arg, **options)

    async def _deliver(self, activity: Any, message: Any, message_id: str, kind: str) -> None:
        """Send a notification or page in the ticket's region; a final failure goes on the timeline."""
        try:
            await self._in_region(activity, message, self.s.region)
        except ActivityError as err:
            self._event(
                "notification_failed",
                Actor.system(self.s.region),
                internal=True,
                data={"notification_id": message_id, "kind": kind, "error": str(err.cause or err)},
            )

    def _sla_views(self, now: datetime) -> list[SlaView]:
        ratio = self.warning_ratios[0]  # "warning" from the first threshold on
        return [
            SlaView(
                target=target,
                state=clock.state(now, ratio, self.s.sla_calendar),
                due_at=clock.due_at(self.s.sla_calendar),
                target_minutes=clock.budget.total_seconds() / 60,
                elapsed_minutes=round(clock.elapsed(now, self.s.sla_calendar).total_seconds() / 60, 2),
            )
            for target, clock in self.s.clocks.items()
        ]

    def _snapshot(self, now: datetime) -> TicketSnapshot:
        s = self.s
        views = self._sla_views(now)
        return TicketSnapshot(
            ticket_id=s.ticket_id,
            revision=s.revision,
            status=s.status,
            subject=s.subject,
            customer_id=s.customer_id,
            channel=s.channel,
            language=s.language,
            language_confidence=s.language_confidence,
            module=s.module,
            priority=s.priority,
            region=s.region,
            assignee_id=s.assignee.id if s.assignee else None,
            created_at=s.created_at,
            updated_at=now,
            first_response_at=s.first_response_at,
            resolved_at=s.resolved_at,
            closed_at=s.closed_at,
            reopen_count=s.reopen_count,
            sla=views,
            sla_state=worst_state([v.state for v in views]) if views else None,
            csat_score=s.survey.score,
            csat_comment=s.survey.comment,
            machine_translation=s.machine_translation,
        )

    async def _flush(self) -> None:
        if not self.dirty and not self.s.pending_events:
            return
        now = workflow.now()
        self.dirty = False
        self.s.revision += 1
        snapshot = self._snapshot(now)
        events = list(self.s.pending_events)
        self._publish_search_attributes(snapshot)
        await workflow.execute_activity_method(
            ProjectionActivities.project_ticket,
            ProjectionBatch(snapshot=snapshot, events=events),
            start_to_close_timeout=DB_TIMEOUT,
        )
        self.s.pending_events = self.s.pending_events[len(events) :]

    def _publish_search_attributes(self, snapshot: TicketSnapshot) -> None:
        wanted: dict[str, tuple[Any, str | None]] = {
            sa.TICKET_STATUS.name: (sa.TICKET_STATUS, snapshot.status.value),
            sa.REGION.name: (sa.REGION, snapshot.region),
            sa.PRIORITY.name: (sa.PRIORITY, snapshot.priority.value if snapshot.priority else None),
            sa.ASSIGNEE.name: (sa.ASSIGNEE, snapshot.assignee_id),
            sa.LANGUAGE.name: (sa.LANGUAGE, snapshot.language),
            sa.SLA_STATE.name: (sa.SLA_STATE, snapshot.sla_state.value if snapshot.sla_state else None),
        }
        updates = []
        for name, (key, value) in wanted.items():
            if name in self.published and self.published[name] == value:
                continue
            self.published[name] = value
            updates.append(key.value_set(value) if value is not None else key.value_unset())
        if updates:
            workflow.upsert_search_attributes(updates)


def _refusal_from(err: ActivityError) -> ApplicationError:
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type == AGENT_UNAVAILABLE:
        return refuse(AGENT_UNAVAILABLE, cause.message)
    return refuse(INVALID_STATE, f"the assignment could not be made: {cause or err}")
