"""The reset flow with SMS sent through Twilio's Messages API (a local stand-in that checks
every request against Twilio's OpenAPI description) and email through a real SMTP server:
delivery by SMS, failover to email, retries, and what the delivery log keeps."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx

from resetflow.accounts.models import Channel
from resetflow.accounts.service import NewAccount
from resetflow.config import Settings
from resetflow.crypto import new_token
from resetflow.services import build_services
from resetflow.storage.deliveries import DeliveryAttempt, DeliveryJob, DeliveryRepository
from resetflow.storage.migrate import upgrade
from tests.conftest import LiveApp
from tests.standins.fixtures import twilio_fixture  # noqa: F401
from tests.standins.twilio import TEST_SENDER, TwilioStandIn
from tests.support.flow import NEW_PASSWORD, PASSWORD, find_code, sign_up
from tests.support.servers import SmtpSink

NAME = "Ada Lovelace"
EMAIL = "ada@example.com"
PHONE = "+14155550100"
MASKED_EMAIL = "a***@example.com"
MASKED_PHONE = "+1******0100"
RESET_SMS = re.compile(r"Hi there Ada Lovelace 👋 Your password reset token is: (\d{6})")
JobLog = list[tuple[DeliveryJob, list[DeliveryAttempt]]]


def _start(
    live_app: Callable[..., LiveApp],
    twilio: TwilioStandIn,
    smtp: tuple[SmtpSink, int],
    **overrides: Any,
) -> LiveApp:
    _, port = smtp
    return live_app(
        **twilio.settings(sender=TEST_SENDER),
        email_provider="smtp",
        smtp_host="127.0.0.1",
        smtp_port=port,
        email_from="resetflow@example.org",
        **overrides,
    )


def _create_user_with_both_contacts_verified(settings: Settings) -> str:
    """An account that prefers SMS, with email and phone verified (as the operators' CLI
    makes them), written into the running app's database."""
    upgrade(settings.resolved_database_url)

    async def create() -> str | None:
        services = build_services(settings)
        try:
            return await services.accounts.sign_up(
                NewAccount(
                    name=NAME,
                    email=EMAIL,
                    phone=PHONE,
                    password=PASSWORD,
                    preference=Channel.SMS,
                ),
                attempt_id=new_token(),
                verify=False,
            )
        finally:
            await services.close()

    user_id = asyncio.run(create())
    assert user_id is not None
    return user_id


def _finished_deliveries(settings: Settings, user_id: str, *, timeout: float = 15) -> JobLog:
    """The user's delivery jobs (newest first) with their attempts, once none is pending."""

    async def read() -> JobLog:
        services = build_services(settings)
        try:
            deadline = time.monotonic() + timeout
            while True:
                async with services.database.read() as conn:
                    repo = DeliveryRepository(conn)
                    jobs = await repo.list_jobs(user_id=user_id)
                    log = [(job, await repo.attempts(job.id)) for job in jobs]
                if jobs and all(job.status in ("sent", "failed") for job in jobs):
                    return log
                if time.monotonic() > deadline:
                    raise AssertionError(f"deliveries still pending: {log}")
                await asyncio.sleep(0.05)
        finally:
            await services.close()

    return asyncio.run(read())


def _attempt_summary(attempts: list[DeliveryAttempt]) -> list[tuple[str, str, str, str]]:
    return [(a.channel, a.provider, a.destination, a.status) for a in attempts]


def _assert_code_not_logged(code: str, log: JobLog) -> None:
    """Neither the code nor the message around it is in any delivery-log column."""
    standalone = re.compile(rf"(?<!\d){code}(?!\d)")
    for job, attempts in log:
        for value in (job.last_error, job.provider_message_id):
            assert value is None or not standalone.search(value), (job.id, value)
        for attempt in attempts:
            for column in ("error", "destination", "provider_message_id"):
                value = getattr(attempt, column)
                assert value is None or not standalone.search(value), (column, value)
                assert value is None or "reset token" not in value, (column, value)


def _finish_reset(client: httpx.Client, code: str) -> None:
    verified = client.post("/verify-token", json={"token": code})
    assert verified.status_code == 200, verified.text
    assert verified.json() == {"redirect": "/new-password"}
    done = client.post(
        "/reset-password",
        json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
    )
    assert done.status_code == 200, done.text
    assert done.json()["redirect"] == "/login"


# a. The whole flow over SMS ------------------------------------------------------------


