"""At the first sign-in of an imported account with no verified contact (the tutorial's
accounts arrive unverified), the person is asked to confirm one before anything else.

The code goes to the preferred contact (email when SMS to its country is not allowed),
through the same verification as after sign-up (``/verify-contact``), and the answer
sends the person there instead of ``/account``. Until a contact is verified, a reset
code cannot reach the account (R42), so this is the moment to fix that.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from resetflow.accounts.models import Channel, User
from resetflow.crypto import new_token
from resetflow.errors import InvalidInput
from resetflow.web.edge import client_of, services_of
from resetflow.web.inputs import session_of
from resetflow.web.render import action_done


async def confirm_contact_first(request: Request, user: User) -> Response | None:
    """The answer that sends ``user`` to ``/verify-contact`` with a fresh code, or None
    when this is not an imported account's first sign-in without a verified contact
    (:meth:`AdminUsers.asks_to_confirm_contact`)."""
    if not services_of(request).admin_users.asks_to_confirm_contact(user):
        return None
    accounts = services_of(request).accounts
    channel = user.preference if user.contact(user.preference) else Channel.EMAIL
    attempt_id = new_token()
    try:
        await accounts.request_verification(
            user_id=user.id, channel=channel, attempt_id=attempt_id, client=client_of(request)
        )
    except InvalidInput:
        channel = Channel.EMAIL
        await accounts.request_verification(
            user_id=user.id, channel=channel, attempt_id=attempt_id, client=client_of(request)
        )
    session_of(request).set(
        "verify", {"user": user.id, "attempt": attempt_id, "channel": channel.value}
    )
    where = channel.place
    message = f"Please confirm your {where}: we sent you a 6-digit code."
    return action_done(
        request,
        status=200,
        body={"redirect": "/verify-contact", "message": message},
        flash=message,
    )
