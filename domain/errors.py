"""Refusals that cross the Temporal boundary: typed, non-retryable, readable by the API."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

# Each type maps to one HTTP status in the API (api/errors.py).
INVALID_STATE = "InvalidState"
NOT_ASSIGNEE = "NotAssignee"
AGENT_UNAVAILABLE = "AgentUnavailable"
INVALID_INPUT = "InvalidInput"


def refuse(error_type: str, message: str) -> ApplicationError:
    return ApplicationError(message, type=error_type, non_retryable=True)