def test_reset_by_sms_through_twilio_standin(
    live_app: Callable[..., LiveApp], twilio: TwilioStandIn, smtp: tuple[SmtpSink, int]
) -> None:
    """A user who prefers SMS verifies their phone with the texted code, then asks for a
    reset by phone and by email: each time the code comes by SMS only, in the exact
    template; the newest code sets a new password, which then signs in and the old fails."""
    sink, _ = smtp
    app = _start(live_app, twilio, smtp)
    with app.client() as client:
        assert sign_up(client, preference="sms").status_code == 201
        welcome = twilio.wait_for(PHONE)[0]
        assert welcome.from_ == TEST_SENDER
        assert re.fullmatch(r"Hi Ada Lovelace, your confirmation code is: \d{6}", welcome.body)
        verified = client.post("/verify-contact", json={"token": find_code(welcome.body)})
        assert verified.status_code == 200, verified.text
        assert client.post("/logout", json={}).status_code == 200

        by_phone = client.post("/send-token", json={"phone": PHONE})
        assert by_phone.status_code == 202
        assert by_phone.json() == {"redirect": "/enter-token", "mode": "phone"}
        first = twilio.wait_for(PHONE, count=2)[1]
        first_match = RESET_SMS.fullmatch(first.body)
        assert first_match, first.body

        by_email = client.post("/send-token", json={"email": EMAIL})
        assert by_email.status_code == 202
        assert by_email.json() == {"redirect": "/enter-token", "mode": "email"}
        second = twilio.wait_for(PHONE, count=3)[2]
        second_match = RESET_SMS.fullmatch(second.body)
        assert second_match, second.body
        code = second_match.group(1)
        assert all(m.from_ == TEST_SENDER for m in twilio.messages)

        if first_match.group(1) != code:  # a new request voids the older code
            stale = client.post("/verify-token", json={"token": first_match.group(1)})
            assert stale.status_code == 400
        _finish_reset(client, code)

        old = client.post("/login", json={"email": EMAIL, "password": PASSWORD})
        assert old.status_code == 401
        new = client.post("/login", json={"email": EMAIL, "password": NEW_PASSWORD})
        assert new.status_code == 200, new.text
        assert new.json() == {"redirect": "/account"}
        changed = twilio.wait_for(PHONE, count=4)[3]
        assert changed.body.startswith("Hi Ada Lovelace, your password was just changed.")

    # Every request resetflow made passed the stand-in's checks; no mail went out at all.
    assert [r.status for r in twilio.requests] == [201, 201, 201, 201]
    assert sink.messages == []


# b. Failover and retries -----------------------------------------------------------------


def test_refused_number_fails_over_to_email_and_logs_both_attempts(
    live_app: Callable[..., LiveApp], twilio: TwilioStandIn, smtp: tuple[SmtpSink, int]
) -> None:
    """Twilio refusing the preferred phone for good (21610) sends the code by email
    instead, at once; the log shows twilio ``failed`` then smtp ``sent`` with masked
    destinations, the job ends ``sent`` by email and its sealed payload is erased."""
    sink, _ = smtp
    app = _start(live_app, twilio, smtp)
    user_id = _create_user_with_both_contacts_verified(app.settings)
    twilio.fail_number(PHONE)

    with app.client() as client:
        answer = client.post("/send-token", json={"phone": PHONE})
        assert answer.status_code == 202
        mail = sink.wait_for(EMAIL)[0]
        assert mail.message["Subject"] == "Your password reset token"
        code = find_code(mail.text)

        [(job, attempts)] = _finished_deliveries(app.settings, user_id)
        assert job.notification == "password-reset-token"
        assert _attempt_summary(attempts) == [
            ("sms", "twilio", MASKED_PHONE, "failed"),
            ("email", "smtp", MASKED_EMAIL, "sent"),
        ]
        assert attempts[0].error is not None and "21610" in attempts[0].error
        assert attempts[0].provider_message_id is None
        assert attempts[1].error is None
        assert attempts[1].provider_message_id
        assert mail.message["Message-ID"].strip("<>") == attempts[1].provider_message_id
        assert (job.status, job.channel, job.provider) == ("sent", "email", "smtp")
        assert job.provider_message_id == attempts[1].provider_message_id
        assert job.sealed_payload is None
        _assert_code_not_logged(code, [(job, attempts)])

        # Twilio saw a valid request and refused it; nothing was queued there.
        [refused] = twilio.requests
        assert (refused.status, refused.answer["code"]) == (400, 21610)
        assert refused.fields["To"] == PHONE
        assert twilio.messages == []

        # The mailed code is the live one.
        _finish_reset(client, code)


