"""Normalising contacts, so that one person has one spelling (R47).

Emails: trimmed, checked by email-validator without DNS, domain lower-cased (IDNA).
The local part is lower-cased too: RFC 5321 allows case-sensitive mailboxes, but no
mainstream provider has them, and people type ``Ada@`` and ``ada@`` for the same inbox.
Phones: parsed by phonenumbers and stored as E.164.
"""

from __future__ import annotations

import phonenumbers
from email_validator import EmailNotValidError, validate_email

MAX_EMAIL_LENGTH = 254


class ContactError(ValueError):
    """The value is not a usable email address or phone number; the message says why."""


def normalise_email(raw: str) -> str:
    value = raw.strip()
    if not value or len(value) > MAX_EMAIL_LENGTH:
        raise ContactError("Enter a valid email address.")
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        raise ContactError("Enter a valid email address.") from None
    return result.normalized.lower()


def normalise_phone(raw: str, *, default_region: str | None = None) -> str:
    """E.164 form of ``raw``. Without ``+country`` the number needs ``default_region``."""
    value = raw.strip()
    if not value or len(value) > 32:
        raise ContactError("Enter a mobile number with its country code, like +1 415 555 0100.")
    try:
        number = phonenumbers.parse(value, default_region)
    except phonenumbers.NumberParseException:
        raise ContactError(
            "Enter a mobile number with its country code, like +1 415 555 0100."
        ) from None
    if not phonenumbers.is_valid_number(number):
        raise ContactError("That phone number is not valid.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def display_phone(phone: str) -> str:
    """An E.164 number as people read it, grouped: ``+1 415-555-0100``."""
    return phonenumbers.format_number(
        phonenumbers.parse(phone), phonenumbers.PhoneNumberFormat.INTERNATIONAL
    )


def mask_email(email: str) -> str:
    """``a***@example.com``: enough for an operator to tell addresses apart, no more."""
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}***@{domain}"


def mask_phone(phone: str) -> str:
    """``+1******0100``."""
    return f"{phone[:2]}{'*' * max(len(phone) - 6, 0)}{phone[-4:]}"


def mask(contact: str) -> str:
    return mask_email(contact) if "@" in contact else mask_phone(contact)
