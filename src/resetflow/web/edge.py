"""What every action shares: the services, the client, reading and limiting input, and
the OpenAPI description of a body. One place, so that no action can skip a check."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.requests import Request

from resetflow.audit import AuditEvent
from resetflow.client import MAX_USER_AGENT, ClientInfo, client_ip
from resetflow.errors import NotSignedIn, RateLimited
from resetflow.services import Services
from resetflow.web.inputs import read_input, session_of

ModelT = TypeVar("ModelT", bound=BaseModel)


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """Describe the JSON body in /openapi.json; the route reads the body itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def services_of(request: Request) -> Services:
    services = request.app.state.services
    assert isinstance(services, Services)
    return services


def client_of(request: Request) -> ClientInfo:
    """The client as the audit trail and the limits see it (computed once per request)."""
    client = request.scope["state"].get("client")
    if client is None:
        settings = services_of(request).settings
        peer = request.client.host if request.client else None
        client = ClientInfo(
            ip=client_ip(
                peer,
                request.headers.get("x-forwarded-for"),
                trusted=settings.trusted_proxy_networks,
            ),
            user_agent=request.headers.get("user-agent", "")[:MAX_USER_AGENT],
        )
        request.scope["state"]["client"] = client
    assert isinstance(client, ClientInfo)
    return client


async def read_action(
    request: Request,
    model: type[ModelT],
    *,
    page: str,
    keep: tuple[str, ...] = (),
    count_later: bool = False,
) -> ModelT:
    """Count the POST against the limits, then read and check its body.

    On an error, a form's ``page`` is shown again with the ``keep`` fields as typed.
    ``count_later``: the action counts the POST itself once its body is read, together
    with what else it limits (one round trip on Redis, :func:`count_client` says how);
    a body refused here is counted first, so that a client over its limits is answered
    429 whatever it sent, as when the count comes first.
    """
    request.scope["state"]["form_page"] = page
    if not count_later:
        await count_client(request)
    try:
        if keep and request.headers.get("content-type", "").startswith("application/x-www-form"):
            form = await request.form()
            request.scope["state"]["form_values"] = {k: form.get(k, "") for k in keep}
        origins = services_of(request).settings.origin_allow_list
        return await read_input(request, model, allowed_origins=origins)
    except Exception:
        if count_later:
            await count_client(request)
        raise


async def count_client(request: Request) -> None:
    """Count the POST against its client's and the global limits (R16); over them,
    :class:`RateLimited` (429) and an audit record."""
    services = services_of(request)
    client = client_of(request)
    action = action_of(request)
    try:
        await services.limiter.check_request(action=action, ip=client.ip)
    except RateLimited:
        await services.audit.record(
            AuditEvent.LIMIT_HIT, outcome="client", client=client, action=action
        )
        raise


def action_of(request: Request) -> str:
    """The name the limits count a POST under: the route's own path (request.url would
    build and parse a whole URL for it)."""
    path = request.scope["path"]
    assert isinstance(path, str)
    return path


def action_body(
    model: type[ModelT], *, page: str, keep: tuple[str, ...] = (), count_later: bool = False
) -> Callable[[Request], Awaitable[ModelT]]:
    """A dependency: the action's body, read as ``model`` by :func:`read_action` (limits,
    origin and CSRF, 413/415/422, the form page to show again with ``keep``), so that a
    handler's signature says what it takes."""

    async def body(request: Request) -> ModelT:
        return await read_action(request, model, page=page, keep=keep, count_later=count_later)

    return body


async def require_user(request: Request) -> str:
    """A dependency: the signed-in account's id, else :class:`NotSignedIn` (a JSON 401; a
    form is sent to the sign-in page, web/render.py). Declare it after the body, so that
    every POST is limited and checked before anything else is said."""
    user_id = session_of(request).user_id
    if user_id is None:
        raise NotSignedIn()
    return user_id
