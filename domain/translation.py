"""Machine translation: what is asked and answered, and the glossary of terms never translated.

Pure and deterministic, so workflows may import it. Glossary terms (product and API names) are
swapped for numbered placeholders such as `{{0}}` before a text goes to a provider and swapped back
afterwards. Providers keep numbers and braces but may move them, re-case the sentence around them,
pad them with spaces or turn the braces full-width; `restore` accepts all of that.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel, Field, field_validator

from domain.text import PlainText

NO_PROVIDER = "none"
AUTO = "auto"  # the source language a provider is left to detect

# Scripts whose words run together or take attached particles: a glossary term may touch them and
# still be a whole term ("iOS上的SDK崩溃", "SDK로"). Kana, CJK ideographs (with extension A and the
# compatibility block), Hangul syllables.
_UNSPACED = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_WORD = rf"[^\W{_UNSPACED}]"  # a word character of a spaced script
# One or two braces each side (ASCII or full-width), any spacing inside, any Unicode digits.
PLACEHOLDER = re.compile(r"[{｛]{1,2}\s*(\d+)\s*[}｝]{1,2}")


def placeholder(index: int) -> str:
    return "{{" + str(index) + "}}"


class TranslationRequest(BaseModel):
    text: PlainText = Field(max_length=100_000)
    source: str | None = Field(default=None, description="language code; None lets the provider detect it")
    target: str


class TranslationResult(BaseModel):
    """Carries the translation only: the caller has the source text, and histories stay small."""

    text: str = Field(description="the translation, or the original when nothing was translated")
    source: str | None
    target: str
    provider: str = Field(description="'none' when no provider is configured")
    machine_translated: bool
    cached: bool = False
    note: str | None = Field(default=None, description="why the text was not translated, if it was not")


class GlossaryTermFields(BaseModel):
    term: PlainText = Field(
        min_length=1, max_length=200, description="matched case-sensitively, as a whole term"
    )
    note: PlainText | None = Field(default=None, max_length=500)

    @field_validator("term")
    @classmethod
    def _one_line(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("a glossary term must not be blank")
        if "\n" in value or "\r" in value:
            raise ValueError("a glossary term is one line")
        return value


class GlossaryTerm(GlossaryTermFields):
    created_at: datetime


class ProtectedText(BaseModel):
    """A text with its glossary terms replaced: `text` goes to the provider, `terms[i]` is `{{i}}`."""

    text: str
    terms: list[str] = Field(default_factory=list)

    def restore(self, translated: str) -> str:
        def put_back(match: re.Match[str]) -> str:
            index = int(match.group(1))
            # A number the provider made up is not ours to replace.
            return self.terms[index] if index < len(self.terms) else match.group(0)

        return PLACEHOLDER.sub(put_back, translated)

    def missing(self, translated: str) -> list[str]:
        """Terms whose placeholder the provider dropped."""
        seen = {int(m.group(1)) for m in PLACEHOLDER.finditer(translated)}
        return [term for i, term in enumerate(self.terms) if i not in seen]


def glossary_pattern(terms: Iterable[str]) -> re.Pattern[str]:
    """Matches any glossary term as a whole term (case-sensitive), longest first, or any text that
    already looks like a placeholder, so that it survives the round trip verbatim."""
    unique = sorted({t.strip() for t in terms if t.strip()}, key=lambda t: (-len(t), t))
    alternatives = []
    for term in unique:
        # Boundaries only where the term itself starts or ends with a word character:
        # "getUserToken()" may be followed by anything, "SDK" not by "s".
        before = rf"(?<!{_WORD})" if re.match(_WORD, term[0]) else ""
        after = rf"(?!{_WORD})" if re.match(_WORD, term[-1]) else ""
        alternatives.append(before + re.escape(term) + after)
    alternatives.append(PLACEHOLDER.pattern)
    return re.compile("|".join(alternatives))


def protect(text: str, terms: Iterable[str] | re.Pattern[str]) -> ProtectedText:
    """Replaces every glossary term with a placeholder; one number per distinct term, in order of
    first appearance, so the same text and glossary always give the same protected text."""
    pattern = terms if isinstance(terms, re.Pattern) else glossary_pattern(terms)
    found: list[str] = []

    def swap(match: re.Match[str]) -> str:
        term = match.group(0)
        if term not in found:
            found.append(term)
        return placeholder(found.index(term))

    return ProtectedText(text=pattern.sub(swap, text), terms=found)


def text_hash(text: str) -> str:
    """The cache key of a text: SHA-256 of its UTF-8 bytes, exactly as given."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def language_key(code: str | None) -> str:
    """How a language is written in cache keys: lower case, `auto` for detection."""
    return code.strip().replace("_", "-").lower() if code and code.strip() else AUTO


def same_language(source: str | None, target: str) -> bool:
    """en and en-GB are the same language for whether to translate at all."""
    if source is None:
        return False
    return language_key(source).split("-")[0] == language_key(target).split("-")[0]
