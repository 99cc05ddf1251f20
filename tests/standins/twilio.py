"""A stand-in for Twilio's Messages API: ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``.

Every request is checked against the ``CreateMessage`` operation of Twilio's own OpenAPI
description (``tests/fixtures/twilio/create_message.openapi.json``, see the README beside
it), with ``jsonschema``:

- the ``AccountSid`` path parameter against its schema (``^AC[0-9a-fA-F]{32}$``), and it
  must be the account the credentials belong to; otherwise ``404`` / ``20404``;
- HTTP basic auth with the account SID and auth token; otherwise ``401`` / ``20003``;
- the body must be ``application/x-www-form-urlencoded`` (UTF-8). Twilio reads its
  parameters from the form only, so any other body leaves ``To`` missing: ``400`` /
  ``21604``, as Twilio answers a JSON body;
- the form fields against the ``requestBody`` schema (form strings are first converted to
  the schema's types: integers, numbers, booleans, repeated fields for arrays), with
  unknown fields refused (``20001``; the real Twilio ignores them with a warning, but a
  misspelt parameter in resetflow is a bug we want to see), and against the operation's
  ``x-twilio.conditional`` rule (one of ``From``/``MessagingServiceSid``: ``21603``; one
  of ``Body``/``MediaUrl``/``ContentSid``: ``21602``);
- ``Body`` at most 1600 characters (``21617``), which the schema does not say.

A valid request is answered ``201`` with a message resource that is itself checked
against the operation's ``201`` schema (``api.v2010.account.message``) before it leaves.
Errors have Twilio's body: ``{"code", "message", "more_info", "status"}``.

Failure injection: :meth:`TwilioStandIn.fail_number` refuses one recipient for good (by
default ``400`` / ``21610``, an unsubscribed recipient), and :meth:`TwilioStandIn.outage`
answers ``500``/``503`` (``20500``/``20503``) to every request, or to the next few;
:meth:`TwilioStandIn.slow` holds back the answer to every request or the next few (each is
handled at once, only the answer comes late).
:meth:`TwilioStandIn.chaos` fails valid requests at random, from a seeded generator: a
share answered ``500``/``503`` at once, and a share held for ``hold_seconds`` (longer than
the client's timeout) and only then answered ``503``. A held request is *not* recorded as
a sent message (:attr:`RecordedRequest.timed_out` marks it): the stand-in plays a Twilio
that never took the message in, so a retry that then succeeds is the one and only SMS.
(The real Twilio may have accepted a request whose answer never arrived: that case is
:meth:`TwilioStandIn.hang`'s, below.)

The list resource (``GET`` on the same path, ``ListMessage`` in
``tests/fixtures/twilio/list_messages.openapi.json``) filters the accepted messages for
real: ``To`` and ``From`` exactly, ``DateSent`` / ``DateSent<`` / ``DateSent>`` on the
day (GMT, ``YYYY-MM-DD``) of ``date_sent``, so a message still ``queued`` (no
``date_sent``) matches none of them, as on Twilio; newest first, ``PageSize`` per page
(50 by default, at most 1000), with ``next_page_uri`` (a path with ``Page`` and an opaque
``PageToken``) while more remain. Query parameters are checked against the operation's
schemas (unknown ones refused with ``20001``, as for the form) and the answer against
``ListMessageResponse``. :meth:`TwilioStandIn.mark_sent` moves the queued messages on to
``sent`` with a ``date_sent``.

:meth:`TwilioStandIn.hang` plays the case the chaos mode leaves out: the next valid create
requests are held past the client's timeout, and (``accept=True``) the message *is*
accepted and listed, answered ``201`` too late; with ``accept=False`` it is not.

Not modelled: alphanumeric sender IDs, API-key auth, subaccounts, status callbacks, and
any message state after ``queued`` but the ``sent`` of :meth:`TwilioStandIn.mark_sent`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import math
import random
import re
import secrets
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.standins.base import METHODS, ProviderError, RecordedRequest, StandIn, running

SPEC_PATH = (
    Path(__file__).resolve().parents[1] / "fixtures" / "twilio" / "create_message.openapi.json"
)
LIST_SPEC_PATH = SPEC_PATH.with_name("list_messages.openapi.json")
SPEC_URI = "urn:resetflow-tests:twilio:create-message"
MESSAGES_PATH = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
MESSAGE_SCHEMA = "api.v2010.account.message"
MAX_BODY_CHARACTERS = 1600
TEST_SENDER = "+15005550006"  # Twilio's magic "valid sender" test number

# The conditional rule names parameters in snake_case; the form uses PascalCase.
_CONDITIONAL_NAMES = {
    "from": "From",
    "messaging_service_sid": "MessagingServiceSid",
    "body": "Body",
    "media_url": "MediaUrl",
    "content_sid": "ContentSid",
}
# The Twilio error for a request that satisfies none of a conditional group.
_CONDITIONAL_ERRORS = {
    ("From", "MessagingServiceSid"): (
        21603,
        "A 'From' or 'MessagingServiceSid' parameter is required to send a message",
    ),
    ("Body", "MediaUrl", "ContentSid"): (21602, "Message body is required."),
}
_REASONS = {500: (20500, "Internal Server Error"), 503: (20503, "Service Unavailable")}

# Twilio's JSON error body; tests use it to check the stand-in's refusals.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "code": {"type": "integer"},
        "message": {"type": "string", "minLength": 1},
        "more_info": {"type": "string", "pattern": r"^https://www\.twilio\.com/docs/errors/\d+$"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
    },
    "required": ["code", "message", "more_info", "status"],
    "additionalProperties": False,
}


# The OpenAPI description, as JSON Schema -------------------------------------------------


@cache
def spec() -> dict[str, Any]:
    """The OpenAPI cut-out, as published."""
    document: dict[str, Any] = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    return document


def _operation() -> dict[str, Any]:
    operation: dict[str, Any] = spec()["paths"][MESSAGES_PATH]["post"]
    return operation


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3.0 schema object as JSON Schema 2020-12.

    ``nullable: true`` becomes a ``"null"`` type, ``$ref``s point into the registered
    document, ``x-twilio.ignoreFormat`` drops the format, and examples are left out.
    """
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref":
            out[key] = SPEC_URI + value
        elif key == "properties":
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(sub) for sub in value]
        elif key in ("nullable", "example", "examples") or key.startswith("x-"):
            continue
        else:
            out[key] = value
    if node.get("x-twilio", {}).get("ignoreFormat"):
        out.pop("format", None)
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def _conditional_groups() -> list[tuple[str, ...]]:
    return [
        tuple(_CONDITIONAL_NAMES[name] for name in group)
        for group in _operation()["x-twilio"]["conditional"]
    ]


