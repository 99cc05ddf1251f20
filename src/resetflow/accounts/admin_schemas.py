"""Bodies of the operator API (and lines of an import). Strict: unknown fields are
refused, types are not coerced, lengths are bounded (R46)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Name = Annotated[str, Field(min_length=1, max_length=200)]
Email = Annotated[str, Field(min_length=1, max_length=254)]
Phone = Annotated[str, Field(min_length=1, max_length=32)]
Locale = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")]
Preference = Literal["email", "sms"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class AdminNewUser(_Strict):
    """A new account. Exactly one of ``password`` (checked against the password policy
    and hashed with Argon2id) and ``password_hash`` (an Argon2, bcrypt, Django
    ``pbkdf2_sha256`` or passlib ``$scrypt$`` hash, stored as given and replaced with
    Argon2id at the first sign-in)."""

    name: Name
    email: Email
    phone: Phone | None = None
    preference: Preference = "email"
    locale: Locale = "en"
    password: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    password_hash: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    email_verified: bool = False
    phone_verified: bool = False

    @model_validator(mode="after")
    def _one_password(self) -> AdminNewUser:
        if (self.password is None) == (self.password_hash is None):
            raise ValueError("give exactly one of password and password_hash")
        return self


class AdminUserPatch(_Strict):
    """Fields to change; those left out stay. A new email or phone is unverified unless
    ``email_verified`` / ``phone_verified`` is given in the same patch. ``phone: null``
    removes the phone."""

    name: Name | None = None
    email: Email | None = None
    phone: Phone | None = None
    preference: Preference | None = None
    locale: Locale | None = None
    email_verified: bool | None = None
    phone_verified: bool | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> AdminUserPatch:
        for name in ("name", "email", "preference", "locale", "email_verified", "phone_verified"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} may not be null")
        return self


class AdminUserOut(BaseModel):
    id: str
    name: str
    email: str
    phone: str | None
    email_verified: bool
    phone_verified: bool
    preference: Preference
    locale: str
    created_at: str


class AdminUserList(BaseModel):
    users: list[AdminUserOut]


class ImportResult(BaseModel):
    """One line of an import's answer (NDJSON)."""

    line: int
    id: str | None = None
    status: Literal["created", "exists"] | None = None
    error: str | None = None
    message: str | None = None
    fields: dict[str, str] | None = None
