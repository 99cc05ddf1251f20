"""Request bodies of the /account actions. Strict like every body (R46)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from resetflow.accounts.contacts import MAX_EMAIL_LENGTH
from resetflow.web.schemas import Body, Password


class ContactChange(Body):
    """A new email address (``channel: email``) or phone number (``channel: sms``).

    ``value`` is bounded by the longest email; a phone longer than 32 characters is
    refused when it is normalised.
    """

    channel: Literal["email", "sms"]
    value: Annotated[str, Field(min_length=1, max_length=MAX_EMAIL_LENGTH)]
    password: Password


class PreferenceChoice(Body):
    preference: Literal["email", "sms"]


class PasswordChange(Body):
    """The signed-in person's own password change: the current one, the new one twice."""

    currentPassword: Password
    newPassword: Password
    newPasswordConfirm: Password
