"""The JSON error body, in one place: ``{"error", "code"}`` and ``"fields"`` when a field
is named (SPEC §4). Used by the exception handlers (web/errors.py, through render.py) and
by the pure ASGI middleware that answer before any route runs (security.py: a body too
large; sessions.py: the session store down)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

from resetflow.errors import (
    AdminTokenInvalid,
    ContactTaken,
    Forbidden,
    InvalidCode,
    InvalidCredentials,
    InvalidInput,
    MalformedRequest,
    MethodNotAllowed,
    MetricsTokenRequired,
    NotFound,
    NotSignedIn,
    PayloadTooLarge,
    RateLimited,
    ResetflowError,
    ResetNotAllowed,
    ServiceUnavailable,
    UnsupportedMediaType,
    UserNotFound,
    WebhookRefused,
)

# Each domain error's HTTP status (SPEC §4), mapped here and nowhere else; a subclass
# answers as its nearest listed ancestor (PasswordRejected as InvalidInput).
HTTP_STATUS: dict[type[ResetflowError], int] = {
    MalformedRequest: 400,
    InvalidCode: 400,
    InvalidCredentials: 401,
    NotSignedIn: 401,
    AdminTokenInvalid: 401,
    MetricsTokenRequired: 401,
    ResetNotAllowed: 403,
    Forbidden: 403,
    WebhookRefused: 403,
    NotFound: 404,
    UserNotFound: 404,
    MethodNotAllowed: 405,
    ContactTaken: 409,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidInput: 422,
    RateLimited: 429,
    ServiceUnavailable: 503,
}


def http_status(error: ResetflowError) -> int:
    """The status ``error`` is answered with."""
    for kind in type(error).__mro__:
        if kind in HTTP_STATUS:
            return HTTP_STATUS[kind]
    return 400


def error_response(
    error: ResetflowError, *, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The answer for ``error``: its status, its stable code, its sentence."""
    body: dict[str, Any] = {"error": error.message, "code": error.code.value}
    if error.fields:
        body["fields"] = error.fields
    return JSONResponse(body, status_code=http_status(error), headers=headers)
