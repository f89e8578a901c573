"""Knowledge base: articles and translations, and the pure text rules of hybrid search.

Full-text search runs in PostgreSQL with each language's text-search configuration, but the text
is prepared here first, the same way for documents and queries: Latin accents are folded (so
"contrasena" finds "contraseña"), and Chinese, Japanese and Korean runs become overlapping
character bigrams, which the `simple` configuration indexes as they are. A full-text match must
hold about half of the query's lexemes, written out as a tsquery the GIN index can answer alone.
Ranked lists from full text and from vectors are merged by reciprocal-rank fusion.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from itertools import combinations
from typing import TypeVar

from pydantic import BaseModel, Field

from domain.triage import fold

# Reciprocal-rank fusion's constant: large enough that rank 1 and rank 2 of one list do not
# outweigh a document both lists found (Cormack et al. use 60 too).
RRF_K = 60
CHUNK_TOKENS = 200
# Full text matches chunks holding half of a query's lexemes (a third for CJK, whose bigrams
# across word boundaries are noise); the query is written as the OR of those combinations, kept
# to at most MAX_COMBINATIONS by using only the first MAX_QUERY_LEXEMES and, if need be, fewer.
MIN_COVERAGE = 0.5
CJK_MIN_COVERAGE = 0.34
MAX_QUERY_LEXEMES = 16
MAX_COMBINATIONS = 120

SIMPLE_CONFIG = "simple"
CJK_LANGUAGES = frozenset({"zh", "ja", "ko"})
# The snowball configurations PostgreSQL ships; any other language is indexed with `simple`.
TEXT_SEARCH_CONFIGS = {
    "ar": "arabic",
    "ca": "catalan",
    "da": "danish",
    "de": "german",
    "el": "greek",
    "en": "english",
    "es": "spanish",
    "et": "estonian",
    "eu": "basque",
    "fi": "finnish",
    "fr": "french",
    "ga": "irish",
    "hi": "hindi",
    "hu": "hungarian",
    "hy": "armenian",
    "id": "indonesian",
    "it": "italian",
    "lt": "lithuanian",
    "nb": "norwegian",
    "ne": "nepali",
    "nl": "dutch",
    "nn": "norwegian",
    "no": "norwegian",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sr": "serbian",
    "sv": "swedish",
    "ta": "tamil",
    "tr": "turkish",
    "yi": "yiddish",
}

# Han (with extension A and compatibility ideographs), kana, and Hangul syllables and jamo.
_CJK = (
    "\u1100-\u11ff\u3040-\u30ff\u31f0-\u31ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
)
_CJK_RUN = re.compile(f"[{_CJK}]+")
_WORD = re.compile(rf"[^\W{_CJK}]+")
# A token for chunk sizes: a word of a spaced script, one CJK character, or one punctuation mark.
_TOKEN = re.compile(rf"[^\W{_CJK}]+|[{_CJK}]|[^\w\s]")
_PARAGRAPHS = re.compile(r"\n\s*\n")
# After . ! ? … and a space, or right after a full-width stop (CJK writes no space after one).
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=[。！？])\s*")


class KbStatus(StrEnum):
    DRAFT = "draft"
    IN_REVIEW = "in_review"
    PUBLISHED = "published"
    ARCHIVED = "archived"


# Publishing goes through review; an archived article can only be revived as a draft.
KB_TRANSITIONS: dict[KbStatus, frozenset[KbStatus]] = {
    KbStatus.DRAFT: frozenset({KbStatus.IN_REVIEW, KbStatus.ARCHIVED}),
    KbStatus.IN_REVIEW: frozenset({KbStatus.DRAFT, KbStatus.PUBLISHED, KbStatus.ARCHIVED}),
    KbStatus.PUBLISHED: frozenset({KbStatus.IN_REVIEW, KbStatus.ARCHIVED}),
    KbStatus.ARCHIVED: frozenset({KbStatus.DRAFT}),
}


def allowed_from(target: KbStatus) -> list[KbStatus]:
    """Statuses that may move to `target` (itself included, so repeating a change is harmless)."""
    return [target, *(s for s, nexts in KB_TRANSITIONS.items() if target in nexts)]


class InvalidKbTransition(ValueError):
    """The article or translation is in a status that cannot move to the one asked for."""


class KbArticle(BaseModel):
    id: int
    module: str
    source_language: str
    status: KbStatus
    created_from_ticket: int | None = None
    created_at: datetime
    updated_at: datetime


class KbTranslation(BaseModel):
    id: int
    article_id: int
    language: str
    title: str
    body: str
    version: int
    status: KbStatus
    machine_translated: bool
    source_version: int | None
    outdated: bool
    edited_by: str | None = None
    reviewer_id: str | None = None
    reviewed_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class KbTranslationVersion(BaseModel):
    translation_id: int
    version: int
    title: str
    body: str
    machine_translated: bool
    source_version: int | None
    edited_by: str | None = None
    created_at: datetime


class KbArticleDetail(KbArticle):
    translations: list[KbTranslation] = Field(default_factory=list)

    def translation(self, language: str) -> KbTranslation | None:
        return next((t for t in self.translations if t.language == language), None)


class ChunkDraft(BaseModel):
    """One search unit of a translation, prepared for both indexes."""

    chunk_index: int
    text: str
    index_text: str  # what to_tsvector reads (folded, CJK as bigrams)
    index_title: str
    passage: str  # what the embedding model reads: the title gives every chunk its context


class SearchHit(BaseModel):
    """The best chunk of one translation for one retrieval method."""

    article_id: int
    translation_id: int
    language: str
    chunk_index: int
    score: float  # ts_rank for full text, cosine similarity for vectors


class SearchResult(BaseModel):
    article_id: int
    translation_id: int
    module: str
    language: str
    title: str
    snippet: str
    score: float
    matched: list[str]  # "fulltext", "vector"
    similarity: float | None = None  # cosine similarity of the article's nearest chunk to the query
    machine_translated: bool
    outdated: bool


# --- text preparation -------------------------------------------------------------------------


def base_language(language: str) -> str:
    return language.split("-", 1)[0].lower()


def text_search_config(language: str) -> str:
    """PostgreSQL configuration a language is indexed and queried with."""
    code = base_language(language)
    if code in CJK_LANGUAGES:
        return SIMPLE_CONFIG
    return TEXT_SEARCH_CONFIGS.get(code, SIMPLE_CONFIG)


def cjk_bigrams(run: str) -> list[str]:
    """Overlapping pairs; a lone character stands for itself so one-character words still match."""
    if len(run) < 2:
        return [run] if run else []
    return [run[i : i + 2] for i in range(len(run) - 1)]


def _bigrammed(folded: str) -> str:
    return _CJK_RUN.sub(lambda m: f" {' '.join(cjk_bigrams(m.group()))} ", folded)


def index_text(text: str) -> str:
    """The text to_tsvector reads: folded, and CJK runs (in any language) as bigrams."""
    return _bigrammed(fold(text))


def query_terms(query: str) -> list[str]:
    """Distinct search terms in order: words of spaced scripts, and bigrams of CJK runs."""
    folded = fold(query)
    terms: list[str] = []
    for match in re.finditer(rf"{_CJK_RUN.pattern}|{_WORD.pattern}", folded):
        piece = match.group()
        terms.extend(cjk_bigrams(piece) if _CJK_RUN.fullmatch(piece) else [piece])
    return list(dict.fromkeys(terms))


def _quoted(lexeme: str) -> str:
    """A lexeme as a tsquery operand, taken as it is (no second normalisation)."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


