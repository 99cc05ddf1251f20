"""A stand-in for Postmark's Email API: ``POST /email`` (send a single email).

What it checks, in Postmark's order and words (https://postmarkapp.com/developer/api/overview,
…/email-api; errors are ``{"ErrorCode", "Message"}``):

- ``X-Postmark-Server-Token`` must be this server's token: otherwise ``401`` with
  ``ErrorCode`` 10 (missing or wrong token);
- ``Accept`` and ``Content-Type`` must be ``application/json``: otherwise ``422`` / 409
  ("JSON required"); a body that does not parse is ``422`` / 402 ("Invalid JSON");
- the body must be an object of Postmark's email fields with their types; a field Postmark
  does not know, or a wrong type, is ``422`` / 403 ("Incompatible JSON"; the real
  Postmark ignores unknown fields, but a misspelt field in resetflow is a bug we want to see);
- ``From`` must be the confirmed Sender Signature (:attr:`PostmarkStandIn.sender`, a
  bare address or ``Name <address>``): missing ``300``, another address ``400``;
- ``To``: at least one (``300`` "Zero recipients specified"), at most 50, each a valid
  address (``300`` "Invalid 'To' address");
- ``Subject`` present (Postmark's support pages list it as required; ``300``), and a
  ``TextBody`` or an ``HtmlBody`` (``300``);
- ``MessageStream``, when given, must be one of the server's streams (``1235``).

A valid email is answered ``200 {"To", "SubmittedAt", "MessageID", "ErrorCode": 0,
"Message": "OK"}`` and kept in :attr:`PostmarkStandIn.messages`.

Failure switches: :meth:`PostmarkStandIn.deactivate` marks a recipient inactive (``422`` /
406, as after a hard bounce, a spam complaint or a manual suppression);
:meth:`PostmarkStandIn.outage` answers ``500``/``503`` (or ``429``) to every request or the
next few; :meth:`PostmarkStandIn.slow` holds the answer back: the request is handled (and a
valid email accepted) at once, as a real API does once it has the request, and only the
answer comes late, so a client that times out and retries may send twice.

Not modelled: batch and template endpoints, ``Cc``/``Bcc`` checks beyond their type,
attachments' content, the 10 MB size limit, bounces and webhooks.
"""

from __future__ import annotations

import email.utils
import json
import re
import secrets
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.standins.base import METHODS, ProviderError, RecordedRequest, StandIn, running

