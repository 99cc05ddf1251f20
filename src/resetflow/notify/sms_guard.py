"""SMS pumping defences, checked by the worker just before an SMS would go out.

A refused SMS is not an error: the worker records why in the delivery log and moves on
to the person's next verified channel (usually email).
"""

from __future__ import annotations

import phonenumbers

from resetflow.ratelimit import RateLimiter


class SmsGuard:
    def __init__(self, *, limiter: RateLimiter, allowed_regions: frozenset[str] = frozenset()):
        """``allowed_regions``: ISO 3166 codes SMS may go to; empty allows every region."""
        self._limiter = limiter
        self._allowed = allowed_regions

    async def refusal(self, phone: str) -> str | None:
        """Why an SMS to ``phone`` may not be sent now, or ``None`` (and it is counted)."""
        if self._allowed:
            region = phonenumbers.region_code_for_number(phonenumbers.parse(phone))
            if region not in self._allowed:
                return f"SMS to region {region} is not allowed"
        return await self._limiter.allow_sms(phone)
