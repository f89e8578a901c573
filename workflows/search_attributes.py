"""Typed search attributes upserted by ticket workflows, so SREs can query Temporal directly:

temporal workflow list --query 'SlaState="breached" AND Priority="P1" AND Region="apac"'
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

TICKET_STATUS = SearchAttributeKey.for_keyword("TicketStatus")
REGION = SearchAttributeKey.for_keyword("TicketRegion")
PRIORITY = SearchAttributeKey.for_keyword("TicketPriority")
ASSIGNEE = SearchAttributeKey.for_keyword("TicketAssignee")
LANGUAGE = SearchAttributeKey.for_keyword("TicketLanguage")
SLA_STATE = SearchAttributeKey.for_keyword("TicketSlaState")

ALL = [TICKET_STATUS, REGION, PRIORITY, ASSIGNEE, LANGUAGE, SLA_STATE]
