"""The actions (POST), at the tutorial's paths. Each one: read input, call one service
method, keep the flow's state in the session, answer. Domain errors become HTTP answers
in :mod:`resetflow.web.errors`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from resetflow.accounts.models import Channel
from resetflow.accounts.service import NewAccount
from resetflow.audit import AuditEvent
from resetflow.client import MAX_USER_AGENT, ClientInfo, client_ip
from resetflow.crypto import new_token, sha256_hex
from resetflow.errors import InvalidInput, NotSignedIn, RateLimited
from resetflow.recovery.service import ResetGrant
from resetflow.services import Services
from resetflow.web import schemas
from resetflow.web.inputs import read_input, session_of
from resetflow.web.render import action_done

router = APIRouter()
ModelT = TypeVar("ModelT", bound=BaseModel)


def _doc(model: type[BaseModel]) -> dict[str, Any]:
    """Describe the JSON body in /openapi.json; the route reads the body itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def _services(request: Request) -> Services:
    services = request.app.state.services
    assert isinstance(services, Services)
    return services


def client_of(request: Request) -> ClientInfo:
    """The client as the audit trail and limits see it (set by :func:`_read`)."""
    client = request.scope["state"].get("client")
    if client is None:
        settings = _services(request).settings
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


async def _read(
    request: Request, model: type[ModelT], *, page: str, keep: tuple[str, ...] = ()
) -> ModelT:
    """Read the body; on error the form's ``page`` is shown again with the ``keep`` fields."""
    request.scope["state"]["form_page"] = page
    # Every POST counts against its client's and the global limits (R16).
    services = _services(request)
    client = client_of(request)
    try:
        await services.limiter.check_request(action=request.url.path, ip=client.ip)
    except RateLimited:
        await services.audit.record(
            AuditEvent.LIMIT_HIT, outcome="client", client=client, action=request.url.path
        )
        raise
    if keep and request.headers.get("content-type", "").startswith("application/x-www-form"):
        form = await request.form()
        request.scope["state"]["form_values"] = {k: form.get(k, "") for k in keep}
    return await read_input(
        request, model, allowed_origins=_services(request).settings.origin_allow_list
    )


@router.post("/create-user", status_code=201, openapi_extra=_doc(schemas.CreateUser))
async def create_user(request: Request) -> Response:
    data = await _read(
        request,
        schemas.CreateUser,
        page="new_user.html",
        keep=("name", "email", "phone", "preference"),
    )
    preference = Channel.SMS if data.preference in ("sms", "phone") else Channel.EMAIL
    attempt_id = new_token()
    user_id = await _services(request).accounts.sign_up(
        NewAccount(
            name=data.name,
            email=data.email,
            phone=data.phone,
            password=data.password,
            preference=preference,
            locale=data.locale,
        ),
        attempt_id=attempt_id,
        client=client_of(request),
    )
    session = session_of(request)
    # Same session changes for a new and a taken address (R52).
    if user_id is not None:
        session.sign_in(user_id)
    else:
        session.restart()
    session.set("verify", {"user": user_id, "attempt": attempt_id, "channel": preference.value})
    where = "email address" if preference is Channel.EMAIL else "phone"
    return action_done(
        request,
        status=201,
        body={
            "redirect": "/verify-contact",
            "message": f"Account created. We sent a code to your {where}.",
        },
        flash=f"We sent a 6-digit code to your {where}.",
    )


@router.post("/verify-contact", openapi_extra=_doc(schemas.CodeSubmission))
async def verify_contact(request: Request) -> Response:
    data = await _read(request, schemas.CodeSubmission, page="verify_contact.html")
    session = session_of(request)
    pending = session.get("verify") or {}
    channel = Channel(pending.get("channel", "email"))
    await _services(request).accounts.verify_contact(
        user_id=pending.get("user"),
        channel=channel,
        attempt_id=pending.get("attempt"),
        code=data.token,
        client=client_of(request),
    )
    session.pop("verify")
    session.rotate()
    what = "email address" if channel is Channel.EMAIL else "phone number"
    message = f"Thanks, your {what} is verified. It can now be used to recover your account."
    return action_done(
        request, status=200, body={"redirect": "/", "message": message}, flash=message
    )


@router.post("/verify-contact/resend", status_code=202)
async def resend_verification(request: Request) -> Response:
    await _read(request, schemas.Empty, page="verify_contact.html")
    session = session_of(request)
    pending = session.get("verify") or {}
    attempt_id = new_token()
    await _services(request).accounts.request_verification(
        user_id=pending.get("user"),
        channel=Channel(pending.get("channel", "email")),
        attempt_id=attempt_id,
        client=client_of(request),
    )
    if pending:
        session.set("verify", {**pending, "attempt": attempt_id})
    return action_done(
        request, status=202, body={"redirect": "/verify-contact"}, flash="We sent you a new code."
    )


