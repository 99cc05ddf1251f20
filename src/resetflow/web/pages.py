"""The HTML pages (GET). None of them changes state (R32)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from resetflow.accounts.contacts import display_phone
from resetflow.web import return_to
from resetflow.web.inputs import session_of
from resetflow.web.prefix import redirect
from resetflow.web.render import page, redirect_with_flash, sign_in_first

router = APIRouter(include_in_schema=False)
# Mounted only when RESETFLOW_ENV=dev: the dev mailbox shows codes in clear.
dev_router = APIRouter(include_in_schema=False)


@router.get("/")
async def index(request: Request) -> Response:
    return page(request, "index.html")


@router.get("/new-user")
async def new_user(request: Request) -> Response:
    return_to.remember_from_query(request)
    return page(request, "new_user.html")


@router.get("/verify-contact")
async def verify_contact(request: Request) -> Response:
    pending = session_of(request).get("verify")
    if not pending:
        return redirect_with_flash(request, "/new-user", "Create an account first.")
    return page(request, "verify_contact.html", channel=pending.get("channel", "email"))


@router.get("/login")
async def login(request: Request) -> Response:
    return_to.remember_from_query(request)
    return page(request, "login.html")


@router.get("/forgot-password")
async def forgot_password(request: Request) -> Response:
    return_to.remember_from_query(request)
    return page(request, "forgot_password.html")


@router.get("/enter-token")
async def enter_token(request: Request) -> Response:
    reset = session_of(request).get("reset")
    if not reset:
        return redirect(request, "/forgot-password")
    return page(request, "enter_token.html", mode=reset.get("mode", "email"))


@router.get("/new-password")
async def new_password(request: Request) -> Response:
    # The tutorial's middleware, done on the server with server-side state (R26).
    grant = session_of(request).get("grant")
    services = request.app.state.services
    if (
        not grant
        or (services.clock.now() - datetime.fromisoformat(grant["at"])).total_seconds()
        > services.settings.reset_grant_ttl_seconds
    ):
        return redirect_with_flash(
            request,
            "/forgot-password",
            "Enter the code we sent you before choosing a new password.",
        )
    return page(request, "new_password.html")


@router.get("/account")
async def account(request: Request) -> Response:
    if request.scope["state"].get("user") is None:
        return sign_in_first(request)
    user = request.scope["state"]["user"]
    phone = display_phone(user.phone) if user.phone else None
    return page(request, "account.html", phone_display=phone)


# The dev mailbox is at SPEC's /dev/outbox (the name it had first) and at /dev/mailbox.
@dev_router.get("/dev/outbox")
@dev_router.get("/dev/mailbox")
async def dev_mailbox(request: Request) -> Response:
    messages = await request.app.state.services.mailbox.newest(limit=50)
    return page(request, "dev_mailbox.html", messages=messages)


@dev_router.get("/dev/outbox.json")
@dev_router.get("/dev/mailbox.json")
async def dev_mailbox_json(request: Request) -> Response:
    messages = await request.app.state.services.mailbox.newest(limit=50)
    return JSONResponse(
        [
            {
                "id": m.id,
                "channel": m.channel,
                "to": m.recipient,
                "subject": m.subject,
                "text": m.text,
                "html": m.html,
                "notification": m.notification,
                "created_at": m.created_at.isoformat(),
            }
            for m in messages
        ]
    )
