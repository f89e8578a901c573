"""Removing personal data from text that leaves a ticket, such as a knowledge-base draft.

Pure and deterministic. What is removed is replaced by a bracketed label ("[email]") so a reviewer
sees that something was there. The order matters: secrets and addresses go first, because a
token or an email address can contain digit runs that would otherwise read as phone numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import BaseModel

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+@")
# Bearer tokens, JWTs, common API-key shapes, and long random-looking runs of letters and digits.
BEARER = re.compile(r"(?i)\b(bearer|token|api[_-]?key|secret|password|passwd|pwd)\s*[:=]?\s*\S{6,}")
JWT = re.compile(r"\beyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}")
KEY_PREFIXED = re.compile(r"\b(?:sk|pk|rk|ghp|gho|xox[abpr]|AKIA|AIza)[\w-]{10,}")
LONG_SECRET = re.compile(r"\b(?=[A-Za-z0-9+/_-]*\d)(?=[A-Za-z0-9+/_-]*[A-Za-z])[A-Za-z0-9+/_-]{24,}={0,2}")
IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
# International or local phone numbers: 8+ digits with the usual separators, not part of a word.
PHONE = re.compile(r"(?<![\w.])[+(]?\d[\d ().-]{6,}\d(?!\w|\.\d)")
_UNSPACED_START = "\u2e80"  # CJK radicals onwards: scripts written without spaces
CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")


class Redaction(BaseModel):
    text: str
    removed: dict[str, int]  # label -> how many


def _digits(text: str) -> int:
    return sum(ch.isdigit() for ch in text)


def _looks_like_phone(number: str) -> bool:
    """Written like a phone number: a country code or separators, or a long run starting with 0.
    A bare run such as a build number or a date (20260314) is left alone."""
    digits = _digits(number)
    if digits < 8:
        return False
    if number.startswith(("+", "(")) or any(sep in number for sep in " ().-"):
        return True
    return number.startswith("0") and digits >= 10


def _name_pattern(name: str) -> re.Pattern[str]:
    # Whole-word boundaries only for spaced scripts: in "田中さん" the name touches the next word.
    before = r"(?<!\w)" if name[0] < _UNSPACED_START else ""
    after = r"(?!\w)" if name[-1] < _UNSPACED_START else ""
    return re.compile(before + re.escape(name) + after, re.IGNORECASE)


def redact(text: str, names: Iterable[str] = ()) -> Redaction:
    """The text without emails, phone numbers, secrets, card numbers, IP addresses and the given
    names (the customer's, their contacts', matched whole and case-insensitively)."""
    removed: dict[str, int] = {}

    def replace(pattern: re.Pattern[str], label: str, value: str, keep=lambda _m: False) -> str:
        def swap(match: re.Match[str]) -> str:
            if keep(match):
                return match.group(0)
            removed[label] = removed.get(label, 0) + 1
            return f"[{label}]"

        return pattern.sub(swap, value)

    text = replace(URL_CREDENTIALS, "credentials", text)
    text = replace(EMAIL, "email", text)
    text = replace(JWT, "token", text)
    text = replace(KEY_PREFIXED, "token", text)
    text = replace(BEARER, "token", text, keep=lambda m: m.group(0).endswith("]"))
    text = replace(LONG_SECRET, "token", text)
    text = replace(CARD, "card", text, keep=lambda m: _digits(m.group(0)) < 13)
    text = replace(IPV4, "ip", text)
    text = replace(PHONE, "phone", text, keep=lambda m: not _looks_like_phone(m.group(0)))
    for name in sorted({n.strip() for n in names if len(n.strip()) >= 2}, key=len, reverse=True):
        text = replace(_name_pattern(name), "name", text)
    return Redaction(text=text, removed=removed)
