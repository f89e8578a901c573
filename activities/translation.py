"""Machine translation through LibreTranslate or DeepL, with a PostgreSQL cache and a glossary.

Each provider call retries 429 (after Retry-After) and 5xx a few times with backoff, so a short
hiccup costs seconds rather than an activity retry. What is still failing after that, and timeouts
and connection errors, is `TranslationUnavailable`: the activity lets Temporal retry it. Any other
non-success answer (a bad key, an unsupported language, an exhausted quota) is `TranslationRejected`
and fails the activity for good. Without a provider the activity answers with the original text and
says so, so a ticket can show that nothing was translated rather than fail.
"""

from __future__ import annotations

import asyncio
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Literal

import asyncpg
import httpx
import structlog
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db import translations
from domain.translation import (
    AUTO,
    NO_PROVIDER,
    TranslationRequest,
    TranslationResult,
    glossary_pattern,
    language_key,
    protect,
    same_language,
    text_hash,
)

log = structlog.get_logger(__name__)

ERROR_BODY_CHARS = 200


class TranslationSettings(BaseModel):
    translation_provider: Literal["none", "libretranslate", "deepl"] = "none"
    libretranslate_url: str | None = None
    libretranslate_api_key: str | None = None
    deepl_url: str = "https://api-free.deepl.com"
    deepl_auth_key: str | None = None
    translation_timeout: float = 10.0  # seconds, per HTTP request


# --- errors -----------------------------------------------------------------------------------


class TranslationError(Exception):
    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class TranslationRejected(TranslationError):
    """The provider refused the request; asking again will not change its mind."""


class TranslationUnavailable(TranslationError):
    """The provider could not answer now; `retry_after` is when it asked to be called again."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: timedelta | None = None):
        super().__init__(message, status=status)
        self.retry_after = retry_after


# --- providers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3  # requests per batch, the first one included
    backoff: float = 0.5  # seconds before the first retry, doubled for each one after
    max_backoff: float = 4.0
    # A longer Retry-After is not slept through inside the activity: Temporal waits instead.
    max_wait: float = 10.0


def retry_after(response: httpx.Response, now: datetime | None = None) -> timedelta | None:
    """Retry-After as delay-seconds or an HTTP date."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return timedelta(seconds=int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when - (now or datetime.now(UTC)), timedelta(0))