def test_twilio_outage_is_retried_with_backoff_until_it_recovers(
    live_app: Callable[..., LiveApp], twilio: TwilioStandIn, smtp: tuple[SmtpSink, int]
) -> None:
    """Two 503s from Twilio are logged as ``retry`` and the job is tried again after a
    backoff (full jitter under 0.1 s, then 0.2 s); the third try goes through by SMS and no
    email is sent."""
    sink, _ = smtp
    app = _start(live_app, twilio, smtp, delivery_max_tries=4, delivery_backoff_seconds=0.1)
    user_id = _create_user_with_both_contacts_verified(app.settings)
    twilio.outage(503, requests=2)

    with app.client() as client:
        assert client.post("/send-token", json={"email": EMAIL}).status_code == 202
        sms = twilio.wait_for(PHONE)[0]
        match = RESET_SMS.fullmatch(sms.body)
        assert match, sms.body

        [(job, attempts)] = _finished_deliveries(app.settings, user_id)
        assert _attempt_summary(attempts) == [
            ("sms", "twilio", MASKED_PHONE, "retry"),
            ("sms", "twilio", MASKED_PHONE, "retry"),
            ("sms", "twilio", MASKED_PHONE, "sent"),
        ]
        assert [a.error for a in attempts[:2]] == ["twilio: Twilio 503 code 20503"] * 2
        assert attempts[2].provider_message_id == sms.sid
        gaps = [
            later.created_at - earlier.created_at for earlier, later in itertools.pairwise(attempts)
        ]
        # Full jitter: each retry waits a random time between the floor (0.05 s) and the
        # backoff ceiling (0.1 s, then 0.2 s), never less than the floor.
        assert all(gap >= timedelta(seconds=0.05) for gap in gaps), gaps
        assert (job.status, job.channel, job.provider) == ("sent", "sms", "twilio")
        assert job.provider_message_id == sms.sid
        assert job.sealed_payload is None
        assert [r.status for r in twilio.requests] == [503, 503, 201]
        assert sink.messages == []
        _assert_code_not_logged(match.group(1), [(job, attempts)])

        _finish_reset(client, match.group(1))


def test_twilio_outage_past_the_retries_fails_over_to_email(
    live_app: Callable[..., LiveApp], twilio: TwilioStandIn, smtp: tuple[SmtpSink, int]
) -> None:
    """With Twilio down for good and ``delivery_max_tries=2``, the phone gets two
    ``retry`` attempts, then the code goes by email and the job ends ``sent`` by smtp."""
    sink, _ = smtp
    app = _start(live_app, twilio, smtp, delivery_max_tries=2, delivery_backoff_seconds=0.1)
    user_id = _create_user_with_both_contacts_verified(app.settings)
    twilio.outage(503)

    with app.client() as client:
        assert client.post("/send-token", json={"phone": PHONE}).status_code == 202
        mail = sink.wait_for(EMAIL)[0]
        code = find_code(mail.text)

        [(job, attempts)] = _finished_deliveries(app.settings, user_id)
        assert _attempt_summary(attempts) == [
            ("sms", "twilio", MASKED_PHONE, "retry"),
            ("sms", "twilio", MASKED_PHONE, "retry"),
            ("email", "smtp", MASKED_EMAIL, "sent"),
        ]
        assert (job.status, job.channel, job.provider) == ("sent", "email", "smtp")
        assert job.sealed_payload is None
        assert [r.status for r in twilio.requests] == [503, 503]
        assert twilio.messages == []
        _assert_code_not_logged(code, [(job, attempts)])

        _finish_reset(client, code)


# c. The code stays out of the delivery log ---------------------------------------------


def test_delivery_log_never_holds_the_code_even_when_twilio_echoes_it(
    live_app: Callable[..., LiveApp], twilio: TwilioStandIn, smtp: tuple[SmtpSink, int]
) -> None:
    """Through a 503 (``retry``), a refusal whose error message quotes the whole SMS back
    (``failed``) and the email that finally goes out (``sent``), no column of any attempt
    (error, destination, provider message id) nor of the job holds the code or its text;
    destinations are masked."""
    sink, _ = smtp
    app = _start(live_app, twilio, smtp, delivery_backoff_seconds=0.1)
    user_id = _create_user_with_both_contacts_verified(app.settings)
    twilio.outage(503, requests=1)
    twilio.fail_number(PHONE, code=21610, message="Unsubscribed recipient {to}: {body}")

    with app.client() as client:
        assert client.post("/send-token", json={"phone": PHONE}).status_code == 202
        code = find_code(sink.wait_for(EMAIL)[0].text)

    log = _finished_deliveries(app.settings, user_id)
    [(job, attempts)] = log
    assert [a.status for a in attempts] == ["retry", "failed", "sent"]
    # The stand-in really did put the code in its answer, so the check below means something.
    assert code in twilio.requests[-1].answer["message"]
    _assert_code_not_logged(code, log)
    for attempt in attempts:
        assert attempt.destination in (MASKED_PHONE, MASKED_EMAIL)
        for value in (attempt.error, attempt.destination, attempt.provider_message_id):
            assert value is None or (PHONE not in value and EMAIL not in value)
    assert job.last_error is None