def _request_schema() -> dict[str, Any]:
    media = _operation()["requestBody"]["content"]["application/x-www-form-urlencoded"]
    schema = to_json_schema(media["schema"])
    # Unknown fields are refused (see the module docstring).
    schema["additionalProperties"] = False
    # x-twilio.conditional: each group needs at least one non-empty member.
    schema["allOf"] = [
        {
            "anyOf": [
                {"required": [name], "properties": {name: {"not": {"const": ""}}}} for name in group
            ]
        }
        for group in _conditional_groups()
    ]
    return schema


def _path_parameter_schema(name: str) -> dict[str, Any]:
    for parameter in _operation()["parameters"]:
        if parameter["in"] == "path" and parameter["name"] == name:
            return to_json_schema(parameter["schema"])
    raise LookupError(name)


@cache
def _registry() -> Registry:
    components = {
        "components": {
            "schemas": {
                name: to_json_schema(schema)
                for name, schema in spec()["components"]["schemas"].items()
            }
        }
    }
    return Registry().with_resource(SPEC_URI, DRAFT202012.create_resource(components))


@cache
def list_spec() -> dict[str, Any]:
    """The ``ListMessage`` cut-out (same commit, same components as :func:`spec`)."""
    document: dict[str, Any] = json.loads(LIST_SPEC_PATH.read_text(encoding="utf-8"))
    return document


