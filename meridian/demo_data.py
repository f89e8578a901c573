"""Demo directory: three regions, a dozen agents with languages, skills and shifts, a few customers.

Loaded by `meridian dev` (idempotently) so a fresh install has someone to route tickets to.
The shifts cover every hour of every day: each region's shared weekday pattern, plus weekend
and late cover worked as the agents' own shifts.
"""

from __future__ import annotations

from datetime import date, time

import asyncpg

from db import directory, kb, rosters
from domain.directory import AgentFields, CustomerFields, Region
from domain.enums import CustomerTier, LanguageLevel
from domain.kb import KbStatus
from domain.rosters import ShiftPatternFields
from domain.routing import AgentLanguage, Shift

REGIONS = [
    Region(id="americas", name="Americas", timezone="America/New_York"),
    Region(id="emea", name="EMEA", timezone="Europe/Dublin"),
    Region(id="apac", name="APAC", timezone="Asia/Singapore"),
]

WEEKDAYS = Shift(days=[1, 2, 3, 4, 5], start=time(8), end=time(17))
EVERY_DAY_ALL_DAY = Shift(days=[1, 2, 3, 4, 5, 6, 7], start=time(0), end=time(0))
NIGHTS = Shift(days=[1, 2, 3, 4, 5, 6, 7], start=time(17), end=time(8))
# Each region's weekday agents share one named pattern, so a change of hours is made once.
SHIFT_PATTERNS = {
    f"{region.id}-weekdays": ShiftPatternFields(
        name=f"{region.name} weekdays 08:00-17:00",
        region_id=region.id,
        anchor=date(2026, 1, 5),
        weeks=[[WEEKDAYS]],
    )
    for region in REGIONS
}

N, F = LanguageLevel.NATIVE, LanguageLevel.FLUENT
ALL_MODULES = ["general", "authentication", "billing", "api", "mobile", "video", "database", "networking"]


def _agent(
    name: str,
    region: str,
    languages: dict[str, LanguageLevel],
    skills: dict[str, int],
    shift: Shift = WEEKDAYS,
    capacity: int = 5,
    roles: tuple[str, ...] = (),
) -> AgentFields:
    return AgentFields(
        name=name,
        email=f"{name.split()[0].lower()}@meridian.example",
        region_id=region,
        languages=[AgentLanguage(code=c, level=lvl) for c, lvl in languages.items()],
        skills=skills,
        capacity=capacity,
        shift=shift,
        shift_pattern_id=f"{region}-weekdays" if shift == WEEKDAYS else None,
        roles=list(roles),
    )


AGENTS = {
    "ana": _agent(
        "Ana Souza", "americas", {"pt": N, "es": F, "en": F}, {"billing": 4, "general": 3, "mobile": 3}
    ),
    "mateo": _agent("Mateo García", "americas", {"es": N, "en": F}, {"api": 4, "database": 3, "general": 3}),
    "olivia": _agent(
        "Olivia Brown",
        "americas",
        {"en": N, "fr": F},
        {"authentication": 5, "networking": 4, "general": 4},
        roles=("lead", "manager"),
    ),
    "sam": _agent(
        "Sam Rivera", "americas", {"en": N, "es": N}, dict.fromkeys(ALL_MODULES, 3), shift=NIGHTS, capacity=8
    ),
    "lena": _agent("Lena Fischer", "emea", {"de": N, "en": F}, {"database": 5, "api": 3, "general": 3}),
    "camille": _agent(
        "Camille Martin", "emea", {"fr": N, "en": F, "es": F}, {"billing": 4, "video": 3, "general": 3}
    ),
    "liam": _agent(
        "Liam O'Brien",
        "emea",
        {"en": N},
        {"networking": 5, "authentication": 3, "general": 4},
        roles=("lead", "manager", "sre"),
    ),
    "sofia": _agent(
        "Sofia Rossi",
        "emea",
        {"en": F, "es": F, "pt": F, "fr": F, "de": F},
        dict.fromkeys(ALL_MODULES, 3),
        shift=EVERY_DAY_ALL_DAY,
        capacity=10,
    ),
    "kenji": _agent(
        "Kenji Tanaka",
        "apac",
        {"ja": N, "en": F},
        {"video": 5, "mobile": 4, "general": 3},
        roles=("lead", "manager"),
    ),
    "wei": _agent("Wei Zhang", "apac", {"zh": N, "en": F}, {"api": 4, "mobile": 4, "general": 3}),
    "minjun": _agent(
        "Min-jun Kim", "apac", {"ko": N, "en": F, "ja": F}, {"authentication": 4, "database": 3, "general": 3}
    ),
    "priya": _agent(
        "Priya Nair",
        "apac",
        {"en": N, "zh": F, "ja": F, "ko": F},
        dict.fromkeys(ALL_MODULES, 3),
        shift=EVERY_DAY_ALL_DAY,
        capacity=10,
        roles=("sre",),
    ),
}

