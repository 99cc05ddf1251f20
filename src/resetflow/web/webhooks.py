"""Provider webhooks: Twilio status callbacks and Postmark delivery and bounce events.

They move a delivery job that is ``sent`` to ``delivered`` or ``undeliverable``, found by
the provider's message id (and the provider: a Postmark event never touches a Twilio job).
Jobs only move forward: a job that is ``failed``, ``delivered`` or ``undeliverable``
stays so, and the first final report wins. Every report on a known job is kept in the
delivery log as a ``webhook`` attempt; a report on an unknown message id is answered
``200`` (a provider would otherwise retry it for days) and changes nothing.

These are server-to-server endpoints, authenticated by the provider and nothing else:

- no session, no CSRF token, no ``Origin`` check (a provider has none of them; the
  session middleware skips ``/webhooks/``);
- no rate limit: not the per-address web limits, whose ``20/minute`` would drop a
  provider's bursts (its callbacks come from a few shared addresses), and no separate
  one. A request is authenticated (one HMAC or two constant-time comparisons over a body
  of at most ``RESETFLOW_MAX_BODY_BYTES``) before the database is touched, so a flood of
  forged requests costs CPU only; the credentials are long (16+ characters, checked at
  start-up) so that guessing is hopeless; restrict ``/webhooks/`` to the providers'
  address ranges at the proxy if you want more.

Twilio: ``POST /webhooks/twilio``, form-encoded (``MessageSid``, ``MessageStatus``,
``ErrorCode``, ...), signed in ``X-Twilio-Signature``: base64 of the HMAC-SHA1, keyed
with the auth token, of the full URL followed by every form parameter's name and value,
sorted by name (Twilio's documented algorithm). The URL is ``RESETFLOW_BASE_URL`` + path
(+ query), never the request's ``Host`` header, which the sender chooses. ``delivered``
(or ``read``) → ``delivered``; ``undelivered``, ``failed`` (or ``canceled``) →
``undeliverable``; the rest (``queued``, ``sent``, ...) settle nothing.

Postmark: ``POST /webhooks/postmark``, JSON, let in by ``Authorization: Basic`` with
``RESETFLOW_POSTMARK_WEBHOOK_USER``/``_PASSWORD`` or by the header
``X-Resetflow-Webhook-Secret: $RESETFLOW_POSTMARK_WEBHOOK_SECRET``; with neither set, the
endpoint does not exist (404). ``RecordType`` ``Delivery`` → ``delivered``; ``Bounce`` →
``undeliverable`` with the bounce ``Type`` in the reason, except the types that do not
mean the message failed (an auto-reply, a subscribe or unsubscribe request, an address
change notice, a challenge or relay test), which are logged and settle nothing. Other
record types (opens, clicks, spam complaints, subscription changes) are ignored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from fastapi import APIRouter
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from resetflow.errors import MalformedRequest, UnsupportedMediaType, WebhookRefused
from resetflow.notify.providers.twilio import STATUS_CALLBACK_PATH
from resetflow.storage.deliveries import JobStatus
from resetflow.web.edge import services_of

log = logging.getLogger("resetflow.webhooks")
router = APIRouter(include_in_schema=False)

TWILIO = "twilio"
POSTMARK = "postmark"
POSTMARK_PATH = "/webhooks/postmark"
POSTMARK_SECRET_HEADER = "x-resetflow-webhook-secret"

TWILIO_DELIVERED = frozenset({"delivered", "read"})
TWILIO_UNDELIVERABLE = frozenset({"undelivered", "failed", "canceled"})
# Postmark bounce types that are not a failed delivery of our message.
POSTMARK_NOT_FAILURES = frozenset(
    {
        "AutoResponder",
        "AddressChange",
        "Subscribe",
        "Unsubscribe",
        "ChallengeVerification",
        "OpenRelayTest",
    }
)
MAX_MESSAGE_ID = 128  # delivery_jobs.provider_message_id
_WORD = re.compile(r"[A-Za-z0-9_-]{1,40}")
_DIGITS = re.compile(r"[0-9]{1,8}")


# Twilio --------------------------------------------------------------------------------


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """``X-Twilio-Signature`` for a form posted to ``url``: names sorted, and a name's
    values sorted and each taken once (as Twilio's own libraries compute it)."""
    grouped: dict[str, set[str]] = {}
    for name, value in params:
        grouped.setdefault(name, set()).add(value)
    signed = url + "".join(
        name + value for name in sorted(grouped) for value in sorted(grouped[name])
    )
    digest = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def twilio_signature_valid(
    auth_token: str, url: str, params: list[tuple[str, str]], signature: str
) -> bool:
    """Whether ``signature`` signs ``params`` posted to ``url``, with or without the port
    (Twilio signs the URL as it was configured; its libraries accept either form)."""
    if not signature:
        return False
    sent = signature.encode()
    valid = False
    for candidate in _port_variants(url):
        expected = twilio_signature(auth_token, candidate, params).encode()
        valid = hmac.compare_digest(expected, sent) or valid
    return valid


def _port_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    if parts.port is not None:
        bare = parts.netloc.rsplit(":", 1)[0]
        return [url, urlunsplit(parts._replace(netloc=bare))]
    if default is not None:
        return [url, urlunsplit(parts._replace(netloc=f"{parts.netloc}:{default}"))]
    return [url]


@router.post(STATUS_CALLBACK_PATH)
async def twilio_status(request: Request) -> Response:
    services = services_of(request)
    token = services.settings.twilio_auth_token
    if token is None or not token.get_secret_value():
        raise HTTPException(404)
    if _media_type(request) != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("Send the form Twilio sends.")
    try:
        params = parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise MalformedRequest("The form is not UTF-8.") from None
    query = request.scope.get("query_string", b"").decode("latin-1")
    url = services.settings.base_url + STATUS_CALLBACK_PATH + (f"?{query}" if query else "")
    signature = request.headers.get("x-twilio-signature", "")
    if not twilio_signature_valid(token.get_secret_value(), url, params, signature):
        log.warning("webhook_refused", extra={"provider": TWILIO})
        raise WebhookRefused()
    fields = dict(params)
    message_id = fields.get("MessageSid") or fields.get("SmsSid") or ""
    reported = (fields.get("MessageStatus") or fields.get("SmsStatus") or "").lower()
    if not _WORD.fullmatch(reported):
        reported = "unknown"
    report = f"twilio: {reported}"
    error_code = fields.get("ErrorCode", "")
    if _DIGITS.fullmatch(error_code):
        report += f", error {error_code}"
    status = (
        JobStatus.DELIVERED
        if reported in TWILIO_DELIVERED
        else JobStatus.UNDELIVERABLE
        if reported in TWILIO_UNDELIVERABLE
        else None
    )
    return await _apply(request, TWILIO, message_id, status, report)


# Postmark ------------------------------------------------------------------------------


def _postmark_authenticated(request: Request) -> bool | None:
    """``None`` when no credentials are configured, else whether the request has them."""
    settings = services_of(request).settings
    user, password = settings.postmark_webhook_user, settings.postmark_webhook_password
    secret = settings.postmark_webhook_secret
    if (user is None or password is None) and secret is None:
        return None
    valid = False
    if user is not None and password is not None:
        sent_user, sent_password = _basic_credentials(request.headers.get("authorization", ""))
        user_ok = hmac.compare_digest(sent_user.encode(), user.encode())
        password_ok = hmac.compare_digest(
            sent_password.encode(), password.get_secret_value().encode()
        )
        valid = user_ok and password_ok
    if secret is not None:
        sent_secret = request.headers.get(POSTMARK_SECRET_HEADER, "")
        secret_ok = hmac.compare_digest(sent_secret.encode(), secret.get_secret_value().encode())
        valid = valid or secret_ok
    return valid


def _basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    user, _, password = decoded.partition(":")
    return user, password


@router.post(POSTMARK_PATH)
async def postmark_event(request: Request) -> Response:
    authenticated = _postmark_authenticated(request)
    if authenticated is None:
        raise HTTPException(404)
    if not authenticated:
        log.warning("webhook_refused", extra={"provider": POSTMARK})
        raise WebhookRefused()
    if _media_type(request) != "application/json":
        raise UnsupportedMediaType("Send the JSON Postmark sends.")
    try:
        event = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise MalformedRequest("The body is not valid JSON.") from None
    if not isinstance(event, dict):
        raise MalformedRequest("The body must be a JSON object.")
    record_type = event.get("RecordType")
    message_id = event.get("MessageID")
    if record_type == "Delivery":
        status: JobStatus | None = JobStatus.DELIVERED
        report = "postmark: delivered"
    elif record_type == "Bounce":
        kind = event.get("Type")
        kind = kind if isinstance(kind, str) and _WORD.fullmatch(kind) else "unknown"
        status = None if kind in POSTMARK_NOT_FAILURES else JobStatus.UNDELIVERABLE
        report = f"postmark: bounce {kind}"
    else:
        return JSONResponse({"result": "ignored"})
    return await _apply(
        request, POSTMARK, message_id if isinstance(message_id, str) else "", status, report
    )


# Both ----------------------------------------------------------------------------------


async def _apply(
    request: Request, provider: str, message_id: str, status: JobStatus | None, report: str
) -> Response:
    outcome = None
    if message_id and len(message_id) <= MAX_MESSAGE_ID:
        outcome = await services_of(request).delivery_log.record_report(
            provider=provider, provider_message_id=message_id, status=status, report=report
        )
    if outcome is None:
        # Nothing of ours (or a provider's test event): accepted, so that it is not retried.
        log.info("webhook_unknown_message", extra={"provider": provider, "report": report})
        return JSONResponse({"result": "unknown_message"})
    log.info(
        "webhook",
        extra={
            "provider": provider,
            "job_id": outcome.job_id,
            "report": report,
            "status": outcome.status,
            "moved": outcome.moved,
        },
    )
    return JSONResponse({"result": "updated" if outcome.moved else "unchanged"})


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()