TOKEN_HEADER = "x-postmark-server-token"
DEFAULT_SENDER = "resetflow@example.org"
MAX_RECIPIENTS = 50
INACTIVE_RECIPIENT = 406
# Postmark's email fields and their JSON types.
FIELDS: dict[str, type | tuple[type, ...]] = {
    "From": str,
    "To": str,
    "Cc": str,
    "Bcc": str,
    "Subject": str,
    "Tag": str,
    "HtmlBody": str,
    "TextBody": str,
    "ReplyTo": str,
    "Headers": list,
    "TrackOpens": bool,
    "TrackLinks": str,
    "Metadata": dict,
    "Attachments": list,
    "MessageStream": str,
}
_ADDRESS = re.compile(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+")
_OUTAGES: dict[int, tuple[int, str]] = {
    500: (0, "Internal Server Error"),
    503: (0, "Service Unavailable"),
    429: (429, "Rate limit exceeded."),
}


@dataclass(frozen=True)
class PostmarkError(ProviderError):
    """A refusal in Postmark's words."""

    status: int
    code: int
    message: str

    def body(self) -> dict[str, Any]:
        return {"ErrorCode": self.code, "Message": self.message}


@dataclass(frozen=True)
class SentEmail:
    """An email the stand-in accepted (answered ``200``)."""

    message_id: str
    from_: str
    to: str
    subject: str
    text: str | None
    html: str | None
    stream: str
    tag: str | None
    fields: dict[str, Any]


@dataclass
class PostmarkStandIn(StandIn[SentEmail]):
    """Postmark's Email API for one server; serve :attr:`app`, then set :attr:`url`."""

    OUTAGES: ClassVar[frozenset[int]] = frozenset(_OUTAGES)
    NOUN: ClassVar[str] = "email(s)"

    server_token: str = field(default_factory=lambda: str(uuid.uuid4()))
    sender: str = DEFAULT_SENDER
    streams: frozenset[str] = frozenset({"outbound"})
    _inactive: set[str] = field(default_factory=set, init=False, repr=False)

    def routes(self) -> list[Route]:
        return [Route("/email", self._email_endpoint, methods=METHODS)]

    def unknown_path(self, request: Request) -> tuple[int, dict[str, Any], Response]:
        return 404, {}, Response(status_code=404)

    def address_of(self, message: SentEmail) -> str:
        return message.to

    def summary(self, request: RecordedRequest) -> tuple[Any, ...]:
        return (request.status, request.answer.get("ErrorCode"))

    def settings(self) -> dict[str, Any]:
        """resetflow settings overrides that send email through this stand-in."""
        return {
            "email_provider": "postmark",
            "postmark_server_token": self.server_token,
            "postmark_base_url": self.url,
            "email_from": self.sender,
        }

    # Failure switches --------------------------------------------------------------------

    def deactivate(self, address: str) -> None:
        """Mark ``address`` inactive: every email to it is refused with ``422`` / 406."""
        with self._changed:
            self._inactive.add(address.lower())

    def recover_more(self) -> None:
        """Reactivate every recipient."""
        self._inactive.clear()

    # The HTTP side -----------------------------------------------------------------------

    async def _email_endpoint(self, request: Request) -> Response:
        raw = await request.body()
        delay = self.take_slow()
        try:
            status, answer = 200, self._answer(request, raw)
        except PostmarkError as error:
            status, answer = error.status, error.body()
        return await self.answer(request, raw, status, answer, delay=delay)

    def _answer(self, request: Request, raw: bytes) -> dict[str, Any]:
        self._take_outage()
        self._authenticate(request)
        if request.method != "POST":
            raise PostmarkError(405, 0, "Method not allowed")
        fields = _parse(request, raw)
        check_fields(fields, sender=self.sender, streams=self.streams)
        to = fields["To"]
        with self._changed:
            inactive = [a for a in _addresses(to) if a.lower() in self._inactive]
        if inactive:
            raise PostmarkError(
                422,
                INACTIVE_RECIPIENT,
                "You tried to send to recipient(s) that have been marked as inactive. "
                f"Found inactive addresses: {', '.join(inactive)}. Inactive recipients are "
                "ones that have generated a hard bounce, a spam complaint, or a manual "
                "suppression.",
            )
        message_id = str(uuid.uuid4())
        with self._changed:
            self._messages.append(
                SentEmail(
                    message_id=message_id,
                    from_=fields["From"],
                    to=to,
                    subject=fields["Subject"],
                    text=fields.get("TextBody"),
                    html=fields.get("HtmlBody"),
                    stream=fields.get("MessageStream", "outbound"),
                    tag=fields.get("Tag"),
                    fields=fields,
                )
            )
        return {
            "To": to,
            "SubmittedAt": datetime.now(UTC).isoformat(),
            "MessageID": message_id,
            "ErrorCode": 0,
            "Message": "OK",
        }

    def _take_outage(self) -> None:
        status = self.take_outage()
        if status is not None:
            code, message = _OUTAGES[status]
            raise PostmarkError(status, code, message)

    def _authenticate(self, request: Request) -> None:
        token = request.headers.get(TOKEN_HEADER)
        if token is None:
            raise PostmarkError(
                401,
                10,
                "No Account or Server API tokens were supplied in the HTTP headers. Please "
                "add a header for either X-Postmark-Server-Token or X-Postmark-Account-Token.",
            )
        if not secrets.compare_digest(token.encode(), self.server_token.encode()):
            raise PostmarkError(401, 10, "Request does not contain a valid Server token.")


# Checking one request ----------------------------------------------------------------------


def _media_type(value: str) -> str:
    return value.split(";")[0].strip().lower()


def _parse(request: Request, raw: bytes) -> dict[str, Any]:
    accept = {_media_type(part) for part in request.headers.get("accept", "").split(",")}
    content_type = _media_type(request.headers.get("content-type", ""))
    if content_type != "application/json" or "application/json" not in accept:
        raise PostmarkError(
            422,
            409,
            "Your HTTP request does not have the Accept and Content-Type headers set to "
            "application/json.",
        )
    try:
        fields = json.loads(raw)
    except ValueError:
        raise PostmarkError(422, 402, "Received invalid JSON input.") from None
    if not isinstance(fields, dict):
        raise PostmarkError(422, 403, "Incompatible JSON input.")
    return fields


def check_fields(fields: dict[str, Any], *, sender: str, streams: frozenset[str]) -> None:
    """Raise the :class:`PostmarkError` Postmark would answer these fields with, if any."""
    for name, value in fields.items():
        kind = FIELDS.get(name)
        if kind is None or (value is not None and not isinstance(value, kind)):
            raise PostmarkError(422, 403, "Incompatible JSON input.")
    from_ = fields.get("From")
    if not from_:
        raise PostmarkError(422, 300, "Invalid 'From' address: ''.")
    if email.utils.parseaddr(from_)[1].lower() != sender.lower():
        raise PostmarkError(
            422,
            400,
            f"The 'From' address you supplied ({from_}) is not a Sender Signature on your "
            "account. Please add and confirm this address in order to be able to use it in "
            "the 'From' field of your messages.",
        )
    recipients = _addresses(fields.get("To") or "")
    if not recipients:
        raise PostmarkError(422, 300, "Zero recipients specified")
    if len(recipients) > MAX_RECIPIENTS:
        raise PostmarkError(422, 300, "Maximum of 50 recipients allowed per message.")
    for address in recipients:
        if not _ADDRESS.fullmatch(address):
            raise PostmarkError(422, 300, f"Invalid 'To' address: '{address}'.")
    if "Subject" not in fields:
        raise PostmarkError(422, 300, "Provide a 'Subject' for the email.")
    if not (fields.get("TextBody") or fields.get("HtmlBody")):
        raise PostmarkError(422, 300, "Provide either email TextBody or HtmlBody or both.")
    stream = fields.get("MessageStream")
    if stream is not None and stream not in streams:
        raise PostmarkError(
            422, 1235, f"The message stream for the provided 'ID' ({stream}) was not found."
        )


def _addresses(to: str) -> list[str]:
    """The addresses of a ``To`` value: comma-separated, each bare or ``Name <address>``."""
    return [
        email.utils.parseaddr(part)[1] or part.strip() for part in to.split(",") if part.strip()
    ]


def running_postmark(**options: Any) -> AbstractContextManager[PostmarkStandIn]:
    """A :class:`PostmarkStandIn` served by uvicorn on a free loopback port."""
    return running(PostmarkStandIn(**options))
