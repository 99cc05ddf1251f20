"""The signed-in account's own settings: change the email address or phone number (with
the password, proven by a code sent to the new contact) and choose where codes go (R42).

Input is read by the same :func:`resetflow.web.edge.action_body` dependency as every
other action (limits, origin, CSRF, strict schema), and the signed-in account comes from
:func:`resetflow.web.edge.require_user`, so these routes cannot drift from the others.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from resetflow.accounts.contact_change import PendingChange
from resetflow.accounts.contacts import display_phone
from resetflow.accounts.models import Channel
from resetflow.crypto import new_token
from resetflow.web import account_schemas, schemas
from resetflow.web.edge import (
    action_body,
    client_of,
    openapi_body,
    require_user,
    services_of,
)
from resetflow.web.inputs import session_of
from resetflow.web.render import (
    action_done,
    action_told,
    page,
    redirect_with_flash,
    sign_in_first,
)

router = APIRouter()
# The session key of a requested, not yet confirmed change.
PENDING = "contact_change"


@router.post(
    "/account/contact", status_code=202, openapi_extra=openapi_body(account_schemas.ContactChange)
)
async def change_contact(
    request: Request,
    data: Annotated[
        account_schemas.ContactChange,
        Depends(
            action_body(
                account_schemas.ContactChange, page="account.html", keep=("channel", "value")
            )
        ),
    ],
    user_id: Annotated[str, Depends(require_user)],
) -> Response:
    channel = Channel(data.channel)
    pending = await services_of(request).contact_change.request_change(
        user_id=user_id,
        channel=channel,
        value=data.value,
        password=data.password,
        client=client_of(request),
    )
    # The same session change whether the value was free or taken.
    session_of(request).set(
        PENDING,
        {
            "user": pending.user_id,
            "channel": pending.channel.value,
            "value": pending.value,
            "attempt": pending.attempt_id,
        },
    )
    return action_done(
        request,
        status=202,
        body={"redirect": "/account/confirm-contact"},
        flash=f"We sent a 6-digit code to your new {channel.noun}.",
    )


@router.post("/account/confirm-contact", openapi_extra=openapi_body(schemas.CodeSubmission))
async def confirm_contact(
    request: Request,
    data: Annotated[
        schemas.CodeSubmission,
        Depends(action_body(schemas.CodeSubmission, page="confirm_contact.html")),
    ],
    user_id: Annotated[str, Depends(require_user)],
) -> Response:
    session = session_of(request)
    stored = session.get(PENDING)
    pending = (
        PendingChange(
            user_id=stored["user"],
            channel=Channel(stored["channel"]),
            value=stored["value"],
            attempt_id=stored["attempt"],
        )
        if stored
        else None
    )
    channel = await services_of(request).contact_change.confirm_change(
        user_id=user_id, pending=pending, code=data.token, client=client_of(request)
    )
    session.pop(PENDING)
    # Every other session of the account has ended; this one goes on under a new id (R24).
    session.rotate()
    what = channel.noun
    message = f"Your {what} was changed. We told your old {what}, and signed out everywhere else."
    return action_told(request, to="/account", message=message)


@router.post("/account/password", openapi_extra=openapi_body(account_schemas.PasswordChange))
async def change_password(
    request: Request,
    data: Annotated[
        account_schemas.PasswordChange,
        Depends(action_body(account_schemas.PasswordChange, page="account.html")),
    ],
    user_id: Annotated[str, Depends(require_user)],
) -> Response:
    await services_of(request).recovery.change_password(
        user_id=user_id,
        current_password=data.currentPassword,
        new_password=data.newPassword,
        confirmation=data.newPasswordConfirm,
        client=client_of(request),
    )
    # Every session of the account has ended; this browser goes on under a new id (R24).
    session_of(request).sign_in(user_id)
    message = "Your password was changed. We told you by message, and signed out everywhere else."
    return action_told(request, to="/account", message=message)


@router.post("/account/preference", openapi_extra=openapi_body(account_schemas.PreferenceChoice))
async def change_preference(
    request: Request,
    data: Annotated[
        account_schemas.PreferenceChoice,
        Depends(action_body(account_schemas.PreferenceChoice, page="account.html")),
    ],
    user_id: Annotated[str, Depends(require_user)],
) -> Response:
    preference = Channel(data.preference)
    await services_of(request).contact_change.set_preference(user_id=user_id, preference=preference)
    where = "email" if preference is Channel.EMAIL else "SMS"
    return action_done(
        request, status=200, body={"redirect": "/account"}, flash=f"Codes now go by {where}."
    )


@router.get("/account/confirm-contact", include_in_schema=False)
async def confirm_contact_page(request: Request) -> Response:
    session = session_of(request)
    if request.scope["state"].get("user") is None:
        return sign_in_first(request)
    pending = session.get(PENDING)
    if not pending or pending.get("user") != session.user_id:
        return redirect_with_flash(
            request, "/account", "Choose the new email address or phone number first."
        )
    channel = Channel(pending["channel"])
    return page(
        request,
        "confirm_contact.html",
        kind=channel.noun,
        destination=pending["value"]
        if channel is Channel.EMAIL
        else display_phone(pending["value"]),
    )


@router.post("/account/verify", status_code=202, openapi_extra=openapi_body(schemas.ChannelChoice))
async def verify_another_contact(
    request: Request,
    data: Annotated[
        schemas.ChannelChoice, Depends(action_body(schemas.ChannelChoice, page="account.html"))
    ],
    user_id: Annotated[str, Depends(require_user)],
) -> Response:
    """Send a code to one of the signed-in account's unverified contacts."""
    channel = Channel(data.channel)
    attempt_id = new_token()
    await services_of(request).accounts.request_verification(
        user_id=user_id, channel=channel, attempt_id=attempt_id, client=client_of(request)
    )
    session_of(request).set(
        "verify", {"user": user_id, "attempt": attempt_id, "channel": channel.value}
    )
    where = channel.place
    return action_done(
        request,
        status=202,
        body={"redirect": "/verify-contact"},
        flash=f"We sent a 6-digit code to your {where}.",
    )
