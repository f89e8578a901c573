"""Triage rules: which module a ticket is about and how urgent it is.

The module taxonomy lives in the database (`modules`); these functions only score text
against it, so support teams change keywords without a deploy.
"""

from __future__ import annotations

import re
import unicodedata

from pydantic import BaseModel, Field

from domain.enums import CustomerTier, Priority

GENERAL_MODULE = "general"
# Letters below this code point are Latin (Basic Latin to Latin Extended-B).
LATIN_END = "\u0250"


class ModuleDefinition(BaseModel):
    id: str
    name: str
    keywords: list[str] = Field(default_factory=list)


class ModuleMatch(BaseModel):
    module: str
    score: int
    matched: list[str]


def fold(text: str) -> str:
    """Lower-case and strip Latin accents so 'Connexión' matches the keyword 'conexion'.

    Only marks on Latin letters go: in Japanese the voicing marks are part of the letter
    (プ is not フ), and in Korean jamo must recombine into their syllables.
    """
    kept: list[str] = []
    for ch in unicodedata.normalize("NFKD", text.casefold()):
        if unicodedata.combining(ch) and kept and kept[-1] < LATIN_END:
            continue
        kept.append(ch)
    return unicodedata.normalize("NFC", "".join(kept))


def _contains(folded_text: str, keyword: str) -> bool:
    folded_keyword = fold(keyword)
    if not folded_keyword:
        return False
    if folded_keyword.isascii():
        return re.search(rf"(?<![a-z0-9]){re.escape(folded_keyword)}(?![a-z0-9])", folded_text) is not None
    # Scripts without spaces between words (zh, ja) are matched as substrings.
    return folded_keyword in folded_text


def classify_module(text: str, taxonomy: list[ModuleDefinition]) -> ModuleMatch:
    folded = fold(text)
    best = ModuleMatch(module=GENERAL_MODULE, score=0, matched=[])
    for module in taxonomy:
        matched = [kw for kw in module.keywords if _contains(folded, kw)]
        if len(matched) > best.score:
            best = ModuleMatch(module=module.id, score=len(matched), matched=matched)
    return best


# Words that signal how bad things are, in the languages Meridian ships with.
CRITICAL_CUES = [
    "outage",
    "down for all",
    "production down",
    "prod down",
    "data loss",
    "security breach",
    "all users",
    "caida total",
    "perdida de datos",
    "fora do ar",
    "perda de dados",
    "panne generale",
    "perte de donnees",
    "ausfall",
    "datenverlust",
    "宕机",
    "数据丢失",
    "全部用户",
    "システム停止",
    "データ消失",
    "障害発生",
    "서비스 중단",
    "데이터 손실",
    "장애",
]
HIGH_CUES = [
    "urgent",
    "asap",
    "crash",
    "crashes",
    "broken",
    "cannot login",
    "can't login",
    "blocked",
    "error 500",
    "urgente",
    "no funciona",
    "bloqueado",
    "nao funciona",
    "ne fonctionne pas",
    "bloque",
    "dringend",
    "funktioniert nicht",
    "absturz",
    "紧急",
    "崩溃",
    "无法登录",
    "緊急",
    "クラッシュ",
    "ログインできない",
    "긴급",
    "충돌",
    "로그인 불가",
]

TIER_BASELINE = {
    CustomerTier.ENTERPRISE: Priority.P2,
    CustomerTier.BUSINESS: Priority.P3,
    CustomerTier.STANDARD: Priority.P4,
}
# The most urgent priority a customer of each tier may declare for themselves.
TIER_CEILING = {
    CustomerTier.ENTERPRISE: Priority.P1,
    CustomerTier.BUSINESS: Priority.P2,
    CustomerTier.STANDARD: Priority.P3,
}


class PriorityDecision(BaseModel):
    priority: Priority
    reasons: list[str]


def decide_priority(tier: CustomerTier, declared: Priority | None, text: str) -> PriorityDecision:
    folded = fold(text)
    reasons = [f"{tier.value} tier baseline {TIER_BASELINE[tier].value}"]
    rank = TIER_BASELINE[tier].rank
    critical = [cue for cue in CRITICAL_CUES if _contains(folded, cue)]
    high = [cue for cue in HIGH_CUES if _contains(folded, cue)]
    if critical:
        rank -= 2
        reasons.append(f"critical cues: {', '.join(critical)}")
    elif high:
        rank -= 1
        reasons.append(f"severity cues: {', '.join(high)}")
    if declared is not None:
        allowed = max(declared.rank, TIER_CEILING[tier].rank)
        if allowed < rank:
            rank = allowed
            reasons.append(
                f"declared {declared.value}, capped at {Priority.from_rank(allowed).value} for tier"
            )
    return PriorityDecision(priority=Priority.from_rank(rank), reasons=reasons)
