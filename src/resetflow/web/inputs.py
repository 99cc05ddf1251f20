"""Reading an action's input: JSON or an HTML form, checked for CSRF, then validated.

JSON needs no CSRF token: a browser cannot send ``application/json`` cross-site without
a CORS preflight, which resetflow never answers. "Simple" content types that a
cross-site form *can* send (``text/plain``, ``multipart/form-data``) are refused with 415
(R32). Forms must carry the session's synchroniser token (R30). Both kinds are refused
when the browser says the request is cross-site or sends a foreign ``Origin`` (R31).
"""

from __future__ import annotations

import hmac
import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from resetflow.errors import (
    CrossSiteRequest,
    Forbidden,
    InvalidInput,
    MalformedRequest,
    UnsupportedMediaType,
)
from resetflow.web.sessions import WebSession

ModelT = TypeVar("ModelT", bound=BaseModel)

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def session_of(request: Request) -> WebSession:
    session = request.scope["state"]["session"]
    assert isinstance(session, WebSession)
    return session


def is_form(request: Request) -> bool:
    return _media_type(request) == FORM


def check_origin(request: Request, *, allowed: frozenset[str]) -> None:
    fetch_site = request.headers.get("sec-fetch-site", "").lower()
    if fetch_site == "cross-site":
        raise CrossSiteRequest()
    origin = request.headers.get("origin")
    # Under Referrer-Policy: no-referrer browsers send "Origin: null" even for their own
    # forms; Sec-Fetch-Site (which pages cannot forge) then says where the post came from.
    if origin is None or (origin == "null" and fetch_site == "same-origin"):
        return
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin not in allowed and origin != own:
        raise CrossSiteRequest()


async def read_input(
    request: Request, model: type[ModelT], *, allowed_origins: frozenset[str]
) -> ModelT:
    check_origin(request, allowed=allowed_origins)
    media_type = _media_type(request)
    if media_type == JSON:
        data = await _json_object(request)
    elif media_type == FORM:
        data = await _form_fields(request)
    else:
        raise UnsupportedMediaType()
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise InvalidInput(fields=field_messages(error)) from None


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise MalformedRequest("The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise MalformedRequest("The body must be a JSON object.")
    return data


async def _form_fields(request: Request) -> dict[str, Any]:
    form = await request.form()
    fields: dict[str, Any] = {}
    for key, value in form.multi_items():
        if not isinstance(value, str):
            raise UnsupportedMediaType()
        if key in fields:
            raise MalformedRequest(f"The field {key!r} was sent twice.")
        fields[key] = value
    sent_token = str(fields.pop("csrf_token", ""))
    expected = session_of(request).get("csrf")
    if not expected or not hmac.compare_digest(sent_token.encode(), str(expected).encode()):
        raise Forbidden()
    # An empty form field means "not given"; codes may be typed with spaces.
    cleaned = {key: value for key, value in fields.items() if value != ""}
    if "token" in cleaned:
        cleaned["token"] = "".join(str(cleaned["token"]).split())
    return cleaned


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def field_messages(error: ValidationError) -> dict[str, str]:
    """One message per invalid field (the error body's ``fields``); actions and admin API."""
    messages: dict[str, str] = {}
    for problem in error.errors():
        location = [str(part) for part in problem["loc"]]
        field = location[0] if location else "body"
        if problem["type"] == "extra_forbidden":
            messages[field] = "This field is not allowed."
        elif problem["type"] == "missing":
            messages[field] = "This field is required."
        elif field == "token":
            messages[field] = "Enter the 6-digit code."
        else:
            messages[field] = str(problem["msg"]).removeprefix("Value error, ")
    return messages
