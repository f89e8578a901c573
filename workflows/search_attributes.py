"""Typed search attributes upserted by ticket workflows, so SREs can query Temporal directly:

temporal workflow list --query 'SlaState="breached" AND Priority="P1" AND Region="apac"'
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

TICKET_STATUS = SearchAttributeKey.for_keyword("TicketStatus")
REGION = SearchAttributeKey.for_keyword("Region")
PRIORITY = SearchAttributeKey.for_keyword("Priority")
ASSIGNEE = SearchAttributeKey.for_keyword("AssigneeId")
LANGUAGE = SearchAttributeKey.for_keyword("Language")
SLA_STATE = SearchAttributeKey.for_keyword("SlaState")

ALL = [TICKET_STATUS, REGION, PRIORITY, ASSIGNEE, LANGUAGE, SLA_STATE]
