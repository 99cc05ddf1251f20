"""Several providers per channel (``RESETFLOW_EMAIL_PROVIDERS=postmark,smtp``…), Postmark and
Courier among them, run end to end against stand-ins that speak the providers' real shapes
(tests/standins) and a real SMTP server:

- a provider failure (503, timeout) moves on to the channel's next provider at once;
- a failure about the recipient (Postmark 406 inactive recipient, Twilio 21610 / 21211 /
  21614) skips the channel's other providers and goes to the user's next channel;
- Courier gets the tutorial's profile merge (a job of its own when the account is created)
  and send, with an idempotency key that keeps a retried send from delivering twice;
- the delivery log names the provider of every attempt; the single-provider variables
  keep working."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from resetflow.accounts.models import Channel
from resetflow.clock import Clock
from resetflow.config import ConfigError, Settings, load_settings
from resetflow.notify.providers.courier import CourierProvider
from resetflow.notify.providers.postmark import PostmarkProvider
from resetflow.notify.providers.registry import build_providers
from resetflow.notify.providers.smtp import SmtpProvider
from resetflow.notify.providers.twilio import TwilioProvider
from resetflow.services import build_services
from resetflow.storage.database import Database
from resetflow.storage.deliveries import DeliveryAttempt, DeliveryJob, DeliveryRepository
from resetflow.storage.dev_mailbox import DevMailbox
from tests.conftest import LiveApp
from tests.standins.courier import CourierStandIn
from tests.standins.fixtures import (  # noqa: F401
    courier_fixture,
    postmark_fixture,
    twilio_fixture,
)
from tests.standins.postmark import PostmarkStandIn
from tests.standins.twilio import TwilioStandIn
from tests.support.flow import NEW_PASSWORD, create_verified_account, find_code
from tests.support.servers import SmtpSink

NAME = "Ada Lovelace"
EMAIL = "ada@example.com"
PHONE = "+14155550100"
MASKED_EMAIL = "a***@example.com"
MASKED_PHONE = "+1******0100"
RESET = "password-reset-token"
Log = list[tuple[DeliveryJob, list[DeliveryAttempt]]]


def _smtp_settings(smtp: tuple[SmtpSink, int]) -> dict[str, Any]:
    return {"smtp_host": "127.0.0.1", "smtp_port": smtp[1]}


def _account(app: LiveApp, preference: Channel) -> str:
    return create_verified_account(app.settings, name=NAME, preference=preference)


def _request_reset(client: httpx.Client, **by: str) -> None:
    answer = client.post("/send-token", json=by)
    assert answer.status_code == 202, answer.text


def _finish_reset(client: httpx.Client, code: str) -> None:
    verified = client.post("/verify-token", json={"token": code})
    assert verified.status_code == 200, verified.text
    done = client.post(
        "/reset-password", json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD}
    )
    assert done.status_code == 200, done.text


def _deliveries(settings: Settings, user_id: str, notification: str = RESET) -> Log:
    """The user's jobs of ``notification`` (newest first) with their attempts, once every
    job of the user has finished."""

    async def read() -> Log:
        services = build_services(settings)
        try:
            deadline = time.monotonic() + 15
            while True:
                async with services.database.read() as conn:
                    repo = DeliveryRepository(conn)
                    jobs = await repo.list_jobs(user_id=user_id)
                    log = [(job, await repo.attempts(job.id)) for job in jobs]
                if jobs and all(job.status in ("sent", "failed") for job in jobs):
                    return [(job, tried) for job, tried in log if job.notification == notification]
                if time.monotonic() > deadline:
                    raise AssertionError(f"deliveries still pending: {log}")
                await asyncio.sleep(0.05)
        finally:
            await services.close()

    return asyncio.run(read())


def _summary(attempts: list[DeliveryAttempt]) -> list[tuple[str, str, str, str]]:
    return [(a.channel, a.provider, a.destination, a.status) for a in attempts]


# Failover between the providers of one channel ----------------------------------------------


def test_postmark_503_fails_over_to_smtp_at_once(
    live_app: Callable[..., LiveApp], postmark: PostmarkStandIn, smtp: tuple[SmtpSink, int]
) -> None:
    """With ``postmark,smtp`` and Postmark answering 503, the code goes out by SMTP in the
    same attempt (no backoff, no other channel); the log shows postmark ``retry`` then smtp
    ``sent``, and the mailed code resets the password."""
    sink, _ = smtp
    app = live_app(**postmark.settings(), **_smtp_settings(smtp), email_providers="postmark,smtp")
    user_id = _account(app, Channel.EMAIL)
    postmark.outage(503)

    with app.client() as client:
        _request_reset(client, email=EMAIL)
        mail = sink.wait_for(EMAIL)[0]
        assert mail.message["Subject"] == "Your password reset token"
        [(job, attempts)] = _deliveries(app.settings, user_id)
        assert _summary(attempts) == [
            ("email", "postmark", MASKED_EMAIL, "retry"),
            ("email", "smtp", MASKED_EMAIL, "sent"),
        ]
        assert attempts[0].error == "postmark: Postmark 503 ErrorCode 0"
        assert (job.status, job.channel, job.provider, job.tries) == ("sent", "email", "smtp", 0)
        assert job.provider_message_id == mail.message["Message-ID"].strip("<>")
        # Postmark saw one request, refused by the outage; it sent nothing.
        assert [r.status for r in postmark.requests] == [503]
        assert postmark.messages == []
        _finish_reset(client, find_code(mail.text))


def test_postmark_timeout_fails_over_to_smtp(
    live_app: Callable[..., LiveApp], postmark: PostmarkStandIn, smtp: tuple[SmtpSink, int]
) -> None:
    """A Postmark answer slower than RESETFLOW_PROVIDER_TIMEOUT_SECONDS is a retryable
    failure and SMTP takes over. Postmark takes no idempotency key, so an email it accepted
    before the timeout also goes out: the stand-in shows that honest duplicate."""
    sink, _ = smtp
    app = live_app(
        **postmark.settings(),
        **_smtp_settings(smtp),
        email_providers="postmark,smtp",
        provider_timeout_seconds=0.3,
    )
    user_id = _account(app, Channel.EMAIL)
    postmark.slow(2.0)

    with app.client() as client:
        _request_reset(client, email=EMAIL)
        sink.wait_for(EMAIL)
        [(job, attempts)] = _deliveries(app.settings, user_id)
    assert _summary(attempts) == [
        ("email", "postmark", MASKED_EMAIL, "retry"),
        ("email", "smtp", MASKED_EMAIL, "sent"),
    ]
    assert attempts[0].error == "postmark: Postmark unreachable: ReadTimeout"
    assert (job.status, job.provider) == ("sent", "smtp")
    assert len(postmark.wait_for(EMAIL)) == 1


def test_twilio_outage_fails_over_to_courier_for_sms(
    live_app: Callable[..., LiveApp],
    twilio: TwilioStandIn,
    courier: CourierStandIn,
    smtp: tuple[SmtpSink, int],
) -> None:
    """``RESETFLOW_SMS_PROVIDERS=twilio,courier``: Twilio down (503) → the SMS goes through
    Courier at once, pinned to the phone number and the sms channel."""
    sink, _ = smtp
    app = live_app(
        **twilio.settings(),
        **courier.settings(channels=()),
        **_smtp_settings(smtp),
        email_provider="smtp",
        sms_providers="twilio,courier",
    )
    user_id = _account(app, Channel.SMS)
    twilio.outage(503)

    with app.client() as client:
        _request_reset(client, phone=PHONE)
        [sms] = courier.wait_for(PHONE)
        [(job, attempts)] = _deliveries(app.settings, user_id)
        assert _summary(attempts) == [
            ("sms", "twilio", MASKED_PHONE, "retry"),
            ("sms", "courier", MASKED_PHONE, "sent"),
        ]
        assert (job.status, job.channel, job.provider) == ("sent", "sms", "courier")
        assert job.provider_message_id == sms.request_id
        assert sms.channel == "sms"
        assert sms.message["routing"] == {"method": "single", "channels": ["sms"]}
        assert sink.messages == []
        _finish_reset(client, find_code(sms.body or ""))


# A failure about the recipient goes to the next channel ---------------------------------------


def test_postmark_inactive_recipient_skips_smtp_and_falls_back_to_sms(
    live_app: Callable[..., LiveApp],
    postmark: PostmarkStandIn,
    twilio: TwilioStandIn,
    smtp: tuple[SmtpSink, int],
) -> None:
    """Postmark's 406 (inactive recipient: hard bounce, complaint, suppression) is about the
    address, not Postmark: SMTP, the next email provider, is not tried; the code goes by SMS
    at once. The log keeps Postmark's code but not its message, which quotes the address."""
    sink, _ = smtp
    app = live_app(
        **postmark.settings(),
        **twilio.settings(),
        **_smtp_settings(smtp),
        email_providers="postmark,smtp",
    )
    user_id = _account(app, Channel.EMAIL)
    postmark.deactivate(EMAIL)

    with app.client() as client:
        _request_reset(client, email=EMAIL)
        [sms] = twilio.wait_for(PHONE)
        [(job, attempts)] = _deliveries(app.settings, user_id)
        assert _summary(attempts) == [
            ("email", "postmark", MASKED_EMAIL, "failed"),
            ("sms", "twilio", MASKED_PHONE, "sent"),
        ]
        assert attempts[0].error == "postmark: Postmark 422 ErrorCode 406"
        [refused] = postmark.requests
        assert (refused.status, refused.answer["ErrorCode"]) == (422, 406)
        assert EMAIL in refused.answer["Message"]
        assert (job.status, job.channel, job.provider) == ("sent", "sms", "twilio")
        assert sink.messages == []
        _finish_reset(client, find_code(sms.body))


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (21610, "Attempt to send to unsubscribed recipient"),
        (21211, "The 'To' number {to} is not a valid phone number."),
        (21614, "'To' number is not a valid mobile number"),
    ],
)
def test_twilio_recipient_errors_fall_back_to_email_without_the_next_sms_provider(
    live_app: Callable[..., LiveApp],
    twilio: TwilioStandIn,
    courier: CourierStandIn,
    postmark: PostmarkStandIn,
    code: int,
    message: str,
) -> None:
    """Twilio refusing the number itself (unsubscribed, invalid, not mobile) sends the code
    by email (Postmark) at once; Courier, the second SMS provider, gets no request."""
    app = live_app(
        **twilio.settings(),
        **courier.settings(channels=()),
        **postmark.settings(),
        sms_providers="twilio,courier",
    )
    user_id = _account(app, Channel.SMS)
    twilio.fail_number(PHONE, code=code, message=message)

    with app.client() as client:
        _request_reset(client, phone=PHONE)
        [mail] = postmark.wait_for(EMAIL)
        [(job, attempts)] = _deliveries(app.settings, user_id)
        assert _summary(attempts) == [
            ("sms", "twilio", MASKED_PHONE, "failed"),
            ("email", "postmark", MASKED_EMAIL, "sent"),
        ]
        assert attempts[0].error == f"twilio: Twilio 400 code {code}"
        assert (job.status, job.channel, job.provider) == ("sent", "email", "postmark")
        assert job.provider_message_id == mail.message_id
        assert courier.sends() == []
        _finish_reset(client, find_code(mail.text or ""))


