"""Request bodies. Unknown fields are refused, types are strict, lengths bounded (R46)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Code = Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]
Password = Annotated[str, Field(min_length=1, max_length=1024)]
Email = Annotated[str, Field(min_length=1, max_length=254)]
Phone = Annotated[str, Field(min_length=1, max_length=32)]
# Where to go at the end of the flow (web/return_to.py). A value that is not allowed, too
# long (over return_to.MAX_LENGTH) included, is ignored rather than refused; this bound
# is the default body limit's.
ReturnTo = Annotated[str, Field(max_length=16 * 1024)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=False)


class Empty(Body):
    pass


class CreateUser(Body):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    email: Email
    phone: Phone
    password: Password
    # "phone" is what the tutorial sent; it means SMS.
    preference: Literal["email", "sms", "phone"]
    locale: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")] = "en"
    return_to: ReturnTo | None = None


class CodeSubmission(Body):
    token: Code


class EmailOrPhone(Body):
    email: Email | None = None
    phone: Phone | None = None
    return_to: ReturnTo | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> EmailOrPhone:
        if (self.email is None) == (self.phone is None):
            raise ValueError("give either email or phone")
        return self


class Login(EmailOrPhone):
    password: Password


class ResetPassword(Body):
    newPassword: Password
    newPasswordConfirm: Password


class ChannelChoice(Body):
    channel: Literal["email", "sms"]
