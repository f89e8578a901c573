"""Language detection: a script check for CJK, then lingua restricted to the languages we serve."""

from __future__ import annotations

import threading
import unicodedata

from lingua import IsoCode639_1, Language, LanguageDetector, LanguageDetectorBuilder
from pydantic import BaseModel

# Below this confidence the ticket is routed on the customer's profile language instead.
CONFIDENCE_THRESHOLD = 0.5


class DetectedLanguage(BaseModel):
    code: str
    confidence: float
    method: str


def _script_language(text: str) -> str | None:
    """Hangul is only Korean and kana only Japanese; Han alone is taken as Chinese."""
    has_han = False
    for ch in text:
        name = unicodedata.name(ch, "")
        if name.startswith("HANGUL"):
            return "ko"
        if name.startswith(("HIRAGANA", "KATAKANA")):
            return "ja"
        if name.startswith("CJK UNIFIED IDEOGRAPH"):
            has_han = True
    return "zh" if has_han else None


class LanguageDetectorService:
    """Loads the lingua models once (about half a second and ~200 MB for eight languages)."""

    def __init__(self, languages: list[str]):
        self.languages = languages
        self._detector: LanguageDetector | None = None
        self._lock = threading.Lock()

    def _load(self) -> LanguageDetector:
        with self._lock:
            if self._detector is None:
                wanted = [
                    Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper()))
                    for code in self.languages
                ]
                self._detector = (
                    LanguageDetectorBuilder.from_languages(*wanted).with_preloaded_language_models().build()
                )
            return self._detector

    def warm_up(self) -> None:
        self._load()

    def detect(self, text: str) -> DetectedLanguage | None:
        scripted = _script_language(text)
        if scripted is not None and scripted in self.languages:
            return DetectedLanguage(code=scripted, confidence=1.0, method="script")
        values = self._load().compute_language_confidence_values(text)
        if not values:
            return None
        best = values[0]
        return DetectedLanguage(
            code=best.language.iso_code_639_1.name.lower(), confidence=round(best.value, 3), method="lingua"
        )