# Request shapes at the stand-ins -----------------------------------------------------------------


def test_postmark_request_shape_with_the_single_provider_variable(
    live_app: Callable[..., LiveApp], postmark: PostmarkStandIn
) -> None:
    """``RESETFLOW_EMAIL_PROVIDER=postmark`` alone: one ``POST /email`` with the server
    token, JSON in and out, exactly Postmark's fields (text and HTML, the tag, the
    ``outbound`` stream); Postmark's ``MessageID`` becomes the job's message id."""
    app = live_app(**postmark.settings())
    user_id = _account(app, Channel.EMAIL)

    with app.client() as client:
        _request_reset(client, email=EMAIL)
        [mail] = postmark.wait_for(EMAIL)
        [(job, attempts)] = _deliveries(app.settings, user_id)
    [request] = postmark.requests
    assert (request.method, request.path, request.status) == ("POST", "/email", 200)
    assert request.headers["x-postmark-server-token"] == postmark.server_token
    assert request.headers["accept"] == "application/json"
    assert request.headers["content-type"] == "application/json"
    body = request.json
    assert set(body) == {"From", "To", "Subject", "TextBody", "HtmlBody", "Tag", "MessageStream"}
    assert body["From"] == postmark.sender
    assert body["To"] == EMAIL
    assert body["Subject"] == "Your password reset token"
    assert (body["Tag"], body["MessageStream"]) == (RESET, "outbound")
    code = find_code(body["TextBody"])
    assert code in body["HtmlBody"]
    assert set(request.answer) == {"To", "SubmittedAt", "MessageID", "ErrorCode", "Message"}
    assert (request.answer["ErrorCode"], request.answer["Message"]) == (0, "OK")
    assert _summary(attempts) == [("email", "postmark", MASKED_EMAIL, "sent")]
    assert job.provider_message_id == mail.message_id == request.answer["MessageID"]


