"""The small vocabularies every layer shares."""

from __future__ import annotations

from enum import StrEnum


class Priority(StrEnum):
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"

    @property
    def rank(self) -> int:
        return int(self.value[1])

    @classmethod
    def from_rank(cls, rank: int) -> Priority:
        return cls(f"P{min(max(rank, 1), 4)}")


class TicketStatus(StrEnum):
    NEW = "new"
    QUEUED = "queued"
    OPEN = "open"
    PENDING_CUSTOMER = "pending_customer"
    RESOLVED = "resolved"
    CLOSED = "closed"


class CustomerTier(StrEnum):
    ENTERPRISE = "enterprise"
    BUSINESS = "business"
    STANDARD = "standard"


class Role(StrEnum):
    ADMIN = "admin"
    AGENT = "agent"
    CUSTOMER = "customer"
    INTEGRATION = "integration"


class ActorType(StrEnum):
    CUSTOMER = "customer"
    AGENT = "agent"
    SYSTEM = "system"
    ADMIN = "admin"
    INTEGRATION = "integration"


class LanguageLevel(StrEnum):
    NATIVE = "native"
    FLUENT = "fluent"
