"""Twilio's ``ValidityPeriod`` and ``MessagingServiceSid`` (checked by the stand-in against
Twilio's OpenAPI description), how Twilio and Postmark errors are classed, and the retry
schedule: full jitter, never past the code's expiry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from resetflow.accounts.models import Channel
from resetflow.clock import FrozenClock
from resetflow.config import ConfigError, load_settings
from resetflow.notify.messages import RenderedMessage
from resetflow.notify.providers.base import ProviderError
from resetflow.notify.providers.postmark import PostmarkProvider
from resetflow.notify.providers.registry import build_providers
from resetflow.notify.providers.twilio import TwilioProvider, validity_period
from resetflow.notify.worker import DeliveryWorker, WorkerPolicy
from resetflow.services import build_services, make_renderer
from resetflow.storage.deliveries import DeliveryRepository
from tests.conftest import LiveApp
from tests.standins.fixtures import twilio_fixture  # noqa: F401
from tests.standins.twilio import TEST_SENDER, TwilioStandIn
from tests.support.flow import create_verified_account
from tests.support.servers import free_port

PHONE = "+14155550100"
SERVICE_SID = "MG" + "a" * 32
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _message(expires_at: datetime | None = None) -> RenderedMessage:
    return RenderedMessage(
        notification="password-reset-token",
        channel=Channel.SMS,
        to=PHONE,
        text="Your code is 123456",
        expires_at=expires_at,
    )


def _send(provider: TwilioProvider | PostmarkProvider, message: RenderedMessage) -> Any:
    async def go() -> Any:
        try:
            return await provider.send(message)
        finally:
            await provider.close()

    return asyncio.run(go())


# ValidityPeriod and MessagingServiceSid ---------------------------------------------------


@pytest.mark.parametrize(
    ("seconds_left", "expected"),
    [(299.9, 299), (1.5, 1), (0.2, 1), (-5, 1), (36000, 36000), (50000, 36000)],
)
def test_validity_period_is_the_codes_remaining_life_within_twilios_bounds(
    seconds_left: float, expected: int
) -> None:
    assert validity_period(NOW + timedelta(seconds=seconds_left), NOW) == expected


def test_validity_period_and_messaging_service_pass_twilios_schema(
    twilio: TwilioStandIn,
) -> None:
    provider = TwilioProvider(
        account_sid=twilio.account_sid,
        auth_token=twilio.auth_token,
        messaging_service_sid=SERVICE_SID,
        base_url=twilio.url,
        now=lambda: NOW,
    )
    result = _send(provider, _message(expires_at=NOW + timedelta(seconds=300)))
    assert result.provider_message_id
    [request] = twilio.requests
    assert request.status == 201, request.answer
    assert request.fields["ValidityPeriod"] == "300"
    assert request.fields["MessagingServiceSid"] == SERVICE_SID
    assert "From" not in request.fields
    assert twilio.messages[0].parameters["ValidityPeriod"] == 300


def test_a_message_without_expiry_has_no_validity_period(twilio: TwilioStandIn) -> None:
    provider = TwilioProvider(
        account_sid=twilio.account_sid,
        auth_token=twilio.auth_token,
        sender=TEST_SENDER,
        base_url=twilio.url,
    )
    _send(provider, _message())
    [request] = twilio.requests
    assert request.status == 201
    assert request.fields["From"] == TEST_SENDER
    assert "ValidityPeriod" not in request.fields


def test_the_worker_passes_the_jobs_expiry_to_twilio(
    live_app: Callable[..., LiveApp], twilio: TwilioStandIn
) -> None:
    app = live_app(**twilio.settings())
    create_verified_account(app.settings, phone=PHONE, preference=Channel.SMS)
    with app.client() as client:
        assert client.post("/send-token", json={"phone": PHONE}).status_code == 202
    [sms] = twilio.wait_for(PHONE)
    ttl = app.settings.code_ttl_seconds
    assert ttl - 10 <= sms.parameters["ValidityPeriod"] <= ttl


def test_twilio_needs_a_sender_or_a_messaging_service(tmp_path: Path) -> None:
    base = {
        "data_dir": tmp_path,
        "_env_file": None,
        "sms_provider": "twilio",
        "twilio_account_sid": "AC" + "0" * 32,
        "twilio_auth_token": "token",
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(**base)
    assert str(caught.value).startswith(
        "RESETFLOW_TWILIO_FROM or RESETFLOW_TWILIO_MESSAGING_SERVICE_SID: one is required"
    )
    settings = load_settings(**base, twilio_messaging_service_sid=SERVICE_SID)
    assert settings.twilio_from is None


# Error classes -----------------------------------------------------------------------------


def _twilio_answering(status: int, code: int) -> TwilioProvider:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"code": code, "message": "x", "status": status})

    return TwilioProvider(
        account_sid="AC" + "0" * 32,
        auth_token="token",
        sender=TEST_SENDER,
        client=httpx.AsyncClient(transport=httpx.MockTransport(answer)),
    )


@pytest.mark.parametrize(
    ("status", "code", "retryable", "recipient", "configuration"),
    [
        (400, 21211, False, True, False),
        (400, 21610, False, True, False),
        (400, 21614, False, True, False),
        (401, 20003, False, False, True),
        (429, 20429, True, False, False),
        (400, 20429, True, False, False),
        (500, 20500, True, False, False),
        (503, 20503, True, False, False),
        (400, 21617, False, False, False),
    ],
)
def test_twilio_error_classes(
    status: int, code: int, retryable: bool, recipient: bool, configuration: bool
) -> None:
    with pytest.raises(ProviderError) as caught:
        _send(_twilio_answering(status, code), _message())
    error = caught.value
    assert (error.retryable, error.recipient, error.configuration) == (
        retryable,
        recipient,
        configuration,
    )
    assert f"code {code}" in str(error)


def test_bad_twilio_credentials_are_a_configuration_error(twilio: TwilioStandIn) -> None:
    provider = TwilioProvider(
        account_sid=twilio.account_sid,
        auth_token="not-the-token",
        sender=TEST_SENDER,
        base_url=twilio.url,
    )
    with pytest.raises(ProviderError) as caught:
        _send(provider, _message())
    assert caught.value.configuration and not caught.value.retryable
    assert not caught.value.recipient  # the channel's next provider may still be tried
    assert twilio.messages == []


@pytest.mark.parametrize(
    ("status", "error_code", "retryable", "configuration"),
    [
        (422, 300, False, False),
        (500, 300, False, False),
        (401, 10, False, True),
        (422, 10, False, True),
        (422, 406, False, False),
        (503, 0, True, False),
    ],
)
def test_postmark_error_classes(
    status: int, error_code: int, retryable: bool, configuration: bool
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"ErrorCode": error_code, "Message": "x"})

    provider = PostmarkProvider(
        server_token="token",
        sender="resetflow@example.org",
        client=httpx.AsyncClient(transport=httpx.MockTransport(answer)),
    )
    message = RenderedMessage(
        notification="password-reset-token",
        channel=Channel.EMAIL,
        to="ada@example.com",
        text="code 123456",
        subject="Reset",
    )
    with pytest.raises(ProviderError) as caught:
        _send(provider, message)
    assert (caught.value.retryable, caught.value.configuration) == (retryable, configuration)
    assert caught.value.recipient == (error_code == 406)


# The retry schedule ------------------------------------------------------------------------


def test_retry_delay_is_full_jitter_over_exponential_backoff_with_a_floor() -> None:
    policy = WorkerPolicy(backoff_seconds=2.0, min_backoff_seconds=0.05)
    assert [policy.retry_delay(t, random=lambda: 0.5) for t in (1, 2, 3, 4)] == [
        1.0,
        2.0,
        4.0,
        8.0,
    ]
    assert [policy.retry_delay(t, random=lambda: 0.999) for t in (1, 3)] == [1.998, 7.992]
    assert policy.retry_delay(3, random=lambda: 0.0) == 0.05  # the floor
    assert WorkerPolicy(backoff_seconds=0).retry_delay(2, random=lambda: 0.7) == 0
    draws = iter([0.1, 0.9])
    assert [policy.retry_delay(1, random=lambda: next(draws)) for _ in range(2)] == [0.2, 1.8]


@pytest.mark.parametrize(
    ("smtp_up", "draw", "expected"),
    [
        # The retry would land after the code dies: email at once.
        (True, 0.99, ("sent", "email", None)),
        # Email down too, and its retry also too late: failed, with the reason.
        (False, 0.99, ("failed", None, "code expired before a retry")),
        # A retry inside the code's life is scheduled as usual.
        (True, 0.0, ("queued", None, "twilio: Twilio 503 code 20503")),
    ],
)
def test_a_retry_is_never_scheduled_past_the_codes_expiry(
    live_app: Callable[..., LiveApp],
    twilio: TwilioStandIn,
    smtp: Any,
    smtp_up: bool,
    draw: float,
    expected: tuple[str, str | None, str | None],
) -> None:
    sink, port = smtp
    clock = FrozenClock()
    app = live_app(
        clock=clock,
        inprocess_worker=False,
        email_provider="smtp",
        smtp_host="127.0.0.1",
        smtp_port=port if smtp_up else free_port(),
        smtp_timeout_seconds=2,
        code_ttl_seconds=300,
        **twilio.settings(),
    )
    create_verified_account(app.settings, phone=PHONE, preference=Channel.SMS, clock=clock)
    twilio.outage(503)
    settings = app.settings

    async def run() -> tuple[str, str | None, str | None]:
        services = build_services(settings, clock=clock)
        providers = build_providers(settings, mailbox=services.mailbox, clock=clock)
        worker = DeliveryWorker(
            database=services.database,
            outbox=services.outbox,
            providers=providers,
            renderer=make_renderer(settings),
            clock=clock,
            # 600 s of backoff against a 300 s code: 0.99 lands past it, 0.0 on the floor.
            policy=WorkerPolicy(max_tries=4, backoff_seconds=600),
            random=lambda: draw,
        )
        try:
            await services.recovery.request_reset(email=None, phone=PHONE, attempt_id="a")
            await worker.drain()
            async with services.database.read() as conn:
                [job] = await DeliveryRepository(conn).list_jobs()
            error = job.last_error
            if error is not None and error.startswith("code expired before a retry"):
                error = "code expired before a retry"
            return job.status, job.channel, error if job.status != "sent" else None
        finally:
            for chain in providers.values():
                for provider in chain:
                    await provider.close()
            await services.close()

    assert asyncio.run(run()) == expected
    assert len([r for r in twilio.requests if r.status == 503]) == 1
    assert len(sink.messages) == (1 if expected[1] == "email" else 0)
