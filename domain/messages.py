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
    SUGGESTED_ARTICLES = "suggested_articles"
    MACHINE_TRANSLATED = "machine_translated"
    SURVEY_SCORE = "survey_score"
    SURVEY_REASON = "survey_reason"
    SURVEY_COMMENT = "survey_comment"


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
    Phrase.SUGGESTED_ARTICLES: {
        "en": "While an engineer looks at your ticket, these articles may already answer it. "
        "If one solves it, tell us and we will close the ticket.",
        "es": "Mientras un ingeniero revisa su ticket, estos artículos quizá ya lo resuelvan. "
        "Si alguno lo soluciona, indíquenoslo y cerraremos el ticket.",
        "pt": "Enquanto um engenheiro analisa seu chamado, estes artigos talvez já o resolvam. "
        "Se algum resolver, avise-nos e encerraremos o chamado.",
        "fr": "Pendant qu'un ingénieur examine votre ticket, ces articles y répondent peut-être déjà. "
        "Si l'un d'eux résout le problème, dites-le-nous et nous fermerons le ticket.",
        "de": "Während sich ein Techniker Ihr Ticket ansieht, beantworten diese Artikel es vielleicht "
        "schon. Wenn einer davon das Problem löst, sagen Sie es uns, und wir schließen das Ticket.",
        "it": "Mentre un tecnico esamina il suo ticket, questi articoli potrebbero già rispondere. "
        "Se uno di essi risolve il problema, ce lo dica e chiuderemo il ticket.",
        "nl": "Terwijl een engineer naar uw ticket kijkt, beantwoorden deze artikelen het misschien al. "
        "Als een ervan het oplost, laat het ons weten en sluiten we het ticket.",
        "ja": "エンジニアが確認している間に、こちらの記事で解決できるかもしれません。"
        "解決した場合はお知らせください。チケットをクローズします。",
        "zh": "在工程师处理您的工单期间，以下文章或许已经能解答您的问题。"
        "如果其中一篇解决了问题，请告诉我们，我们会关闭工单。",
        "ko": "엔지니어가 티켓을 확인하는 동안 아래 문서가 도움이 될 수 있습니다. "
        "문제가 해결되면 알려 주세요. 티켓을 종료하겠습니다.",
    },
    Phrase.MACHINE_TRANSLATED: {
        "en": "machine-translated",
        "es": "traducción automática",
        "pt": "tradução automática",
        "fr": "traduction automatique",
        "de": "maschinell übersetzt",
        "it": "traduzione automatica",
        "nl": "machinevertaling",
        "ja": "機械翻訳",
        "zh": "机器翻译",
        "ko": "기계 번역",
    },
    Phrase.SURVEY_SCORE: {
        "en": "How satisfied are you with the support you received? "
        "(1 = very unsatisfied, 5 = very satisfied)",
        "es": "¿Qué tan satisfecho está con el soporte recibido? (1 = muy insatisfecho, 5 = muy satisfecho)",
        "pt": "Quão satisfeito você está com o suporte recebido? "
        "(1 = muito insatisfeito, 5 = muito satisfeito)",
        "fr": "Êtes-vous satisfait de l'assistance reçue ? (1 = très insatisfait, 5 = très satisfait)",
        "de": "Wie zufrieden sind Sie mit dem erhaltenen Support? (1 = sehr unzufrieden, 5 = sehr zufrieden)",
        "it": "Quanto è soddisfatto dell'assistenza ricevuta? (1 = per niente, 5 = molto soddisfatto)",
        "nl": "Hoe tevreden bent u over de ondersteuning? (1 = zeer ontevreden, 5 = zeer tevreden)",
        "ja": "今回のサポートにどの程度満足されましたか？（1 = 非常に不満、5 = 非常に満足）",
        "zh": "您对本次获得的支持满意吗？（1 = 非常不满意，5 = 非常满意）",
        "ko": "받으신 지원에 얼마나 만족하셨나요? (1 = 매우 불만족, 5 = 매우 만족)",
    },
    Phrase.SURVEY_REASON: {
        "en": "What mattered most?",
        "es": "¿Qué fue lo más importante?",
        "pt": "O que foi mais importante?",
        "fr": "Qu'est-ce qui a le plus compté ?",
        "de": "Was war am wichtigsten?",
        "it": "Che cosa ha contato di più?",
        "nl": "Wat was het belangrijkst?",
        "ja": "最も重要だった点は何ですか？",
        "zh": "最重要的原因是什么？",
        "ko": "가장 중요했던 점은 무엇인가요?",
    },
    Phrase.SURVEY_COMMENT: {
        "en": "Anything else you would like to tell us?",
        "es": "¿Algo más que quiera contarnos?",
        "pt": "Há mais algo que queira nos contar?",
        "fr": "Souhaitez-vous nous dire autre chose ?",
        "de": "Möchten Sie uns noch etwas mitteilen?",
        "it": "Desidera dirci qualcos'altro?",
        "nl": "Wilt u ons nog iets vertellen?",
        "ja": "その他、お気づきの点があればお聞かせください。",
        "zh": "您还有其他想告诉我们的吗？",
        "ko": "그 밖에 전하고 싶은 말씀이 있으신가요?",
    },
}


def phrase_languages(phrase: Phrase) -> frozenset[str]:
    return frozenset(_CATALOGUE[phrase])


def say(phrase: Phrase, language: str | None, **values: str) -> tuple[str, str]:
    """The phrase in `language` (or English when we have no wording), and the language used."""
    wordings = _CATALOGUE[phrase]
    used = language if language in wordings else FALLBACK_LANGUAGE
    return wordings[used].format(**values), used