def _list_operation() -> dict[str, Any]:
    operation: dict[str, Any] = list_spec()["paths"][MESSAGES_PATH]["get"]
    return operation


# Formats the spec names. A checker only judges strings; "type" judges the rest.
FORMATS = FormatChecker(formats=())
_E164 = re.compile(r"(?:(?:whatsapp|messenger|rcs):)?\+[1-9][0-9]{6,14}")
_SHORT_CODE = re.compile(r"[0-9]{5,6}")
_RFC_2822 = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4}"
)


@FORMATS.checks("phone-number")
def _is_phone_number(value: object) -> bool:
    """E.164 (optionally behind a channel prefix) or a short code."""
    if not isinstance(value, str):
        return True
    return bool(_E164.fullmatch(value) or _SHORT_CODE.fullmatch(value))


@FORMATS.checks("uri")
def _is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9+.-]*", parts.scheme or ""):
        return False
    return bool(parts.netloc) if parts.scheme.lower() in ("http", "https") else True


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    return datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None


@FORMATS.checks("date-time-rfc-2822", raises=(TypeError, ValueError))
def _is_rfc_2822(value: object) -> bool:
    if not isinstance(value, str):
        return True
    return bool(_RFC_2822.fullmatch(value)) and email.utils.parsedate_to_datetime(value) is not None


@FORMATS.checks("currency")
def _is_currency(value: object) -> bool:
    return not isinstance(value, str) or bool(re.fullmatch(r"[A-Z]{3}", value))


@FORMATS.checks("uri-map")
def _is_uri_map(value: object) -> bool:
    if not isinstance(value, dict):
        return True
    return all(isinstance(uri, str) and uri.startswith("/") for uri in value.values())


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(schema, registry=_registry(), format_checker=FORMATS)


@cache
def request_validator() -> Draft202012Validator:
    """The ``CreateMessage`` form fields (after type conversion), as the stand-in checks them."""
    return _validator(_request_schema())


@cache
def account_sid_validator() -> Draft202012Validator:
    return _validator(_path_parameter_schema("AccountSid"))


@cache
def message_validator() -> Draft202012Validator:
    """The ``201`` answer of ``CreateMessage``: ``api.v2010.account.message``."""
    responses = _operation()["responses"]["201"]["content"]["application/json"]
    return _validator(to_json_schema(responses["schema"]))


@cache
def list_parameter_validators() -> dict[str, Draft202012Validator]:
    """The ``ListMessage`` query parameters, by name. The spec says ``date-time`` for the
    ``DateSent`` ones, where Twilio takes ``YYYY-MM-DD`` (see the fixture's README)."""
    validators = {}
    for parameter in _list_operation()["parameters"]:
        if parameter["in"] != "query":
            continue
        schema = to_json_schema(parameter["schema"])
        if parameter["name"].startswith("DateSent"):
            schema = {"type": "string", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}
        validators[parameter["name"]] = _validator(schema)
    return validators


@cache
def list_validator() -> Draft202012Validator:
    """The ``200`` answer of ``ListMessage``. Its page URIs are paths (as in Twilio's own
    examples), so their ``uri`` format, which wants a scheme, is not checked."""
    content = _list_operation()["responses"]["200"]["content"]["application/json"]
    schema = to_json_schema(content["schema"])
    for name, prop in schema["properties"].items():
        if name.endswith("uri"):
            prop.pop("format", None)
    return _validator(schema)


@cache
def error_validator() -> Draft202012Validator:
    return Draft202012Validator(ERROR_SCHEMA)


# Checking one request ----------------------------------------------------------------------