CUSTOMERS = {
    "acme": CustomerFields(
        name="Acme Corp",
        email="it@acme.example",
        tier=CustomerTier.ENTERPRISE,
        language="en",
        region_id="americas",
    ),
    "globex-es": CustomerFields(
        name="Globex España",
        email="soporte@globex.example",
        tier=CustomerTier.BUSINESS,
        language="es",
        region_id="emea",
    ),
    "sakura": CustomerFields(
        name="Sakura Media",
        email="ops@sakura.example",
        tier=CustomerTier.ENTERPRISE,
        language="ja",
        region_id="apac",
    ),
    "hanbit": CustomerFields(
        name="Hanbit Games",
        email="dev@hanbit.example",
        tier=CustomerTier.STANDARD,
        language="ko",
        region_id="apac",
    ),
    "dragon": CustomerFields(
        name="Dragon Pay",
        email="tech@dragonpay.example",
        tier=CustomerTier.BUSINESS,
        language="zh",
        region_id="apac",
    ),
    "nordwind": CustomerFields(
        name="Nordwind GmbH",
        email="it@nordwind.example",
        tier=CustomerTier.STANDARD,
        language="de",
        region_id="emea",
    ),
}


# A few published articles, so a new demo ticket shows suggestions (the worker's housekeeping
# sweep indexes them within a minute of start).
ARTICLES = [
    (
        "video",
        "Video playback stops after a few seconds",
        "If playback stops or freezes after a few seconds, the player cache is full. Clear the cache "
        "in Settings > Storage, then update the video SDK to 4.2 or later.",
    ),
    (
        "billing",
        "Your invoice total looks wrong",
        "Invoices are issued in the currency and VAT rate of the billing account. If the total looks "
        "wrong, check the account's country and VAT number under Billing > Details; a support engineer "
        "can reissue the invoice once they are corrected.",
    ),
    (
        "authentication",
        "You cannot sign in with single sign-on",
        "Sign-in with SSO fails when the identity provider's certificate has expired or the SAML "
        "audience does not match. Upload the new certificate under Security > SSO and retry.",
    ),
]


async def load_demo_directory(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        for region in REGIONS:
            await directory.upsert_region(conn, region)
        for pattern_id, pattern in SHIFT_PATTERNS.items():
            if not await rosters.insert_pattern(conn, pattern_id, pattern):
                await rosters.update_pattern(conn, pattern_id, pattern)
        for agent_id, fields in AGENTS.items():
            await directory.upsert_agent(conn, agent_id, fields)
        for customer_id, fields in CUSTOMERS.items():
            await directory.upsert_customer(conn, customer_id, fields)
        if not await conn.fetchval("SELECT count(*) FROM kb_articles"):
            for module, title, body in ARTICLES:
                article = await kb.create_article(
                    conn, module=module, source_language="en", title=title, body=body, edited_by="demo"
                )
                for status in (KbStatus.IN_REVIEW, KbStatus.PUBLISHED):
                    await kb.set_article_status(conn, article.id, status)
