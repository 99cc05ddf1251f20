"""SMS pumping defences, checked by the worker just before an SMS would go out.

A refused SMS is not an error: the worker records why in the delivery log and moves on
to the person's next verified channel (usually email).
"""

from __future__ import annotations

import phonenumbers

from resetflow.config import NO_SMS_REGION
from resetflow.ratelimit import RateLimiter


def region_of(phone: str) -> str | None:
    """The ISO 3166 region of an E.164 number (``None`` when unknown)."""
    region: str | None = phonenumbers.region_code_for_number(phonenumbers.parse(phone))
    return region


def sms_refused(phone: str, allowed: frozenset[str]) -> str | None:
    """Why a person cannot have codes by SMS at ``phone``, as a sentence for them, or
    ``None``. ``allowed``: RESETFLOW_SMS_ALLOWED_COUNTRIES (empty: every region), or
    ``{"none"}`` when RESETFLOW_SMS_PROVIDER=none switches SMS off. The one home of the
    rule for sign-up, contact changes and the worker."""
    if not allowed:
        return None
    if NO_SMS_REGION in allowed:
        return "This service does not send text messages."
    if region_of(phone) in allowed:
        return None
    return "We cannot send text messages to this country."


class SmsGuard:
    def __init__(self, *, limiter: RateLimiter, allowed_regions: frozenset[str] = frozenset()):
        """``allowed_regions``: ISO 3166 codes SMS may go to; empty allows every region."""
        self._limiter = limiter
        self._allowed = allowed_regions

    async def refusal(self, phone: str) -> str | None:
        """Why an SMS to ``phone`` may not be sent now, or ``None`` (and it is counted)."""
        if sms_refused(phone, self._allowed):
            return f"SMS to region {region_of(phone)} is not allowed"
        return await self._limiter.allow_sms(phone)
