"""What every account flow works with, built once in services.py and shared.

Sign-up (:class:`~resetflow.accounts.service.AccountService`), recovery
(:class:`~resetflow.recovery.service.RecoveryService`) and contact changes
(:class:`~resetflow.accounts.contact_change.ContactChangeService`) all write through the
same database, codes, outbox, audit trail, limits and events, and check passwords with
the same hasher. They take these as one :class:`FlowKit`, beside only what is their own
(the password policy, the session store, the contact rules), so that a collaborator
added to every flow is added in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from resetflow.accounts.passwords import PasswordHasher
from resetflow.audit import AuditLog
from resetflow.clock import Clock
from resetflow.notify.events import Events
from resetflow.notify.outbox import Outbox
from resetflow.ratelimit import RateLimiter
from resetflow.recovery.codes import OneTimeCodes
from resetflow.storage.database import Database


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowKit:
    database: Database
    codes: OneTimeCodes
    outbox: Outbox
    hasher: PasswordHasher
    clock: Clock
    audit: AuditLog
    limiter: RateLimiter
    base_url: str  # RESETFLOW_BASE_URL, for links in messages
    events: Events = field(default_factory=Events.disabled)  # for the host app


class FlowService:
    """Base of the flow services: holds the kit's parts under the names their methods
    use, and nothing else (no behaviour is inherited)."""

    def __init__(self, *, kit: FlowKit) -> None:
        self._db = kit.database
        self._codes = kit.codes
        self._outbox = kit.outbox
        self._hasher = kit.hasher
        self._clock = kit.clock
        self._audit = kit.audit
        self._limiter = kit.limiter
        self._base_url = kit.base_url
        self._events = kit.events