@dataclass(frozen=True)
class TwilioError(ProviderError):
    """A refusal in Twilio's words."""

    status: int
    code: int
    message: str

    def body(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Basic realm="Twilio API"'} if self.status == 401 else {}


def _property_type(name: str) -> str | None:
    media = _operation()["requestBody"]["content"]["application/x-www-form-urlencoded"]
    prop = media["schema"]["properties"].get(name)
    if prop is None:
        return None
    if "$ref" in prop:
        prop = spec()["components"]["schemas"][prop["$ref"].rsplit("/", 1)[1]]
    kind = prop.get("type")
    return kind if isinstance(kind, str) else None


def form_to_parameters(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Form fields as the values the schema describes.

    Arrays take every occurrence of their field; a scalar field sent twice stays a list
    (and so fails its type). Integers, numbers and booleans are converted when they are
    spelt as such, and otherwise left as strings for the schema to refuse.
    """
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    parameters: dict[str, Any] = {}
    for name, values in grouped.items():
        kind = _property_type(name)
        if kind == "array" or len(values) > 1:
            parameters[name] = values
            continue
        value: Any = values[0]
        if kind == "integer" and re.fullmatch(r"-?[0-9]+", value):
            value = int(value)
        elif kind == "number" and re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value):
            value = float(value)
        elif kind == "boolean" and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        parameters[name] = value
    return parameters


def check_parameters(parameters: dict[str, Any]) -> None:
    """Raise the :class:`TwilioError` Twilio would answer these parameters with, if any."""
    errors = list(request_validator().iter_errors(parameters))
    if errors:
        raise _twilio_error(min(errors, key=_error_rank), parameters)
    body = parameters.get("Body")
    if isinstance(body, str) and len(body) > MAX_BODY_CHARACTERS:
        raise TwilioError(
            400, 21617, "The concatenated message body exceeds the 1600 character limit."
        )


def _error_rank(error: ValidationError) -> tuple[int, str]:
    if error.validator == "additionalProperties":
        return (0, "")
    if error.validator == "required":
        return (1, "")
    if error.validator == "anyOf" and not error.path:
        return (2, str(list(error.schema_path)))
    return (3, str(list(error.path)))


def _twilio_error(error: ValidationError, parameters: dict[str, Any]) -> TwilioError:
    if error.validator == "additionalProperties":
        names = sorted(set(parameters) - set(request_validator().schema["properties"]))
        return TwilioError(400, 20001, f"Unknown parameters: {', '.join(names)}")
    if error.validator == "required":
        return TwilioError(400, 21604, "A 'To' phone number is required.")
    if error.validator == "anyOf" and not error.path:
        group = tuple(branch["required"][0] for branch in error.validator_value)
        code, message = _CONDITIONAL_ERRORS[group]
        return TwilioError(400, code, message)
    name = str(error.path[0]) if error.path else "?"
    value = parameters.get(name)
    if name == "To" and error.validator == "format":
        return TwilioError(400, 21211, f"The 'To' number {value} is not a valid phone number.")
    if name == "From" and error.validator == "format":
        return TwilioError(
            400,
            21212,
            f"The 'From' number {value} is not a valid phone number, shortcode, "
            "or alphanumeric sender ID.",
        )
    return TwilioError(400, 20422, f"Invalid parameter: {name}")


# Building the answer -----------------------------------------------------------------------

_GSM_7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_7_EXTENSION = frozenset("^{}\\[~]|€\f")


def segment_count(body: str) -> int:
    """SMS segments for ``body``: GSM-7 (160, or 153 per part) else UCS-2 (70, or 67)."""
    if not body:
        return 0
    if all(c in _GSM_7 or c in _GSM_7_EXTENSION for c in body):
        units = len(body) + sum(c in _GSM_7_EXTENSION for c in body)
        single, part = 160, 153
    else:
        units = len(body.encode("utf-16-le")) // 2
        single, part = 70, 67
    return 1 if units <= single else math.ceil(units / part)


def message_resource(account_sid: str, parameters: dict[str, Any]) -> dict[str, Any]:
    media = parameters.get("MediaUrl") or []
    sid = ("MM" if media else "SM") + secrets.token_hex(16)
    now = email.utils.format_datetime(datetime.now(UTC).replace(microsecond=0))
    body = parameters.get("Body", "")
    base = f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}"
    return {
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "body": body,
        "date_created": now,
        "date_sent": None,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": parameters.get("From"),
        "messaging_service_sid": parameters.get("MessagingServiceSid"),
        "num_media": str(len(media)),
        "num_segments": str(segment_count(body)),
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued",
        "subresource_uris": {"media": f"{base}/Media.json"},
        "to": parameters["To"],
        "uri": f"{base}.json",
    }


# The stand-in ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SentMessage:
    """A message the stand-in accepted (answered ``201``)."""

    sid: str
    to: str
    from_: str | None
    body: str
    parameters: dict[str, Any]
    resource: dict[str, Any]


@dataclass
class _Chaos:
    fail: float
    timeout: float
    hold_seconds: float
    rng: random.Random


class _Held(Exception):
    """A valid request held past the client's timeout (chaos mode, :meth:`hang`); with a
    ``resource``, the message was accepted and the late answer is its ``201``."""

    def __init__(self, seconds: float, resource: dict[str, Any] | None = None) -> None:
        super().__init__(seconds)
        self.seconds = seconds
        self.resource = resource


@dataclass
class _Hang:
    remaining: int
    seconds: float
    accept: bool


@dataclass
class _Failure:
    status: int
    code: int
    message: str


@dataclass
class TwilioStandIn(StandIn[SentMessage]):
    """Twilio's Messages API for one account; serve :attr:`app`, then set :attr:`url`."""

    OUTAGES: ClassVar[frozenset[int]] = frozenset(_REASONS)

    account_sid: str = field(default_factory=lambda: "AC" + secrets.token_hex(16))
    auth_token: str = field(default_factory=lambda: secrets.token_hex(16))
    _failures: dict[str, _Failure] = field(default_factory=dict, init=False, repr=False)
    _chaos: _Chaos | None = field(default=None, init=False, repr=False)
    _hang: _Hang | None = field(default=None, init=False, repr=False)

    def routes(self) -> list[Route]:
        return [
            Route(
                "/2010-04-01/Accounts/{account_sid}/Messages.json",
                self._messages_endpoint,
                methods=METHODS,
            )
        ]

    def unknown_path(self, request: Request) -> tuple[int, dict[str, Any], Response]:
        error = TwilioError(404, 20404, f"The requested resource {request.url.path} was not found")
        return error.status, error.body(), error.response()

    def form_of(self, request: Request, raw: bytes) -> list[tuple[str, str]] | None:
        return _form_of(request, raw)

    def address_of(self, message: SentMessage) -> str:
        return message.to

    def summary(self, request: RecordedRequest) -> tuple[Any, ...]:
        return (request.status, request.answer.get("code"))

    # What the tests look at --------------------------------------------------------------

    @property
    def messages_url(self) -> str:
        return f"{self.url}/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    def messages_to(self, to: str) -> list[SentMessage]:
        with self._changed:
            return [message for message in self._messages if message.to == to]

    def settings(self, *, sender: str = TEST_SENDER) -> dict[str, Any]:
        """resetflow settings overrides that send SMS through this stand-in."""
        return {
            "sms_provider": "twilio",
            "twilio_account_sid": self.account_sid,
            "twilio_auth_token": self.auth_token,
            "twilio_from": sender,
            "twilio_base_url": self.url,
        }

    # Failure injection -------------------------------------------------------------------

    def fail_number(
        self,
        to: str,
        *,
        code: int = 21610,
        message: str = "Attempt to send to unsubscribed recipient",
        status: int = 400,
    ) -> None:
        """Refuse every valid message to ``to`` with this error. ``message`` may use
        ``{to}`` and ``{body}``, to play a provider that echoes the request back."""
        with self._changed:
            self._failures[to] = _Failure(status=status, code=code, message=message)

    def chaos(
        self,
        *,
        fail: float = 0.3,
        timeout: float = 0.1,
        seed: int = 0,
        hold_seconds: float = 1.5,
    ) -> None:
        """From now on, of the valid requests: a share ``fail`` is answered ``500``/``503``
        at once, a share ``timeout`` is held ``hold_seconds`` and then answered ``503``
        (not sent: see the module docstring); the draws come from ``Random(seed)``."""
        if fail < 0 or timeout < 0 or fail + timeout > 1:
            raise ValueError("fail and timeout are shares that add up to at most 1")
        with self._changed:
            self._chaos = _Chaos(
                fail=fail, timeout=timeout, hold_seconds=hold_seconds, rng=random.Random(seed)
            )

    def hang(self, *, seconds: float, requests: int = 1, accept: bool = True) -> None:
        """Hold the next ``requests`` valid create requests ``seconds`` (longer than the
        client's timeout) before answering; with ``accept`` the message is accepted (and
        listed) on arrival and the late answer is its ``201``, else a late ``503``."""
        with self._changed:
            self._hang = _Hang(remaining=requests, seconds=seconds, accept=accept)

    def mark_sent(self) -> None:
        """Every queued message is now ``sent``, with ``date_sent`` set to now."""
        now = email.utils.format_datetime(datetime.now(UTC).replace(microsecond=0))
        with self._changed:
            for message in self._messages:
                if message.resource["status"] == "queued":
                    message.resource.update(status="sent", date_sent=now, date_updated=now)

    def recover_more(self) -> None:
        """End chaos mode and hangs, and forget every per-number failure."""
        self._chaos = None
        self._hang = None
        self._failures.clear()

    # The HTTP side -----------------------------------------------------------------------

    async def _messages_endpoint(self, request: Request) -> Response:
        raw = await request.body()
        form = _form_of(request, raw)
        delay = self.take_slow()
        response: Response
        try:
            resource = self._answer(request, form)
        except TwilioError as error:
            self.record(request, raw, error.status, error.body(), form=form)
            response = error.response()
        except _Held as held:
            # Recorded on arrival: the client gives up before the answer anyway.
            if held.resource is not None:
                self.record(request, raw, 201, held.resource, form=form, timed_out=True)
                await asyncio.sleep(held.seconds)
                return JSONResponse(held.resource, status_code=201)
            late = TwilioError(503, *_REASONS[503])
            self.record(request, raw, late.status, late.body(), form=form, timed_out=True)
            await asyncio.sleep(held.seconds)
            return late.response()
        else:
            status = 200 if request.method == "GET" else 201
            self.record(request, raw, status, resource, form=form)
            response = JSONResponse(resource, status_code=status)
        if delay:
            await asyncio.sleep(delay)
        return response

    def _answer(self, request: Request, form: list[tuple[str, str]] | None) -> dict[str, Any]:
        self._take_outage()
        self._authenticate(request)
        path_sid = request.path_params["account_sid"]
        if not account_sid_validator().is_valid(path_sid) or path_sid != self.account_sid:
            raise TwilioError(
                404, 20404, f"The requested resource {request.url.path} was not found"
            )
        if request.method == "GET":
            return self._list(request)
        if request.method != "POST":
            raise TwilioError(405, 20004, "Method not allowed")
        parameters = form_to_parameters(form or [])
        check_parameters(parameters)
        with self._changed:
            failure = self._failures.get(parameters["To"])
        if failure is not None:
            text = failure.message.format(to=parameters["To"], body=parameters.get("Body", ""))
            raise TwilioError(failure.status, failure.code, text)
        self._take_chaos()
        hang = self._take_hang()
        if hang is not None and not hang.accept:
            raise _Held(hang.seconds)
        resource = message_resource(self.account_sid, parameters)
        # The stand-in must answer in Twilio's shape too: a broken answer is a 500 here.
        message_validator().validate(resource)
        with self._changed:
            self._messages.append(
                SentMessage(
                    sid=resource["sid"],
                    to=resource["to"],
                    from_=resource["from"],
                    body=resource["body"],
                    parameters=parameters,
                    resource=resource,
                )
            )
        if hang is not None:
            raise _Held(hang.seconds, resource)
        return resource

    def _list(self, request: Request) -> dict[str, Any]:
        """``ListMessage``: the accepted messages that match, newest first, one page."""
        query = list(request.query_params.multi_items())
        names = [name for name, _ in query]
        validators = list_parameter_validators()
        unknown = sorted(set(names) - set(validators))
        if unknown:
            raise TwilioError(400, 20001, f"Unknown parameters: {', '.join(unknown)}")
        params: dict[str, Any] = {}
        for name, value in query:
            if name in params:
                raise TwilioError(400, 20001, f"Parameter given twice: {name}")
            kind = validators[name].schema.get("type")
            typed: Any = int(value) if kind == "integer" and value.isdigit() else value
            if not validators[name].is_valid(typed):
                raise TwilioError(400, 20001, f"Invalid parameter: {name}")
            params[name] = typed
        size = int(params.get("PageSize", 50))
        page = int(params.get("Page", 0))
        token = params.get("PageToken")
        if page > 0 and token != _page_token(page):
            raise TwilioError(400, 20001, "Invalid parameter: PageToken")
        with self._changed:
            found = [dict(m.resource) for m in reversed(self._messages) if _matches(m, params)]
        chosen = found[page * size : (page + 1) * size]
        base = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        filters = [(n, str(v)) for n, v in params.items() if n not in ("Page", "PageToken")]
        filters = [f for f in filters if f[0] != "PageSize"] + [("PageSize", str(size))]

        def uri(index: int) -> str:
            extra = [("Page", str(index))]
            if index > 0:
                extra.append(("PageToken", _page_token(index)))
            return f"{base}?{urlencode(filters + extra)}"

        answer = {
            "end": page * size + max(len(chosen) - 1, 0),
            "first_page_uri": uri(0),
            "messages": chosen,
            "next_page_uri": uri(page + 1) if (page + 1) * size < len(found) else None,
            "page": page,
            "page_size": size,
            "previous_page_uri": uri(page - 1) if page > 0 else None,
            "start": page * size,
            "uri": uri(page),
        }
        list_validator().validate(answer)
        return answer

    def _take_hang(self) -> _Hang | None:
        with self._changed:
            hang = self._hang
            if hang is None:
                return None
            hang.remaining -= 1
            if hang.remaining <= 0:
                self._hang = None
            return hang

    def _take_outage(self) -> None:
        status = self.take_outage()
        if status is not None:
            code, message = _REASONS[status]
            raise TwilioError(status, code, message)

    def _take_chaos(self) -> None:
        with self._changed:
            chaos = self._chaos
            if chaos is None:
                return
            draw = chaos.rng.random()
            status = chaos.rng.choice(sorted(_REASONS))
        if draw < chaos.fail:
            code, message = _REASONS[status]
            raise TwilioError(status, code, message)
        if draw < chaos.fail + chaos.timeout:
            raise _Held(chaos.hold_seconds)

    def _authenticate(self, request: Request) -> None:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        user = password = ""
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user = password = ""
        user_ok = secrets.compare_digest(user.encode(), self.account_sid.encode())
        token_ok = secrets.compare_digest(password.encode(), self.auth_token.encode())
        if not (user_ok and token_ok):
            raise TwilioError(401, 20003, "Authenticate")


def _page_token(page: int) -> str:
    return f"PA{page:08d}"


def _matches(message: SentMessage, params: dict[str, Any]) -> bool:
    """Whether ``message`` passes the list filters (``DateSent*`` on its ``date_sent``)."""
    if "To" in params and message.to != params["To"]:
        return False
    if "From" in params and message.from_ != params["From"]:
        return False
    day_filters = [n for n in ("DateSent", "DateSent<", "DateSent>") if n in params]
    if not day_filters:
        return True
    sent = message.resource.get("date_sent")
    if not sent:
        return False
    day = email.utils.parsedate_to_datetime(sent).astimezone(UTC).date().isoformat()
    return all(
        (name == "DateSent" and day == params[name])
        or (name == "DateSent<" and day <= params[name])
        or (name == "DateSent>" and day >= params[name])
        for name in day_filters
    )


def _form_of(request: Request, raw: bytes) -> list[tuple[str, str]] | None:
    """The form fields, or ``None`` when the body is not a UTF-8 urlencoded form."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return parse_qsl(text, keep_blank_values=True)


def running_twilio(**options: Any) -> AbstractContextManager[TwilioStandIn]:
    """A :class:`TwilioStandIn` served by uvicorn on a free loopback port."""
    return running(TwilioStandIn(**options))
