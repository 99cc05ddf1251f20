"""SMS encoding and segment counts, checked by hand against GSM 03.38 / 3GPP TS 23.038.

Single message: 160 GSM-7 septets or 70 UCS-2 units. Concatenated: each part loses 6
bytes to the header, leaving 153 septets (134 bytes * 8 / 7 = 153.1) or 67 units
(134 bytes / 2).
"""

from __future__ import annotations

import pytest

from resetflow.notify.sms_encoding import SmsEncoding, analyse, is_gsm7

TUTORIAL_RESET_SMS = "Hi there Ada 👋 Your password reset token is: 123456"


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)],
)
def test_gsm7_segments_at_the_boundaries(length: int, segments: int) -> None:
    """160 septets fit one SMS; above that, parts of 153:
    161 = 153 + 8 -> 2; 306 = 2 * 153 -> 2; 307 = 2 * 153 + 1 -> 3;
    459 = 3 * 153 -> 3; 460 -> 4."""
    info = analyse("a" * length)
    assert info.encoding is SmsEncoding.GSM7
    assert (info.length, info.segments) == (length, segments)


def test_an_extension_character_counts_two_septets() -> None:
    """'€' is ESC + 0x65: 2 septets. '€' + 158 'a' = 2 + 158 = 160 -> 1 segment;
    '€' + 159 'a' = 161 -> 2 segments. Each of ^ { } \\ [ ~ ] | and form feed too."""
    assert analyse("€" + "a" * 158).length == 160
    assert analyse("€" + "a" * 158).segments == 1
    assert analyse("€" + "a" * 159).length == 161
    assert analyse("€" + "a" * 159).segments == 2
    for char in "^{}\\[~]|€\f":
        info = analyse(char)
        assert (info.encoding, info.length) == (SmsEncoding.GSM7, 2), repr(char)


def test_an_escape_sequence_is_never_split_across_parts() -> None:
    """152 'a' + '€' + 152 'a' = 152 + 2 + 152 = 306 septets, which would be 2 parts of
    153 if '€' could be cut in half; it cannot: part 1 = 152 (the 2 septets of '€' do not
    fit in the last one), part 2 = 2 + 151 = 153, part 3 = 1 -> 3 segments."""
    info = analyse("a" * 152 + "€" + "a" * 152)
    assert (info.encoding, info.length, info.segments) == (SmsEncoding.GSM7, 306, 3)


def test_tutorial_reset_sms_is_ucs2_with_52_units_in_one_segment() -> None:
    """'Hi there Ada ' is 13 characters, '👋' (U+1F44B, outside the BMP) is a surrogate
    pair = 2 units, ' Your password reset token is: 123456' is 37 characters:
    13 + 2 + 37 = 52 UTF-16 units (51 code points) <= 70 -> UCS-2, 1 segment."""
    assert len(TUTORIAL_RESET_SMS) == 51
    info = analyse(TUTORIAL_RESET_SMS)
    assert (info.encoding, info.length, info.segments) == (SmsEncoding.UCS2, 52, 1)
    assert info.describe() == "encoding: UCS-2, units: 52, segments: 1"
    # Without the emoji (both spaces kept): 13 + 37 = 50 characters, all GSM-7.
    plain = TUTORIAL_RESET_SMS.replace("👋", "")
    assert analyse(plain).describe() == "encoding: GSM-7, characters: 50, segments: 1"


@pytest.mark.parametrize(
    ("text", "units", "segments"),
    [
        ("á" + "a" * 69, 70, 1),  # 70 units: a single SMS
        ("á" + "a" * 70, 71, 2),  # 71 > 70: 67 + 4 -> 2
        ("á" + "a" * 133, 134, 2),  # 2 * 67 -> 2
        ("á" + "a" * 134, 135, 3),  # 2 * 67 + 1 -> 3
        ("👋" * 35, 70, 1),  # 35 surrogate pairs = 70 units -> 1
        ("👋" * 36, 72, 2),  # 72 units: 33 pairs (66) + 3 pairs (6) -> 2
    ],
)
def test_ucs2_segments_count_utf16_units(text: str, units: int, segments: int) -> None:
    """One character outside GSM 03.38 ('á' is not in it; 'à' and 'é' are) makes the
    whole text UCS-2: 70 units single, 67 per part."""
    info = analyse(text)
    assert (info.encoding, info.length, info.segments) == (SmsEncoding.UCS2, units, segments)


def test_a_surrogate_pair_is_never_split_across_parts() -> None:
    """66 'á…' units + '👋' + 66 'a': 66 + 2 + 66 = 134 units, 2 parts of 67 if the pair
    could be cut; it cannot: part 1 = 66, part 2 = 2 + 65 = 67, part 3 = 1 -> 3."""
    text = "á" + "a" * 65 + "👋" + "a" * 66
    info = analyse(text)
    assert (info.length, info.segments) == (134, 3)


def test_gsm7_detection_follows_the_default_alphabet() -> None:
    assert is_gsm7("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà\n\r")
    assert is_gsm7("Hola, Ada: tu contraseña ha cambiado. ¿No lo hiciste?")
    for char in "áíóúçÁ`👋":
        assert not is_gsm7(char), repr(char)
    assert analyse("").segments == 0


def test_a_realistic_gsm7_code_message() -> None:
    """'Hi Ada, your confirmation code is: 123456': 41 characters, all GSM-7 -> 1."""
    text = "Hi Ada, your confirmation code is: 123456"
    assert analyse(text).describe() == "encoding: GSM-7, characters: 41, segments: 1"
