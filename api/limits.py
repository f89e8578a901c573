"""What the API refuses before any endpoint runs: bodies that are too large (413), clients that
ask too often (429 with `Retry-After`), and query parameters no endpoint knows (422). All answer
like every other error: JSON with a `detail`.

The first two are pure ASGI middleware, so a refused request costs neither a body parse nor a
database query.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError

from domain.ratelimit import Buckets, parse_rate, retry_after_header
from meridian.settings import Settings

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[..., Any]

SURVEY_PATH = re.compile(r"^/v1/surveys/([^/]+)")


def redact_path(path: str) -> str:
    """A survey link is a credential: logs get the path without it."""
    return SURVEY_PATH.sub("/v1/surveys/[redacted]", path)


async def _refuse(
    send, status: int, detail: str | list[dict[str, Any]], headers: list[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """413 for a body over `max_bytes`, whether it declares its length or arrives in chunks.

    The body is read here (it would be read whole by the endpoint anyway) and handed on once it is
    known to fit, so an endpoint never sees a truncated body. A JSON body that is not UTF-8 gets its
    422 here too, with that reason (the framework would only say it could not parse the body).
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                return await _refuse(send, 400, "Content-Length is not a number")
            if length > self.max_bytes:
                return await _refuse(send, 413, self._too_large())
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return await self.app(scope, _replay([message]), send)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await _refuse(send, 413, self._too_large())
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and _is_json(scope) and not _is_utf8(body):
            issue = {"loc": ["body"], "msg": "the body is not valid UTF-8, as JSON must be", "type": "utf8"}
            return await _refuse(send, 422, [issue])
        message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, _replay([message], then=receive), send)


def _is_json(scope: Scope) -> bool:
    content_type = dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip().lower()
    return content_type == b"application/json" or content_type.endswith(b"+json")


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _replay(messages: list[Message], then=None):
    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        if then is not None:
            return await then()  # after the body: wait for a disconnect, as a server would
        return {"type": "http.disconnect"}

    return receive


def _bearer(scope: Scope) -> str | None:
    # The first Authorization header, the one authentication reads (`dict()` would keep the last,
    # and a second header with a made-up token would name a fresh bucket for every request).
    value = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
    scheme, _, token = value.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


def _key(secret: str) -> str:
    """Buckets are named by a digest, so memory never holds a token or a survey link."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()[:32]


class RateLimits:
    """429 with `Retry-After` for a client over its limit, on `/v1` (health and metrics are free).

    - a bearer token: its own bucket (`rate_limit_per_token`; the admin token `rate_limit_admin`);
    - no bearer token (anyone not logged in): a bucket per client address;
    - a survey link: the address's bucket and one per link, whichever address it comes from, with
      or without a bearer token;
    - a bearer token the API refuses (401): the address's bucket of failed logins, with the
      address's rate. Once it is empty, the address's bearer requests get 429 without a database
      lookup: made-up tokens cannot each buy a fresh bucket.
    The bucket that refuses a request spends nothing on it, so a client that waits `Retry-After`
    seconds gets through.
    """

    def __init__(self, app: ASGIApp, settings: Settings, clock: Callable[[], float] = time.monotonic):
        self.app = app
        self.clock = clock
        self.admin_token = settings.admin_token
        rates = {
            "token": parse_rate(settings.rate_limit_per_token),
            "admin": parse_rate(settings.rate_limit_admin),
            "ip": parse_rate(settings.rate_limit_per_ip),
            "survey": parse_rate(settings.rate_limit_per_survey),
            "refused": parse_rate(settings.rate_limit_per_ip),
        }
        self.buckets = {name: Buckets(rate) for name, rate in rates.items() if rate is not None}

    def _checks(self, scope: Scope) -> list[tuple[str, str, str]]:
        """(bucket, key, who) for each limit this request counts against."""
        by_address = ("ip", _address(scope), "your address")
        if survey := SURVEY_PATH.match(scope["path"]):
            # The link is the credential and a bearer header is ignored there: it must not buy the
            # request a fresh bucket of its own instead of the link's and the address's.
            return [by_address, ("survey", _key(survey.group(1)), "this survey link")]
        token = _bearer(scope)
        if token is not None:
            # As bytes: compare_digest refuses str with non-ASCII characters (a 500, not a refusal).
            admin = self.admin_token is not None and hmac.compare_digest(
                token.encode("latin-1"), self.admin_token.encode()
            )
            return [("admin" if admin else "token", _key(token), "this token")]
        return [by_address]

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        now = self.clock()
        checks = self._checks(scope)
        refused = self.buckets.get("refused")
        address = _address(scope)
        watch = refused is not None and checks[0][0] in ("token", "admin")
        if watch and (wait := refused.wait(address, now)) > 0:
            return await self._too_many(send, refused, "your address's refused tokens", wait)
        for bucket, key, who in checks:
            if bucket not in self.buckets:
                continue
            wait = self.buckets[bucket].take(key, now)
            if wait > 0:
                return await self._too_many(send, self.buckets[bucket], who, wait)
        if not watch:
            return await self.app(scope, receive, send)

        async def send_watching(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                refused.take(address, self.clock())
            await send(message)

        await self.app(scope, receive, send_watching)

    @staticmethod
    async def _too_many(send, buckets: Buckets, who: str, wait: float) -> None:
        limit = buckets.rate
        await _refuse(
            send,
            429,
            f"too many requests from {who} (at most {limit.amount} per {limit.period:g} s); "
            f"retry after {retry_after_header(wait)} s",
            [(b"retry-after", retry_after_header(wait).encode())],
        )


def install(app, settings: Settings) -> None:
    """Rate limits outermost (a throttled client's body is never read), then the body size."""
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RateLimits, settings=settings)


# By id(route), with the route kept so that id is never reused (routes are not hashable).
_known_query: dict[int, tuple[Any, frozenset[str]]] = {}


def _query_names(dependant) -> set[str]:
    """The query parameters an endpoint reads, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def refuse_unknown_query(request: Request) -> None:
    """A misspelt filter (`?stauts=open`) would silently list everything: it is a 422 instead.
    Survey links are exempt: mail systems add tracking parameters (`?utm_source=...`) to the links
    customers click."""
    if SURVEY_PATH.match(request.url.path):
        return
    route = request.scope["route"]
    cached = _known_query.get(id(route))
    if cached is None or cached[0] is not route:
        cached = _known_query[id(route)] = (route, frozenset(_query_names(route.dependant)))
    known = cached[1]
    if unknown := sorted(set(request.query_params) - known):
        raise RequestValidationError(
            [
                {"loc": ("query", name), "msg": "no such query parameter here", "type": "extra_forbidden"}
                for name in unknown
            ]
        )