def test_courier_profile_merge_then_templated_send(
    live_app: Callable[..., LiveApp], courier: CourierStandIn
) -> None:
    """The tutorial's Courier calls: a profile merge for the account (its own job, at
    creation), then a send of the tutorial's template (COURIER_TEMPLATE) with the code in
    ``data``, to the user id with the verified address pinned and the channel chosen by
    resetflow; the ``password-changed`` notice afterwards, which has no Courier template,
    goes as inline content."""
    app = live_app(**courier.settings(channels=("email",)), courier_template="TEMPLATE123")
    user_id = _account(app, Channel.EMAIL)

    with app.client() as client:
        _request_reset(client, email=EMAIL)
        [sent] = courier.wait_for(EMAIL)
        [(job, attempts)] = _deliveries(app.settings, user_id)
        [merge] = [r for r in courier.requests if r.path.startswith("/profiles/")]
        [send] = courier.sends()
        assert (merge.method, merge.path, merge.status) == ("POST", f"/profiles/{user_id}", 200)
        profile = {
            "email": EMAIL,
            "phone_number": PHONE,
            "name": NAME,
            "custom": {"preference": "email"},
        }
        assert merge.json == {"profile": profile}
        assert merge.answer == {"status": "SUCCESS"}
        assert courier.profiles[user_id] == profile
        for request in (merge, send):
            assert request.headers["authorization"] == f"Bearer {courier.auth_token}"
            assert request.headers["content-type"] == "application/json"
        assert (send.method, send.path, send.status) == ("POST", "/send", 202)
        message = send.json["message"]
        assert set(message) == {"to", "routing", "template", "data"}
        assert message["to"] == {"user_id": user_id, "email": EMAIL}
        assert message["routing"] == {"method": "single", "channels": ["email"]}
        assert message["template"] == "TEMPLATE123"
        assert message["data"]["name"] == NAME
        code = message["data"]["token"]
        assert send.headers["idempotency-key"] == f"{job.id}-email"
        assert send.answer == {"requestId": sent.request_id}
        assert (sent.channel, sent.user_id, sent.template) == ("email", user_id, "TEMPLATE123")
        assert _summary(attempts) == [("email", "courier", MASKED_EMAIL, "sent")]
        assert job.provider_message_id == sent.request_id
        _finish_reset(client, code)

    # One notice per verified contact: the email one through Courier, the SMS one through
    # the dev mailbox (the SMS provider here).
    changed = _deliveries(app.settings, user_id, "password-changed")
    [by_email] = [job for job, _ in changed if job.channel == "email"]
    assert by_email.provider == "courier"
    [notice] = [m for m in courier.messages if m.request_id == by_email.provider_message_id]
    assert "template" not in notice.message
    assert notice.title == "Your password was changed"
    assert notice.body and "password" in notice.body.lower()
    assert notice.message["routing"] == {"method": "single", "channels": ["email"]}