@router.post("/account/verify", status_code=202, openapi_extra=_doc(schemas.ChannelChoice))
async def verify_another_contact(request: Request) -> Response:
    """Send a code to one of the signed-in account's unverified contacts."""
    data = await _read(request, schemas.ChannelChoice, page="account.html")
    session = session_of(request)
    if session.user_id is None:
        raise NotSignedIn()
    channel = Channel(data.channel)
    attempt_id = new_token()
    await _services(request).accounts.request_verification(
        user_id=session.user_id, channel=channel, attempt_id=attempt_id, client=client_of(request)
    )
    session.set(
        "verify", {"user": session.user_id, "attempt": attempt_id, "channel": channel.value}
    )
    where = "email address" if channel is Channel.EMAIL else "phone"
    return action_done(
        request,
        status=202,
        body={"redirect": "/verify-contact"},
        flash=f"We sent a 6-digit code to your {where}.",
    )


@router.post("/send-token", status_code=202, openapi_extra=_doc(schemas.EmailOrPhone))
async def send_token(request: Request) -> Response:
    data = await _read(
        request, schemas.EmailOrPhone, page="forgot_password.html", keep=("email", "phone")
    )
    services = _services(request)
    mode = "email" if data.email is not None else "phone"
    email = services.accounts.parse_email(data.email) if data.email is not None else None
    phone = services.accounts.parse_phone(data.phone) if data.phone is not None else None
    destination = sha256_hex(email or phone or "")
    previous = session_of(request).get("reset") or {}
    # Asking again for the same contact keeps the attempt: if this request is over the
    # per-contact limit and sends nothing, the code already sent still works here.
    attempt_id = previous["attempt"] if previous.get("to") == destination else new_token()
    user_id = await services.recovery.request_reset(
        email=email, phone=phone, attempt_id=attempt_id, client=client_of(request)
    )
    session_of(request).set(
        "reset", {"user": user_id, "attempt": attempt_id, "mode": mode, "to": destination}
    )
    session_of(request).pop("grant")
    return action_done(
        request,
        status=202,
        body={"redirect": "/enter-token", "mode": mode},
    )


@router.post("/verify-token", openapi_extra=_doc(schemas.CodeSubmission))
async def verify_token(request: Request) -> Response:
    data = await _read(request, schemas.CodeSubmission, page="enter_token.html")
    session = session_of(request)
    reset = session.get("reset") or {}
    grant = await _services(request).recovery.verify_code(
        user_id=reset.get("user"),
        attempt_id=reset.get("attempt"),
        code=data.token,
        client=client_of(request),
    )
    session.pop("reset")
    session.rotate()
    session.set(
        "grant", {"user": grant.user_id, "code": grant.code_id, "at": grant.granted_at.isoformat()}
    )
    return action_done(request, status=200, body={"redirect": "/new-password"})


@router.post("/reset-password", openapi_extra=_doc(schemas.ResetPassword))
async def reset_password(request: Request) -> Response:
    data = await _read(request, schemas.ResetPassword, page="new_password.html")
    session = session_of(request)
    stored = session.get("grant")
    grant = (
        ResetGrant(
            user_id=stored["user"],
            code_id=stored["code"],
            granted_at=datetime.fromisoformat(stored["at"]),
        )
        if stored
        else None
    )
    await _services(request).recovery.reset_password(
        grant=grant,
        new_password=data.newPassword,
        confirmation=data.newPasswordConfirm,
        client=client_of(request),
    )
    # No automatic sign-in (R28): a fresh anonymous session, and off to /login.
    session.restart()
    message = "Your password was changed. Sign in with your new password."
    return action_done(
        request, status=200, body={"redirect": "/login", "message": message}, flash=message
    )


@router.post("/login", openapi_extra=_doc(schemas.Login))
async def login(request: Request) -> Response:
    data = await _read(request, schemas.Login, page="login.html", keep=("email", "phone"))
    services = _services(request)
    try:
        email = services.accounts.parse_email(data.email) if data.email is not None else None
        phone = services.accounts.parse_phone(data.phone) if data.phone is not None else None
    except InvalidInput:
        # Cannot be an account; answered like a wrong password, dummy hash included (R21, R38).
        email, phone = None, "+0"
    user = await services.accounts.authenticate(
        email=email, phone=phone, password=data.password, client=client_of(request)
    )
    session_of(request).sign_in(user.id)
    return action_done(request, status=200, body={"redirect": "/account"})


@router.post("/logout")
async def logout(request: Request) -> Response:
    await _read(request, schemas.Empty, page="index.html")
    session = session_of(request)
    if session.user_id is not None:
        await _services(request).audit.record(
            AuditEvent.SIGN_OUT, outcome="ok", client=client_of(request), user_id=session.user_id
        )
    session.restart()
    return action_done(request, status=200, body={"redirect": "/"}, flash="You are signed out.")