_HIRAGANA_ONLY = re.compile("[\u3040-\u309f]+")
# Bigrams of grammar rather than content (endings, particles, question words), which a query
# shares with nearly every document of its language.
CJK_STOP_BIGRAMS = frozenset(
    "怎么 么办 什么 为什 如何 的是 是不 可以 一下 我的 我们 你们 了吗 不了 没有 有没 "
    "니다 습니 합니 됩니 어요 해요 세요 나요 까요 있습 없습 에서 으로 하는 하고 하면 해서 "
    "할수 수없 은데 는데 이에 에게 했는 하기".split()
)


def content_lexemes(lexemes: Sequence[str], language: str) -> list[str]:
    """Drops CJK query bigrams that carry grammar, not meaning: Japanese ones written only in
    hiragana (particles, verb endings) and a few common Chinese and Korean ones. A query made
    only of those keeps them all."""
    if base_language(language) not in CJK_LANGUAGES:
        return list(lexemes)
    kept = [
        x for x in lexemes if x not in CJK_STOP_BIGRAMS and not (len(x) == 2 and _HIRAGANA_ONLY.fullmatch(x))
    ]
    return kept or list(lexemes)


def selective_lexemes(lexemes: Sequence[str], common: dict[str, float]) -> tuple[list[str], float | None]:
    """The lexemes worth matching on, and the coverage to require of them (None: the default).

    A lexeme found in a large share of all chunks (`common`, lexeme -> share) selects nothing but
    makes the index walk its whole posting list; it still counts when ranking. A query made only
    of common lexemes must hold the two rarest of them.
    """
    rare = [x for x in lexemes if x not in common]
    if rare:
        return rare, None
    return sorted(lexemes, key=lambda x: common[x])[:2], 1.0


def language_lexeme(language: str) -> str:
    """A lexeme every chunk of `language` carries: the GIN index then filters by language itself.
    It holds a space, which no word the parser produces can."""
    return f"language {language}"


def any_lexeme_query(lexemes: Sequence[str]) -> str:
    """tsquery source matching any lexeme: what ts_rank scores (for CJK, the OR of bigrams)."""
    return " | ".join(_quoted(x) for x in lexemes)


