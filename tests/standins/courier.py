"""A stand-in for the two Courier calls the tutorial makes: the profile merge
(``POST /profiles/{user_id}``) and the send (``POST /send``).

Shapes as Courier's API reference and its generated SDKs describe them:

- auth: ``Authorization: Bearer <auth token>``; otherwise ``401 {"message":
  "Unauthorized", "type": "authentication_error"}``;
- bodies are JSON (``Content-Type: application/json``); refusals are ``400 {"message",
  "type": "invalid_request_error"}``;
- ``POST /profiles/{user_id}`` takes ``{"profile": {...}}`` and merges it, key by key, into
  the stored profile (creating it), answering ``200 {"status": "SUCCESS"}``;
- ``POST /send`` takes ``{"message": {...}}``: ``to`` (here one recipient object with
  ``user_id``, ``email`` and/or ``phone_number``), exactly one of ``template`` (an id,
  with ``data``) and ``content`` (here the shorthand ``{"title", "body"}``, both strings),
  optional ``routing`` ``{"method": "single" | "all", "channels": [...]}``. Message
  fields Courier does not have are refused (the real API may ignore them; a misspelt
  field in resetflow is a bug we want to see). It answers ``202 {"requestId"}``.

An accepted send is "delivered" at once to what it addresses: the stored profile of
``to.user_id`` overlaid with the inline ``to`` fields, over the first channel of the
routing that has an address (``single``) or every one that has (``all``); with no address
for any channel it is kept as ``undeliverable`` (Courier accepts such a send and fails it
later). :attr:`CourierStandIn.messages` holds one :class:`CourierMessage` per delivery.

``Idempotency-Key``: the answer to a send that was accepted is stored under its key; a
later send with the same key gets the same status and ``requestId`` and delivers nothing.
Refusals are not stored, so a corrected request may reuse its key.

Failure switches: :meth:`CourierStandIn.outage` answers ``500``/``503`` (or ``429``) to the
next requests; :meth:`CourierStandIn.slow` holds back the answer to the next sends: each
is handled (and delivered) at once, only the ``202`` comes late, as when Courier has taken
a request and the client timed out waiting.

Not modelled: lists, audiences and multiple recipients, Elemental content beyond the
shorthand, template rendering (the template id and ``data`` are kept as given), brands,
preferences, delays, the message status API, ``PUT``/``PATCH``/``GET`` on profiles.
"""

from __future__ import annotations

import copy
import json
import secrets
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.standins.base import METHODS, ProviderError, RecordedRequest, StandIn, running

MESSAGE_FIELDS = frozenset(
    {
        "brand_id",
        "channels",
        "content",
        "context",
        "data",
        "delay",
        "expiry",
        "metadata",
        "preferences",
        "providers",
        "routing",
        "template",
        "timeout",
        "to",
    }
)
RECIPIENT_FIELDS = frozenset(
    {
        "account_id",
        "context",
        "data",
        "email",
        "locale",
        "phone_number",
        "preferences",
        "tenant_id",
        "user_id",
    }
)
# Which profile field each channel delivers to.
CHANNEL_ADDRESS = {"email": "email", "sms": "phone_number"}
KNOWN_CHANNELS = frozenset({"email", "sms", "push", "inbox", "direct_message", "banner", "webhook"})
_OUTAGES = {500: "Internal Server Error", 503: "Service Unavailable", 429: "Too Many Requests"}


@dataclass(frozen=True)
class CourierError(ProviderError):
    """A refusal in Courier's words."""

    status: int
    message: str
    type: str = "invalid_request_error"

    def body(self) -> dict[str, Any]:
        return {"message": self.message, "type": self.type}


@dataclass(frozen=True)
class CourierMessage:
    """What one accepted send delivered (or could not)."""

    request_id: str
    status: str  # "sent" or "undeliverable"
    channel: str | None
    address: str | None
    user_id: str | None
    template: str | None
    data: dict[str, Any]
    title: str | None
    body: str | None
    idempotency_key: str | None
    message: dict[str, Any]


