"""Answers: a page, a JSON body, or a form's redirect, from one place.

An action answers JSON clients with JSON and HTML forms with ``303 See Other`` on
success, or with its page re-rendered around the error, so pages work without
JavaScript.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from jinja2.runtime import Context
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from resetflow.config import Settings
from resetflow.errors import AdminTokenInvalid, NotSignedIn, RateLimited, ResetflowError
from resetflow.web import return_to
from resetflow.web.error_json import error_response, http_status
from resetflow.web.inputs import is_form, session_of
from resetflow.web.prefix import prefix_of, redirect, url
from resetflow.web.theme import theme_version

SHIPPED_PAGES = Path(__file__).parent / "templates"


def page_templates(settings: Settings) -> Jinja2Templates:
    """The page templates: RESETFLOW_PAGES_DIR first (file by file), then the shipped ones.
    ``url("/login")`` in a template writes a path under the mount prefix (web/prefix.py)."""
    directories = [settings.pages_dir] if settings.pages_dir else []
    templates = Jinja2Templates(directory=[*directories, SHIPPED_PAGES])
    templates.env.globals["url"] = _url
    return templates


@pass_context
def _url(context: Context, path: str) -> str:
    return f"{context['prefix']}{path}"


def page(request: Request, name: str, *, status: int = 200, **context: Any) -> Response:
    session = session_of(request)
    user = request.scope["state"].get("user")
    settings: Settings = request.app.state.services.settings
    templates: Jinja2Templates = request.app.state.pages
    return templates.TemplateResponse(
        request,
        name,
        {
            "prefix": prefix_of(request.scope, settings.base_path),
            "product_name": settings.product_name,
            "logo_url": settings.logo_url if settings.logo_file is None else None,
            "has_logo_file": settings.logo_file is not None,
            "theme_version": theme_version(settings),
            "csrf_token": session.csrf_token(),
            "flash": session.pop("flash"),
            "user": user,
            # Carried by the sign-in, sign-up and forgot-password forms (web/return_to.py).
            "return_to": session.get(return_to.SESSION_KEY),
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
        return redirect(request, body["redirect"])
    if "redirect" in body:
        body = {**body, "redirect": url(request, body["redirect"])}
    return JSONResponse(body, status_code=status)


def action_told(request: Request, *, to: str, message: str, status: int = 200) -> Response:
    """:func:`action_done` for an action that ends with a sentence: the JSON body carries
    it as ``message``, a form's next page shows it."""
    return action_done(
        request, status=status, body={"redirect": to, "message": message}, flash=message
    )


def redirect_with_flash(request: Request, path: str, flash: str) -> Response:
    """To ``path`` (under the mount prefix), with ``flash`` shown on the page there."""
    session_of(request).set("flash", flash)
    return redirect(request, path)


def sign_in_first(request: Request) -> Response:
    """A browser that must be signed in for this page or form goes to the sign-in page."""
    return redirect_with_flash(request, "/login", "Please sign in first.")


def error_answer(request: Request, error: ResetflowError) -> Response:
    headers = {}
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, AdminTokenInvalid):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, NotSignedIn) and is_form(request):
        # A form posted by a browser whose session ended: to the sign-in page.
        return sign_in_first(request)
    form_page = request.scope["state"].get("form_page")
    if form_page and is_form(request):
        response = page(
            request,
            form_page,
            status=http_status(error),
            error=error.message,
            fields=error.fields,
            values=request.scope["state"].get("form_values", {}),
        )
        response.headers.update(headers)
        return response
    return error_response(error, headers=headers)