def lexemes_needed(count: int, coverage: float) -> int:
    """How many of a query's lexemes a chunk must hold: `coverage` of them, but fewer for a long
    query, whose every-combination query would otherwise grow past MAX_COMBINATIONS."""
    needed = max(1, math.ceil(count * coverage))
    while needed > 1 and math.comb(count, needed) > MAX_COMBINATIONS:
        needed -= 1
    return needed


def match_query(lexemes: Sequence[str], language: str, coverage: float) -> str:
    """tsquery source for chunks in `language` holding `lexemes_needed` of the lexemes.

    Written out as the OR of every such combination, so the GIN index does all the filtering:
    with a plain OR, a question mentioning "data" or "account" hands ts_rank thousands of chunks.
    """
    needed = lexemes_needed(len(lexemes), coverage)
    combos = " | ".join(" & ".join(_quoted(x) for x in combo) for combo in combinations(lexemes, needed))
    return f"{_quoted(language_lexeme(language))} & ({combos})"


# --- chunking ---------------------------------------------------------------------------------


def count_tokens(text: str) -> int:
    """A model-free estimate: XLM-R needs about this many or a little more for most languages."""
    return len(_TOKEN.findall(text))


def split_sentences(paragraph: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(paragraph) if s and s.strip()]


def _split_long(sentence: str, max_tokens: int) -> list[str]:
    """A sentence longer than a chunk is cut at token boundaries, keeping its own spacing."""
    pieces: list[str] = []
    start = 0
    count = 0
    for match in _TOKEN.finditer(sentence):
        if count == max_tokens:
            pieces.append(sentence[start : match.start()].strip())
            start, count = match.start(), 0
        count += 1
    pieces.append(sentence[start:].strip())
    return [p for p in pieces if p]


def chunk_text(body: str, max_tokens: int = CHUNK_TOKENS) -> list[str]:
    """Cut a body into chunks of at most `max_tokens`, between sentences (only a sentence longer
    than a chunk is cut inside). A paragraph that does not fit in a chunk already half full starts
    the next one, so chunks tend to end where the author changed topic.
    """
    chunks: list[str] = []
    current: list[str] = []  # paragraphs (joined by blank lines) of the chunk being filled
    current_sentences: list[str] = []  # sentences of the paragraph being filled
    size = 0

    def flush() -> None:
        nonlocal size
        if current_sentences:
            current.append(" ".join(current_sentences))
            current_sentences.clear()
        if current:
            chunks.append("\n\n".join(current))
            current.clear()
        size = 0

    for paragraph in _PARAGRAPHS.split(body):
        sentences: list[str] = []
        for sentence in split_sentences(paragraph):
            sentences.extend(_split_long(sentence, max_tokens))
        paragraph_tokens = sum(count_tokens(s) for s in sentences)
        if size >= max_tokens // 2 and size + paragraph_tokens > max_tokens:
            flush()
        for sentence in sentences:
            tokens = count_tokens(sentence)
            if size and size + tokens > max_tokens:
                flush()
            current_sentences.append(sentence)
            size += tokens
        if current_sentences:
            current.append(" ".join(current_sentences))
            current_sentences.clear()
    flush()
    return chunks


def passage_text(title: str, chunk: str) -> str:
    return f"{title}\n{chunk}"


def prepare_chunks(title: str, body: str, max_tokens: int = CHUNK_TOKENS) -> list[ChunkDraft]:
    pieces = chunk_text(body, max_tokens) or [title]
    indexed_title = index_text(title)
    return [
        ChunkDraft(
            chunk_index=n,
            text=piece,
            index_text=index_text(piece),
            index_title=indexed_title,
            passage=passage_text(title, piece),
        )
        for n, piece in enumerate(pieces)
    ]


# --- fusion -----------------------------------------------------------------------------------

K = TypeVar("K", bound=Hashable)


def reciprocal_rank_fusion(rankings: Iterable[Sequence[K]], k: int = RRF_K) -> list[tuple[K, float]]:
    """Sum of 1/(k + rank) over the lists each item appears in (rank 1 first), best first.

    Equal scores keep the order in which items were first seen, so the first list breaks ties.
    """
    scores: dict[K, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(dict.fromkeys(ranking), start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: pair[1], reverse=True)


def snippet(text: str, query: str, width: int = 240) -> str:
    """About `width` characters of `text`, starting shortly before the first query term it holds."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    # fold() keeps positions except for rare expansions (ß -> ss), close enough to place a window.
    folded = fold(flat)
    hits = [i for i in (folded.find(term) for term in query_terms(query)) if i >= 0]
    start = max(0, min(hits) - width // 4) if hits else 0
    if start:
        space = flat.find(" ", start)
        start = space + 1 if 0 <= space < start + 20 else start
    end = min(len(flat), start + width)
    if end < len(flat):
        space = flat.rfind(" ", start, end)
        end = space if space > start + width // 2 else end
    return ("…" if start else "") + flat[start:end] + ("…" if end < len(flat) else "")
