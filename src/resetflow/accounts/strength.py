"""How many guesses a password would take, by zxcvbn's estimate (R56).

The common-password list (passwords.py) refuses what attackers try first, word for
word; it cannot see ``password12345678``, ``qwertyuiopasdfgh`` or the user's name with
digits added. zxcvbn can: it splits a password into dictionary words (its frequency
lists plus the user's own name, email and phone, given as ``user_inputs``), keyboard
walks, repeats, sequences, dates and digits, and estimates the guesses an attacker
who knows those patterns needs. Passwords under ``min_guesses`` (10^10 by default, the
floor) are refused with zxcvbn's own hint.

Cost: zxcvbn's matching grows faster than linearly with the length (tens of ms for a
40-character passphrase, a few hundred ms at 64 on a loaded machine:
docs/performance.md), so :meth:`StrengthEstimator.weakness` is called in a worker
thread, and the estimate reads at most the first ``ESTIMATE_CHARS`` (64) characters,
the length every password must be allowed to have (R34): a password is estimated whole
up to there, and a longer one by its first 64 characters, which only ever
under-estimates it (more characters never make a password easier to guess).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable

from zxcvbn import zxcvbn

# R56: under 10^10 guesses is refused; a deployment may ask for more, never less.
MIN_GUESSES_FLOOR = 1e10
ESTIMATE_CHARS = 64
_FALLBACK_HINT = (
    "This password is easy to guess. Add another word or two; uncommon words are better."
)


def personal_inputs(personal: Iterable[str | None]) -> list[str]:
    """The user's data as zxcvbn dictionary entries: each value whole and its parts (the
    name's words, the email's local part, its words and domain labels, the phone's
    digits and their last 4 to 10)."""
    inputs: set[str] = set()
    for item in personal:
        if not item:
            continue
        value = item.strip().casefold()
        inputs.add(value)
        local, _, domain = value.partition("@") if "@" in value else (value, "", "")
        inputs.add(local)
        inputs.update(part for part in re.split(r"[^\w]+|_", local) if len(part) >= 2)
        inputs.update(label for label in domain.split(".") if len(label) >= 3)
        digits = re.sub(r"\D", "", value)
        if len(digits) >= 6 and len(digits) >= len(value) - 3:
            inputs.add(digits)
            inputs.update(digits[-n:] for n in range(4, min(len(digits), 10) + 1))
    return sorted(part for part in inputs if part)


class StrengthEstimator:
    def __init__(self, *, min_guesses: float = MIN_GUESSES_FLOOR) -> None:
        if min_guesses < MIN_GUESSES_FLOOR:
            raise ValueError(f"min_guesses may not be below {MIN_GUESSES_FLOOR:g}")
        self.min_guesses = min_guesses

    def weakness(self, password: str, personal: Iterable[str | None] = ()) -> str | None:
        """zxcvbn's hint when ``password`` takes under ``min_guesses`` guesses, else
        ``None``. CPU-bound (milliseconds to hundreds of them): call it off the event
        loop, as :meth:`check` does."""
        sample = password[:ESTIMATE_CHARS]
        result = zxcvbn(sample, user_inputs=personal_inputs(personal), max_length=ESTIMATE_CHARS)
        if float(result["guesses"]) >= self.min_guesses:
            return None
        feedback = result.get("feedback") or {}
        parts = [str(feedback.get("warning") or "").strip()]
        parts.extend(str(hint).strip() for hint in feedback.get("suggestions") or ())
        hint = " ".join(part for part in parts if part)
        return hint or _FALLBACK_HINT

    async def check(self, password: str, personal: Iterable[str | None] = ()) -> str | None:
        """:meth:`weakness` in a worker thread, so that other requests go on meanwhile."""
        return await asyncio.to_thread(self.weakness, password, tuple(personal))
