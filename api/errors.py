"""Turning workflow refusals and Temporal failures into HTTP answers with a reason."""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog
from fastapi import HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.limits import redact_path
from domain.errors import AGENT_UNAVAILABLE, INVALID_INPUT, INVALID_STATE, NOT_ASSIGNEE

log = structlog.get_logger(__name__)


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every 4xx answer: `detail` says why (a sentence, or one issue per invalid field)."""

    detail: str | list[ValidationIssue]


# Documented on every route, so clients see each answer they can get.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": description}
    for code, description in {
        401: "missing, unknown or revoked token",
        403: "the token's role or identity may not do this",
        404: "no such resource (or not yours)",
        409: "the resource's state forbids this",
        422: "invalid input",
        400: "the body cannot be parsed at all (JSON nested thousands deep)",
        413: "the request body is too large (`MERIDIAN_MAX_BODY_BYTES`)",
        429: "too many requests: retry after the `Retry-After` header's seconds",
        503: "PostgreSQL or Temporal is unavailable: retry after the `Retry-After` header's seconds",
    }.items()
}
ERROR_RESPONSES[429]["headers"] = {
    "Retry-After": {"description": "whole seconds until a retry can succeed", "schema": {"type": "integer"}}
}


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 without echoing the input: it may be megabytes, or hold NaN or surrogates JSON cannot carry."""
    issues = [
        {
            "loc": [str(p) if not isinstance(p, int) else p for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]
    return JSONResponse({"detail": issues}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


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


# A 503 says when to come back: a restarting Temporal or PostgreSQL is usually back within seconds.
RETRY_AFTER_SECONDS = 5
RETRY_LATER = {"Retry-After": str(RETRY_AFTER_SECONDS)}
# What reaching PostgreSQL can raise while it is down, restarting or out of connections: refused,
# reset or missing sockets and timeouts (OSError, pool acquisition included), a connection lost
# mid-query (class 08), "starting up" / "shutting down" (57P0x) and "too many connections".
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)


def http_error_from_rpc(err: RPCError, ticket_id: int) -> HTTPException:
    if err.status is RPCStatusCode.NOT_FOUND:
        return HTTPException(status.HTTP_409_CONFLICT, f"ticket {ticket_id} is closed or not running")
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        f"the workflow service did not answer: {err.message}",
        headers=RETRY_LATER,
    )


async def invalid_data(request: Request, exc: Exception) -> JSONResponse:
    """PostgreSQL refused a value (SQLSTATE class 22: a NUL byte, a number or date out of range).

    Fields are validated before they reach the database; this is the net under that, so input
    that slips through is still the client's 422 with the reason, never a 500.
    """
    log.warning("database refused a value", path=redact_path(request.url.path), error=str(exc))
    return JSONResponse(
        {"detail": f"a value cannot be stored: {exc}"}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT
    )


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """PostgreSQL cannot be reached: 503 with Retry-After, whatever the route. Each write the API
    makes is one transaction, so a request cut off here left nothing half-written; a client retries
    it (with the same Idempotency-Key or message id where it has one)."""
    error = f"{type(exc).__name__}: {exc}"
    log.warning("database unavailable", path=redact_path(request.url.path), error=error)
    return JSONResponse(
        {"detail": f"the database is unavailable ({type(exc).__name__}); retry in {RETRY_AFTER_SECONDS} s"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers=RETRY_LATER,
    )
