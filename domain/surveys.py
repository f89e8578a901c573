"""Satisfaction surveys reached by a link: signed, single-use and expiring, so no login is needed.

A token is the survey's id and expiry, signed with HMAC-SHA256. Forging one needs the secret;
guessing one needs the id (random, 122 bits) and the signature. Whether it was used lives in
the database, so a token works once however often it is copied.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import uuid
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from domain.text import PlainText

SIGNATURE_BYTES = 16


class InvalidToken(ValueError):
    """Not a token we signed (malformed or forged)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_survey(secret: bytes, survey_id: uuid.UUID, expires_at: datetime) -> str:
    payload = survey_id.bytes + struct.pack(">q", int(expires_at.timestamp()))
    signature = hmac.new(secret, payload, hashlib.sha256).digest()[:SIGNATURE_BYTES]
    return f"{_b64(payload)}.{_b64(signature)}"


def read_survey_token(secret: bytes, token: str) -> tuple[uuid.UUID, datetime]:
    """The survey id and expiry a genuine token carries; raises InvalidToken otherwise."""
    try:
        encoded_payload, encoded_signature = token.split(".")
        payload, signature = _unb64(encoded_payload), _unb64(encoded_signature)
    except ValueError as err:
        raise InvalidToken("malformed survey token") from err
    if _b64(payload) != encoded_payload or _b64(signature) != encoded_signature:
        # Base64's spare bits would otherwise give every link several spellings.
        raise InvalidToken("survey token is not in its canonical form")
    expected = hmac.new(secret, payload, hashlib.sha256).digest()[:SIGNATURE_BYTES]
    if len(payload) != 24 or not hmac.compare_digest(signature, expected):
        raise InvalidToken("survey token signature does not match")
    (expires,) = struct.unpack(">q", payload[16:])
    return uuid.UUID(bytes=payload[:16]), datetime.fromtimestamp(expires, UTC)


class SurveyQuestion(BaseModel):
    id: str
    label: str
    kind: str  # "score" (1-5), "choice" (one of options), "text"
    required: bool = False
    options: list[str] = Field(default_factory=list)


class SurveyForm(BaseModel):
    ticket_id: int
    subject: str
    language: str
    expires_at: datetime
    questions: list[SurveyQuestion]


class SurveyAnswer(BaseModel):
    score: int = Field(ge=1, le=5, strict=True)
    reason: PlainText | None = Field(default=None, max_length=200)
    comment: PlainText | None = Field(default=None, max_length=5_000)
    answers: dict[str, PlainText] = Field(
        default_factory=dict, max_length=20, description="answers to extra questions, by question id"
    )
