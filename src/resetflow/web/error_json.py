"""The JSON error body, in one place: ``{"error", "code"}`` and ``"fields"`` when a field
is named (SPEC §4). Used by the exception handlers (web/errors.py, through render.py) and
by the pure ASGI middleware that answer before any route runs (security.py: a body too
large; sessions.py: the session store down)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

from resetflow.errors import ResetflowError


def error_response(
    error: ResetflowError, *, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The answer for ``error``: its status, its stable code, its sentence."""
    body: dict[str, Any] = {"error": error.message, "code": error.code.value}
    if error.fields:
        body["fields"] = error.fields
    return JSONResponse(body, status_code=error.status, headers=headers)
