"""The actions (POST), at the tutorial's paths. Each one: read input, call one service
method, keep the flow's state in the session, answer. Domain errors become HTTP answers
in :mod:`resetflow.web.errors`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from resetflow.accounts.models import Channel
from resetflow.accounts.service import NewAccount
from resetflow.audit import AuditEvent
from resetflow.crypto import new_token, sha256_hex
from resetflow.errors import InvalidInput
from resetflow.recovery.service import ResetGrant
from resetflow.web import return_to, schemas
from resetflow.web.confirm_contact import confirm_contact_first
from resetflow.web.edge import (
    action_body,
    action_of,
    client_of,
    count_client,
    openapi_body,
    services_of,
)
from resetflow.web.inputs import session_of
from resetflow.web.render import action_done, action_told

router = APIRouter()


@router.post("/create-user", status_code=201, openapi_extra=openapi_body(schemas.CreateUser))
async def create_user(
    request: Request,
    data: Annotated[
        schemas.CreateUser,
        Depends(
            action_body(
                schemas.CreateUser,
                page="new_user.html",
                keep=("name", "email", "phone", "preference"),
            )
        ),
    ],
) -> Response:
    preference = Channel.preferred(data.preference)
    going_to = return_to.pending(request, sent=data.return_to)
    attempt_id = new_token()
    result = await services_of(request).accounts.register(
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
    # The same session for a new and a taken address (R52, R54): anonymous, with a new
    # id, holding the pending verification. Nobody is signed in before a code is typed.
    session.restart()
    session.set(
        "verify",
        {
            "user": result.user_id,
            "attempt": attempt_id,
            "channel": preference.value,
            "to": result.destination_key,
        },
    )
    return_to.remember(request, going_to)
    where = preference.place
    if result.code_sent:
        message = f"Account created. We sent a code to your {where}."
        flash = f"We sent a 6-digit code to your {where}."
    else:
        # Over the destination limit: nothing sent, nothing verified (R53).
        message = flash = (
            f"Account created, but we cannot send a code to your {where} right now. "
            "Ask for a new code in a few minutes."
        )
    return action_done(
        request,
        status=201,
        body={"redirect": "/verify-contact", "message": message},
        flash=flash,
    )


@router.post("/verify-contact", openapi_extra=openapi_body(schemas.CodeSubmission))
async def verify_contact(
    request: Request,
    data: Annotated[
        schemas.CodeSubmission,
        Depends(action_body(schemas.CodeSubmission, page="verify_contact.html")),
    ],
) -> Response:
    session = session_of(request)
    pending = session.get("verify") or {}
    channel = Channel(pending.get("channel", "email"))
    user_id = await services_of(request).accounts.verify_contact(
        user_id=pending.get("user"),
        channel=channel,
        attempt_id=pending.get("attempt"),
        code=data.token,
        client=client_of(request),
    )
    session.pop("verify")
    # Where to go next is read before sign_in(), which starts the session's data afresh.
    redirect = return_to.destination(request, default="/")
    # Signed in from here (a sign-up), under a new id either way (R24).
    if session.user_id == user_id:
        session.rotate()
    else:
        session.sign_in(user_id)
    what = channel.noun
    message = f"Thanks, your {what} is verified. It can now be used to recover your account."
    return action_told(request, to=redirect, message=message)


@router.post("/verify-contact/resend", status_code=202)
async def resend_verification(
    request: Request,
    _: Annotated[schemas.Empty, Depends(action_body(schemas.Empty, page="verify_contact.html"))],
) -> Response:
    session = session_of(request)
    pending = session.get("verify") or {}
    attempt_id = new_token()
    await services_of(request).accounts.request_verification(
        user_id=pending.get("user"),
        channel=Channel(pending.get("channel", "email")),
        attempt_id=attempt_id,
        destination_key=pending.get("to"),
        client=client_of(request),
    )
    if pending:
        session.set("verify", {**pending, "attempt": attempt_id})
    return action_done(
        request, status=202, body={"redirect": "/verify-contact"}, flash="We sent you a new code."
    )


@router.post("/send-token", status_code=202, openapi_extra=openapi_body(schemas.EmailOrPhone))
async def send_token(
    request: Request,
    data: Annotated[
        schemas.EmailOrPhone,
        Depends(
            # Counted by request_reset, with the contact's limit: one round trip on Redis.
            action_body(
                schemas.EmailOrPhone,
                page="forgot_password.html",
                keep=("email", "phone"),
                count_later=True,
            )
        ),
    ],
) -> Response:
    services = services_of(request)
    mode = "email" if data.email is not None else "phone"
    try:
        email, phone = services.accounts.contacts.given(email=data.email, phone=data.phone)
    except InvalidInput:
        await count_client(request)  # over its limits: 429 first, as for any POST
        raise
    destination = sha256_hex(email or phone or "")
    previous = session_of(request).get("reset") or {}
    # Asking again for the same contact keeps the attempt: if this request is over the
    # per-contact limit and sends nothing, the code already sent still works here.
    attempt_id = previous["attempt"] if previous.get("to") == destination else new_token()
    user_id = await services.recovery.request_reset(
        email=email,
        phone=phone,
        attempt_id=attempt_id,
        client=client_of(request),
        count_action=action_of(request),
    )
    session_of(request).set(
        "reset", {"user": user_id, "attempt": attempt_id, "mode": mode, "to": destination}
    )
    session_of(request).pop("grant")
    return_to.remember(request, data.return_to)
    return action_done(
        request,
        status=202,
        body={"redirect": "/enter-token", "mode": mode},
    )


@router.post("/verify-token", openapi_extra=openapi_body(schemas.CodeSubmission))
async def verify_token(
    request: Request,
    data: Annotated[
        schemas.CodeSubmission,
        Depends(action_body(schemas.CodeSubmission, page="enter_token.html")),
    ],
) -> Response:
    session = session_of(request)
    reset = session.get("reset") or {}
    grant = await services_of(request).recovery.verify_code(
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


@router.post("/reset-password", openapi_extra=openapi_body(schemas.ResetPassword))
async def reset_password(
    request: Request,
    data: Annotated[
        schemas.ResetPassword, Depends(action_body(schemas.ResetPassword, page="new_password.html"))
    ],
) -> Response:
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
    await services_of(request).recovery.reset_password(
        grant=grant,
        new_password=data.newPassword,
        confirmation=data.newPasswordConfirm,
        client=client_of(request),
    )
    # No automatic sign-in (R28): a fresh anonymous session, and off to /login.
    return_to.restart_keeping(request)
    message = "Your password was changed. Sign in with your new password."
    return action_told(request, to="/login", message=message)


@router.post("/login", openapi_extra=openapi_body(schemas.Login))
async def login(
    request: Request,
    data: Annotated[
        schemas.Login,
        Depends(action_body(schemas.Login, page="login.html", keep=("email", "phone"))),
    ],
) -> Response:
    services = services_of(request)
    try:
        email, phone = services.accounts.contacts.given(email=data.email, phone=data.phone)
    except InvalidInput:
        # Cannot be an account; answered like a wrong password, dummy hash included (R21, R38).
        email, phone = None, "+0"
    user = await services.accounts.authenticate(
        email=email, phone=phone, password=data.password, client=client_of(request)
    )
    going_to = return_to.pending(request, sent=data.return_to)
    # sign_in() starts the session's data afresh, the kept return_to with it.
    session_of(request).sign_in(user.id)
    # An imported account without a verified contact confirms one first; the
    # confirmation (/verify-contact) then ends where this sign-in would have.
    if (confirm := await confirm_contact_first(request, user)) is not None:
        return_to.remember(request, going_to or "/account")
        return confirm
    return action_done(request, status=200, body={"redirect": going_to or "/account"})


@router.post("/logout")
async def logout(
    request: Request,
    _: Annotated[schemas.Empty, Depends(action_body(schemas.Empty, page="index.html"))],
) -> Response:
    session = session_of(request)
    if session.user_id is not None:
        await services_of(request).audit.record(
            AuditEvent.SIGN_OUT, outcome="ok", client=client_of(request), user_id=session.user_id
        )
    session.restart()
    return action_done(request, status=200, body={"redirect": "/"}, flash="You are signed out.")