def _answer(response: httpx.Response) -> str:
    """The provider's own words: LibreTranslate says `error`, DeepL says `message`."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            if isinstance(body.get(key), str):
                return " ".join(body[key].split())[:ERROR_BODY_CHARS]
    return " ".join(response.text.split())[:ERROR_BODY_CHARS]


class Translator(ABC):
    """Translates a batch of texts, answering in the same order."""

    name: ClassVar[str]

    @abstractmethod
    async def translate(self, texts: list[str], source: str | None, target: str) -> list[str]: ...


class HttpTranslator(Translator):
    batch_size: ClassVar[int]

    def __init__(
        self, http: httpx.AsyncClient, url: str, *, timeout: float = 10.0, retry: RetryPolicy | None = None
    ):
        self.http = http
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retry = retry or RetryPolicy()

    async def translate(self, texts: list[str], source: str | None, target: str) -> list[str]:
        translated: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            translated += await self._translate_batch(batch, source, target)
        return translated

    @abstractmethod
    async def _translate_batch(self, texts: list[str], source: str | None, target: str) -> list[str]: ...

    async def _post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        policy = self.retry
        for attempt in range(1, policy.attempts + 1):
            try:
                response = await self.http.post(
                    self.url + path, json=body, headers=headers, timeout=self.timeout
                )
            except httpx.TimeoutException as err:
                raise TranslationUnavailable(
                    f"{self.name} did not answer within {self.timeout:g} s ({type(err).__name__})"
                ) from err
            except httpx.TransportError as err:
                raise TranslationUnavailable(f"{self.name} unreachable: {type(err).__name__}: {err}") from err
            if response.is_success:
                try:
                    return response.json()
                except ValueError as err:
                    raise TranslationRejected(
                        f"{self.name} answered {response.status_code} without JSON: {_answer(response)}",
                        status=response.status_code,
                    ) from err

            status = response.status_code
            error = f"{self.name} answered {status}"
            answer = _answer(response)
            if answer:
                error += f": {answer}"
            if status != 429 and status < 500:
                raise TranslationRejected(error, status=status)
            asked = retry_after(response)
            if attempt == policy.attempts or (asked is not None and asked.total_seconds() > policy.max_wait):
                raise TranslationUnavailable(error, status=status, retry_after=asked)
            if asked is not None:
                wait = asked.total_seconds()
            else:
                # Jitter keeps workers that failed together from retrying together.
                wait = min(policy.max_backoff, policy.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1)
            log.warning("translation provider busy, retrying", provider=self.name, status=status, wait=wait)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _malformed(self, body: Any) -> TranslationRejected:
        return TranslationRejected(
            f"{self.name} answered with an unexpected body: {str(body)[:ERROR_BODY_CHARS]}"
        )


class LibreTranslate(HttpTranslator):
    """`POST /translate`; `q` is a string, or a list for a batch (answered with a list)."""

    name = "libretranslate"
    batch_size = 25  # public instances limit batches; self-hosted ones default to no limit

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
    ):
        super().__init__(http, url, timeout=timeout, retry=retry)
        self.api_key = api_key

    async def _translate_batch(self, texts: list[str], source: str | None, target: str) -> list[str]:
        # A single text goes as a string: every LibreTranslate version understands that.
        body: dict[str, Any] = {
            "q": texts[0] if len(texts) == 1 else texts,
            "source": source or AUTO,
            "target": target,
            "format": "text",
        }
        if self.api_key:
            body["api_key"] = self.api_key
        answer = await self._post("/translate", body)
        translated = answer.get("translatedText") if isinstance(answer, dict) else None
        if len(texts) == 1 and isinstance(translated, str):
            return [translated]
        if (
            not isinstance(translated, list)
            or len(translated) != len(texts)
            or not all(isinstance(t, str) for t in translated)
        ):
            raise self._malformed(answer)
        return translated


# DeepL wants a regional variant for these targets; the bare codes are deprecated.
DEEPL_TARGETS = {
    "EN": "EN-US",
    "PT": "PT-BR",
    "ZH": "ZH-HANS",
    "ZH-CN": "ZH-HANS",
    "ZH-SG": "ZH-HANS",
    "ZH-TW": "ZH-HANT",
    "ZH-HK": "ZH-HANT",
}


def deepl_target(code: str) -> str:
    upper = code.strip().replace("_", "-").upper()
    return DEEPL_TARGETS.get(upper, upper)


def deepl_source(code: str) -> str:
    """Source languages have no variants at DeepL: `en-GB` is read as `EN`."""
    return code.strip().replace("_", "-").upper().split("-")[0]


class DeepL(HttpTranslator):
    """DeepL API v2, `POST /v2/translate` with a JSON body and the `DeepL-Auth-Key` header."""

    name = "deepl"
    batch_size = 50  # DeepL's limit of texts per request

    def __init__(
        self,
        http: httpx.AsyncClient,
        auth_key: str,
        url: str = "https://api-free.deepl.com",
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
    ):
        super().__init__(http, url, timeout=timeout, retry=retry)
        self.auth_key = auth_key

    async def _translate_batch(self, texts: list[str], source: str | None, target: str) -> list[str]:
        body: dict[str, Any] = {"text": texts, "target_lang": deepl_target(target)}
        if source:
            body["source_lang"] = deepl_source(source)
        headers = {"Authorization": f"DeepL-Auth-Key {self.auth_key}"}
        answer = await self._post("/v2/translate", body, headers)
        items = answer.get("translations") if isinstance(answer, dict) else None
        if not isinstance(items, list) or len(items) != len(texts):
            raise self._malformed(answer)
        translated = [item.get("text") if isinstance(item, dict) else None for item in items]
        if not all(isinstance(t, str) for t in translated):
            raise self._malformed(answer)
        return translated


def translator_from_settings(
    http: httpx.AsyncClient, settings: TranslationSettings, retry: RetryPolicy | None = None
) -> Translator | None:
    """None when no provider is configured; a provider chosen without its URL or key is a mistake
    the worker refuses to start with, rather than a failure on every ticket."""
    match settings.translation_provider:
        case "libretranslate":
            if not settings.libretranslate_url:
                raise ValueError("MERIDIAN_LIBRETRANSLATE_URL is required for the libretranslate provider")
            return LibreTranslate(
                http,
                settings.libretranslate_url,
                settings.libretranslate_api_key or None,
                timeout=settings.translation_timeout,
                retry=retry,
            )
        case "deepl":
            if not settings.deepl_auth_key:
                raise ValueError("MERIDIAN_DEEPL_AUTH_KEY is required for the deepl provider")
            return DeepL(
                http,
                settings.deepl_auth_key,
                settings.deepl_url,
                timeout=settings.translation_timeout,
                retry=retry,
            )
    return None


# --- glossary and cache around a provider -----------------------------------------------------


class TranslationService:
    """Protects glossary terms, serves what the cache knows and asks the provider only for the rest.

    The cache holds texts as sent (placeholders included) and the provider's answer before the terms
    are put back, so one entry serves every text that differs only in its protected terms.
    """

    def __init__(self, pool: asyncpg.Pool, translator: Translator | None):
        self.pool = pool
        self.translator = translator

    async def translate(self, texts: list[str], source: str | None, target: str) -> list[TranslationResult]:
        if language_key(source) == AUTO:
            source = None
        results = [
            TranslationResult(
                text=text,
                source=source,
                target=target,
                provider=self.translator.name if self.translator else NO_PROVIDER,
                machine_translated=False,
            )
            for text in texts
        ]
        if self.translator is None:
            for result in results:
                result.note = "no translation provider configured"
            return results
        if same_language(source, target):
            for result in results:
                result.note = "already in the target language"
            return results
        wanted = [i for i, text in enumerate(texts) if text.strip()]
        for i in set(range(len(texts))) - set(wanted):
            results[i].note = "nothing to translate"
        if not wanted:
            return results

        provider = self.translator.name
        source_key, target_key = language_key(source), language_key(target)
        async with self.pool.acquire() as conn:
            pattern = glossary_pattern(t.term for t in await translations.list_glossary_terms(conn))
            protected = {i: protect(texts[i], pattern) for i in wanted}
            sent = {text_hash(p.text): p.text for p in protected.values()}
            known = await translations.get_cached(conn, provider, source_key, target_key, sent)

        misses = [h for h in sent if h not in known]  # dict order: first appearance, duplicates once
        fresh: dict[str, str] = {}
        if misses:
            answers = await self.translator.translate([sent[h] for h in misses], source, target)
            fresh = dict(zip(misses, answers, strict=True))
            async with self.pool.acquire() as conn:
                await translations.put_cached(
                    conn, provider, source_key, target_key, [(h, sent[h], fresh[h]) for h in misses]
                )

        for i, guarded in protected.items():
            key = text_hash(guarded.text)
            answer = known[key] if key in known else fresh[key]
            dropped = guarded.missing(answer)
            if dropped:
                log.warning("translation dropped glossary terms", provider=provider, terms=dropped)
            result = results[i]
            result.text = guarded.restore(answer)
            result.machine_translated = True
            result.cached = key in known
        return results


# --- the activity -----------------------------------------------------------------------------


class TranslationActivities:
    def __init__(self, pool: asyncpg.Pool, translator: Translator | None):
        self.service = TranslationService(pool, translator)

    @activity.defn(name="translate_text")
    async def translate_text(self, request: TranslationRequest) -> TranslationResult:
        try:
            [result] = await self.service.translate([request.text], request.source, request.target)
        except TranslationRejected as err:
            raise ApplicationError(str(err), type="TranslationRejected", non_retryable=True) from err
        except TranslationUnavailable as err:
            raise ApplicationError(
                str(err), type="TranslationUnavailable", next_retry_delay=err.retry_after
            ) from err
        # The activity's meter, not prometheus_client: it lands on the worker's one /metrics endpoint.
        activity.metric_meter().create_counter(
            "meridian_translations",
            "Texts through translate_text, by provider and where the answer came from",
        ).add(1, {"provider": result.provider, "outcome": translation_outcome(result)})
        return result


def translation_outcome(result: TranslationResult) -> str:
    """'cache' and 'provider' split what the cache saves; 'untranslated' is sent back as written."""
    if not result.machine_translated:
        return "untranslated"
    return "cache" if result.cached else "provider"
