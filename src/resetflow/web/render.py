"""Answers: a page, a JSON body, or a form's redirect, from one place.

An action answers JSON clients with JSON and HTML forms with ``303 See Other`` on
success, or with its page re-rendered around the error, so pages work without
JavaScript.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from resetflow.errors import AdminTokenInvalid, RateLimited, ResetflowError
from resetflow.web.inputs import is_form, session_of

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def page(request: Request, name: str, *, status: int = 200, **context: Any) -> Response:
    session = session_of(request)
    user = request.scope["state"].get("user")
    return templates.TemplateResponse(
        request,
        name,
        {
            "csrf_token": session.csrf_token(),
            "flash": session.pop("flash"),
            "user": user,
            "dev": request.app.state.services.settings.env.value == "dev",
            "values": {},
            "fields": {},
            "error": None,
            **context,
        },
        status_code=status,
    )


def action_done(
    request: Request, *, status: int, body: dict[str, Any], flash: str | None = None
) -> Response:
    if is_form(request):
        if flash:
            session_of(request).set("flash", flash)
        return RedirectResponse(body["redirect"], status_code=303)
    return JSONResponse(body, status_code=status)


def error_answer(request: Request, error: ResetflowError) -> Response:
    headers = {}
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, AdminTokenInvalid):
        headers["WWW-Authenticate"] = "Bearer"
    form_page = request.scope["state"].get("form_page")
    if form_page and is_form(request):
        response = page(
            request,
            form_page,
            status=error.status,
            error=error.message,
            fields=error.fields,
            values=request.scope["state"].get("form_values", {}),
        )
        response.headers.update(headers)
        return response
    body: dict[str, Any] = {"error": error.message, "code": error.code.value}
    if error.fields:
        body["fields"] = error.fields
    return JSONResponse(body, status_code=error.status, headers=headers)