def test_courier_send_carries_the_idempotency_key_and_is_not_repeated_after_a_202(
    live_app: Callable[..., LiveApp], courier: CourierStandIn
) -> None:
    """Courier takes the send (202) but the answer comes after the provider timeout: the
    worker retries the job, the retry carries the same ``Idempotency-Key`` and gets the same
    ``requestId``, and the user gets one message, not two."""
    app = live_app(**courier.settings(channels=("email",)), provider_timeout_seconds=0.3)
    user_id = _account(app, Channel.EMAIL)
    courier.slow(2.0, requests=1)

    with app.client() as client:
        _request_reset(client, email=EMAIL)
        [(job, attempts)] = _deliveries(app.settings, user_id)
        assert _summary(attempts) == [
            ("email", "courier", MASKED_EMAIL, "retry"),
            ("email", "courier", MASKED_EMAIL, "sent"),
        ]
        assert attempts[0].error == "courier: Courier send unreachable: ReadTimeout"
        first, second = courier.sends()
        key = f"{job.id}-email"
        assert first.headers["idempotency-key"] == second.headers["idempotency-key"] == key
        assert first.json == second.json
        assert first.status == second.status == 202
        assert first.answer == second.answer
        [sent] = courier.messages
        assert sent.idempotency_key == key
        assert job.provider_message_id == sent.request_id == second.answer["requestId"]
        _finish_reset(client, find_code(sent.body or ""))
    # Nothing more went to /send for that job once it had its 202 (the third send is the
    # password-changed notice, a job of its own with a key of its own).
    keys = [r.headers["idempotency-key"] for r in courier.sends()]
    assert keys.count(key) == 2
    assert len(set(keys)) == len(keys) - 1


# Configuration -------------------------------------------------------------------------------