@dataclass
class CourierStandIn(StandIn[CourierMessage]):
    """Courier's profile and send API for one workspace; serve :attr:`app`, set :attr:`url`."""

    OUTAGES: ClassVar[frozenset[int]] = frozenset(_OUTAGES)
    # The path as sent, percent-escapes and all (the router matches the decoded path).
    RECORD_RAW_PATH: ClassVar[bool] = True

    auth_token: str = field(default_factory=lambda: "pk_test_" + secrets.token_hex(16))
    _profiles: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)
    _answered: dict[str, tuple[int, dict[str, Any]]] = field(
        default_factory=dict, init=False, repr=False
    )

    def routes(self) -> list[Route]:
        return [
            Route("/profiles/{user_id}", self._profile_endpoint, methods=METHODS),
            Route("/send", self._send_endpoint, methods=METHODS),
        ]

    def unknown_path(self, request: Request) -> tuple[int, dict[str, Any], Response]:
        error = CourierError(404, f"Not Found: {request.url.path}")
        return error.status, error.body(), error.response()

    def address_of(self, message: CourierMessage) -> str | None:
        return message.address

    def summary(self, request: RecordedRequest) -> tuple[Any, ...]:
        return (request.path, request.status)

    # What the tests look at --------------------------------------------------------------

    @property
    def profiles(self) -> dict[str, dict[str, Any]]:
        with self._changed:
            return copy.deepcopy(self._profiles)

    def sends(self) -> list[RecordedRequest]:
        """The requests to ``/send``, in order."""
        return [r for r in self.requests if r.path == "/send"]

    def settings(self, *, channels: tuple[str, ...] = ("email", "sms")) -> dict[str, Any]:
        """resetflow settings overrides that send these channels through this stand-in."""
        overrides: dict[str, Any] = {
            "courier_auth_token": self.auth_token,
            "courier_base_url": self.url,
        }
        if "email" in channels:
            overrides["email_provider"] = "courier"
        if "sms" in channels:
            overrides["sms_provider"] = "courier"
        return overrides

    # The HTTP side -----------------------------------------------------------------------

    async def _profile_endpoint(self, request: Request) -> Response:
        raw = await request.body()
        try:
            self._gate(request)
            if request.method != "POST":
                raise CourierError(405, "This stand-in only merges profiles (POST).")
            body = _json_object(request, raw)
            profile = body.get("profile")
            if set(body) != {"profile"} or not isinstance(profile, dict):
                raise CourierError(400, "'profile' is required and must be an object")
            user_id = request.path_params["user_id"]
            with self._changed:
                self._profiles.setdefault(user_id, {}).update(profile)
            status, answer = 200, {"status": "SUCCESS"}
        except CourierError as error:
            status, answer = error.status, error.body()
        return await self.answer(request, raw, status, answer)

    async def _send_endpoint(self, request: Request) -> Response:
        raw = await request.body()
        delay = 0.0
        try:
            self._gate(request)
            if request.method != "POST":
                raise CourierError(405, "Method not allowed")
            delay = self.take_slow()
            status, answer = self._send(request, raw)
        except CourierError as error:
            status, answer = error.status, error.body()
        return await self.answer(request, raw, status, answer, delay=delay)

    def _gate(self, request: Request) -> None:
        """Outage first (as a load balancer would answer), then authentication."""
        status = self.take_outage()
        if status is not None:
            raise CourierError(status, _OUTAGES[status], "api_error")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            token.strip().encode(), self.auth_token.encode()
        ):
            raise CourierError(401, "Unauthorized", "authentication_error")

    def _send(self, request: Request, raw: bytes) -> tuple[int, dict[str, Any]]:
        key = request.headers.get("idempotency-key")
        with self._changed:
            if key is not None and key in self._answered:
                return self._answered[key]
        body = _json_object(request, raw)
        message = body.get("message")
        if set(body) != {"message"} or not isinstance(message, dict):
            raise CourierError(400, "'message' is required and must be an object")
        check_message(message)
        request_id = f"1-{secrets.token_hex(4)}-{secrets.token_hex(12)}"
        with self._changed:
            if key is not None and key in self._answered:  # a concurrent twin got here first
                return self._answered[key]
            self._messages.extend(self._deliver(request_id, message, key))
            answer = (202, {"requestId": request_id})
            if key is not None:
                self._answered[key] = answer
        return answer

    def _deliver(
        self, request_id: str, message: dict[str, Any], key: str | None
    ) -> list[CourierMessage]:
        to: dict[str, Any] = message["to"]
        user_id = to.get("user_id")
        recipient = {**self._profiles.get(user_id, {}), **to} if user_id else dict(to)
        routing = message.get("routing") or {"method": "single", "channels": ["email", "sms"]}
        content = message.get("content") or {}

        def made(status: str, channel: str | None, address: str | None) -> CourierMessage:
            return CourierMessage(
                request_id=request_id,
                status=status,
                channel=channel,
                address=address,
                user_id=user_id,
                template=message.get("template"),
                data=dict(message.get("data") or {}),
                title=content.get("title"),
                body=content.get("body"),
                idempotency_key=key,
                message=message,
            )

        delivered = []
        for channel in routing["channels"]:
            address = recipient.get(CHANNEL_ADDRESS.get(channel, ""))
            if isinstance(address, str) and address:
                delivered.append(made("sent", channel, address))
                if routing["method"] == "single":
                    break
        return delivered or [made("undeliverable", None, None)]


