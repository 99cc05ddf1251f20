"""How an SMS text travels: GSM-7 or UCS-2, and how many segments it costs.

A text made only of characters of the GSM 03.38 default alphabet (3GPP TS 23.038) is sent
in GSM-7: 7-bit septets, 160 in a single message. Characters of the extension table
(``^ { } \\ [ ~ ] | €`` and form feed) are sent as an escape septet plus one, so they
count 2. Any other character (``á``, ``ç``, ``👋``…) sends the whole text as UCS-2:
16-bit units, 70 in a single message; carriers carry characters beyond the BMP (emoji) as
UTF-16 surrogate pairs, 2 units each.

A longer text is split into parts that each give up room to the concatenation header
(6 bytes): 153 septets or 67 units per part. An escape sequence or a surrogate pair is
never split across two parts, so a part may hold one less than that.

No library: the table is fixed by the standard and the arithmetic is a few lines
(``gsm0338`` on PyPI is a codec and counts no segments; ``smsutil`` is unmaintained).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# GSM 03.38 default alphabet, in table order (0x00-0x7F); 0x1B (escape) is left out.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
# The extension table: each is sent as escape + character, two septets.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE = 160
GSM7_PART = 153
UCS2_SINGLE = 70
UCS2_PART = 67


class SmsEncoding(StrEnum):
    GSM7 = "GSM-7"
    UCS2 = "UCS-2"


@dataclass(frozen=True, slots=True)
class SmsInfo:
    """``length`` is in septets for GSM-7 (extension characters count 2) and in UTF-16
    code units for UCS-2."""

    encoding: SmsEncoding
    length: int
    segments: int

    @property
    def unit_name(self) -> str:
        return "characters" if self.encoding is SmsEncoding.GSM7 else "units"

    def describe(self) -> str:
        return (
            f"encoding: {self.encoding.value}, {self.unit_name}: {self.length}, "
            f"segments: {self.segments}"
        )


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def _costs(text: str, encoding: SmsEncoding) -> list[int]:
    """What each character takes: septets (GSM-7) or UTF-16 code units (UCS-2)."""
    if encoding is SmsEncoding.GSM7:
        return [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    return [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def analyse(text: str) -> SmsInfo:
    """The encoding, length and segment count of ``text`` as an SMS."""
    encoding = SmsEncoding.GSM7 if is_gsm7(text) else SmsEncoding.UCS2
    costs = _costs(text, encoding)
    length = sum(costs)
    single, part = (
        (GSM7_SINGLE, GSM7_PART) if encoding is SmsEncoding.GSM7 else (UCS2_SINGLE, UCS2_PART)
    )
    if length == 0:
        return SmsInfo(encoding=encoding, length=0, segments=0)
    if length <= single:
        return SmsInfo(encoding=encoding, length=length, segments=1)
    # Fill parts in order; a two-septet / two-unit character that does not fit whole
    # starts the next part.
    segments, used = 1, 0
    for cost in costs:
        if used + cost > part:
            segments, used = segments + 1, 0
        used += cost
    return SmsInfo(encoding=encoding, length=length, segments=segments)
