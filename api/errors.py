"""Turning workflow refusals and Temporal failures into HTTP answers with a reason."""

from __future__ import annotations

from fastapi import HTTPException, status
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from domain.errors import AGENT_UNAVAILABLE, INVALID_INPUT, INVALID_STATE, NOT_ASSIGNEE

REFUSAL_STATUS = {
    INVALID_STATE: status.HTTP_409_CONFLICT,
    AGENT_UNAVAILABLE: status.HTTP_409_CONFLICT,
    NOT_ASSIGNEE: status.HTTP_403_FORBIDDEN,
    INVALID_INPUT: status.HTTP_422_UNPROCESSABLE_CONTENT,
}


def http_error_from_update(err: WorkflowUpdateFailedError) -> HTTPException:
    cause = err.cause
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.cause
    if isinstance(cause, ApplicationError) and cause.type in REFUSAL_STATUS:
        return HTTPException(REFUSAL_STATUS[cause.type], cause.message)
    return HTTPException(status.HTTP_409_CONFLICT, f"the ticket refused the change: {err.cause or err}")


def http_error_from_rpc(err: RPCError, ticket_id: int) -> HTTPException:
    if err.status is RPCStatusCode.NOT_FOUND:
        return HTTPException(status.HTTP_409_CONFLICT, f"ticket {ticket_id} is closed or not running")
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE, f"the workflow service did not answer: {err.message}"
    )