# Checking one request ----------------------------------------------------------------------


def _json_object(request: Request, raw: bytes) -> dict[str, Any]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise CourierError(400, "Content-Type must be application/json")
    try:
        body = json.loads(raw)
    except ValueError:
        raise CourierError(400, "Invalid JSON") from None
    if not isinstance(body, dict):
        raise CourierError(400, "The request body must be a JSON object")
    return body


def check_message(message: dict[str, Any]) -> None:
    """Raise the :class:`CourierError` a send of ``message`` gets, if any."""
    unknown = sorted(set(message) - MESSAGE_FIELDS)
    if unknown:
        raise CourierError(400, f"Unknown message fields: {', '.join(unknown)}")
    to = message.get("to")
    if not isinstance(to, dict):
        raise CourierError(400, "'message.to' is required: one recipient object")
    unknown = sorted(set(to) - RECIPIENT_FIELDS)
    if unknown:
        raise CourierError(400, f"Unknown recipient fields: {', '.join(unknown)}")
    if not any(isinstance(to.get(k), str) and to[k] for k in ("user_id", "email", "phone_number")):
        raise CourierError(400, "'message.to' needs a user_id, email or phone_number")
    for name in ("user_id", "email", "phone_number"):
        if name in to and not isinstance(to[name], str):
            raise CourierError(400, f"'message.to.{name}' must be a string")
    has_template, has_content = "template" in message, "content" in message
    if has_template == has_content:
        raise CourierError(400, "A message needs exactly one of 'template' and 'content'")
    if has_template and not (isinstance(message["template"], str) and message["template"]):
        raise CourierError(400, "'message.template' must be a template id")
    if "data" in message and not isinstance(message["data"], dict):
        raise CourierError(400, "'message.data' must be an object")
    content = message.get("content")
    if has_content and not (
        isinstance(content, dict)
        and set(content) == {"title", "body"}
        and all(isinstance(content[k], str) for k in ("title", "body"))
    ):
        raise CourierError(400, "'message.content' must be {title, body}, both strings")
    routing = message.get("routing")
    if routing is not None and not (
        isinstance(routing, dict)
        and set(routing) == {"method", "channels"}
        and routing["method"] in ("single", "all")
        and isinstance(routing["channels"], list)
        and routing["channels"]
        and all(c in KNOWN_CHANNELS for c in routing["channels"])
    ):
        raise CourierError(
            400, "'message.routing' must be {method: single|all, channels: [channel…]}"
        )


def running_courier(**options: Any) -> AbstractContextManager[CourierStandIn]:
    """A :class:`CourierStandIn` served by uvicorn on a free loopback port."""
    return running(CourierStandIn(**options))
