"""What Meridian itself says to customers, in their language.

Each phrase is written by people, not machine-translated, for every language the desk serves
by default. A language without its own wording falls back to English, and the timeline records
which language was used so nobody mistakes the fallback for a translation.
"""

from __future__ import annotations

from enum import StrEnum

FALLBACK_LANGUAGE = "en"


class Phrase(StrEnum):
    TEAM_CHANGED = "team_changed"


_CATALOGUE: dict[Phrase, dict[str, str]] = {
    Phrase.TEAM_CHANGED: {
        "en": "Your ticket is now with our {team} team.",
        "es": "Su ticket ahora está a cargo de nuestro equipo de {team}.",
        "pt": "Seu chamado agora está com a nossa equipe de {team}.",
        "fr": "Votre ticket est désormais pris en charge par notre équipe {team}.",
        "de": "Ihr Ticket wird jetzt von unserem Team {team} bearbeitet.",
        "it": "Il suo ticket è ora seguito dal nostro team {team}.",
        "nl": "Uw ticket wordt nu behandeld door ons team {team}.",
        "ja": "お問い合わせは現在、{team}チームが担当しています。",
        "zh": "您的工单现在由我们的{team}团队处理。",
        "ko": "고객님의 티켓은 이제 {team} 팀에서 담당합니다.",
    },
}


def phrase_languages(phrase: Phrase) -> frozenset[str]:
    return frozenset(_CATALOGUE[phrase])


def say(phrase: Phrase, language: str | None, **values: str) -> tuple[str, str]:
    """The phrase in `language` (or English when we have no wording), and the language used."""
    wordings = _CATALOGUE[phrase]
    used = language if language in wordings else FALLBACK_LANGUAGE
    return wordings[used].format(**values), used