def _providers(settings: Settings) -> dict[Channel, list[Any]]:
    async def build() -> dict[Channel, list[Any]]:
        database = Database(settings.resolved_database_url)
        providers = build_providers(settings, mailbox=DevMailbox(database=database), clock=Clock())
        for provider in {id(p): p for ps in providers.values() for p in ps}.values():
            await provider.close()
        await database.close()
        return providers

    return asyncio.run(build())


def test_single_provider_variables_still_choose_one_provider_per_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESETFLOW_EMAIL_PROVIDER", "smtp")
    monkeypatch.setenv("RESETFLOW_SMS_PROVIDER", "twilio")
    monkeypatch.setenv("RESETFLOW_TWILIO_ACCOUNT_SID", "AC" + "0" * 32)
    monkeypatch.setenv("RESETFLOW_TWILIO_AUTH_TOKEN", "token")
    monkeypatch.setenv("RESETFLOW_TWILIO_FROM", "+15005550006")
    settings = load_settings(data_dir=tmp_path, _env_file=None)
    assert settings.email_provider_chain == ["smtp"]
    assert settings.sms_provider_chain == ["twilio"]
    providers = _providers(settings)
    assert [type(p) for p in providers[Channel.EMAIL]] == [SmtpProvider]
    assert [type(p) for p in providers[Channel.SMS]] == [TwilioProvider]


def test_provider_lists_are_read_from_the_environment_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Comma-separated, spaces and case forgiven; the list wins over the single variable;
    Courier serving both channels is one client, shared."""
    monkeypatch.setenv("RESETFLOW_EMAIL_PROVIDER", "smtp")
    monkeypatch.setenv("RESETFLOW_EMAIL_PROVIDERS", " Postmark, smtp ,courier")
    monkeypatch.setenv("RESETFLOW_SMS_PROVIDERS", "courier,console")
    monkeypatch.setenv("RESETFLOW_POSTMARK_SERVER_TOKEN", "server-token")
    monkeypatch.setenv("COURIER_AUTH_TOKEN", "pk_test")
    settings = load_settings(data_dir=tmp_path, _env_file=None)
    assert settings.email_provider_chain == ["postmark", "smtp", "courier"]
    assert settings.sms_provider_chain == ["courier", "console"]
    providers = _providers(settings)
    email, sms = providers[Channel.EMAIL], providers[Channel.SMS]
    assert [p.name for p in email] == ["postmark", "smtp", "courier"]
    assert [p.name for p in sms] == ["courier", "console"]
    assert isinstance(email[0], PostmarkProvider)
    assert isinstance(email[2], CourierProvider)
    assert email[2] is sms[0]


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (
            {"email_providers": "postmark,carrier-pigeon", "postmark_server_token": "t"},
            "RESETFLOW_EMAIL_PROVIDERS: 'carrier-pigeon' is not one of console, courier, "
            "mailbox, outbox, postmark, smtp",
        ),
        ({"sms_providers": "twilio,smtp"}, "RESETFLOW_SMS_PROVIDERS: 'smtp' is not one of"),
        ({"email_providers": "smtp,SMTP"}, "RESETFLOW_EMAIL_PROVIDERS: lists smtp twice"),
        (
            {"email_providers": "smtp,postmark"},
            "RESETFLOW_POSTMARK_SERVER_TOKEN: required when the postmark provider is used",
        ),
        (
            {"email_provider": "postmark", "postmark_server_token": ""},
            "RESETFLOW_POSTMARK_SERVER_TOKEN: required when the postmark provider is used",
        ),
        (
            {
                "sms_providers": "twilio,courier",
                "twilio_account_sid": "AC" + "0" * 32,
                "twilio_auth_token": "t",
                "twilio_from": "+15005550006",
            },
            "RESETFLOW_COURIER_AUTH_TOKEN: required when the courier provider is used",
        ),
    ],
)
def test_bad_provider_lists_fail_with_one_line_naming_the_variable(
    tmp_path: Path, overrides: dict[str, Any], line: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(data_dir=tmp_path, _env_file=None, **overrides)
    assert str(caught.value).startswith(line)
    assert "\n" not in str(caught.value)


def test_postmark_and_courier_are_accepted_once_configured(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        _env_file=None,
        email_provider="postmark",
        sms_provider="courier",
        postmark_server_token="server-token",
        courier_auth_token="pk_test",
    )
    assert (settings.email_provider_chain, settings.sms_provider_chain) == (
        ["postmark"],
        ["courier"],
    )
