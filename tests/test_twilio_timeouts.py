"""A Twilio create call that timed out must not become a second SMS: before the retry, the
worker looks the message up in Twilio's Messages list (notify/providers/twilio.py), and a
message Twilio did accept is recorded as sent with its SID instead of being sent again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from resetflow.accounts.models import Channel
from resetflow.config import Settings
from resetflow.notify.providers.registry import build_providers
from resetflow.notify.worker import DeliveryWorker, WorkerPolicy
from resetflow.services import build_services, make_renderer
from resetflow.storage.deliveries import DeliveryAttempt, DeliveryJob, DeliveryRepository
from tests.standins.fixtures import twilio_fixture  # noqa: F401
from tests.standins.twilio import TwilioStandIn
from tests.support.flow import create_verified_account

PHONE = "+14155550123"
TIMEOUT = 0.5  # the client's; the stand-in holds the create call longer
HOLD = 1.5


def _deliver_one_reset(
    settings: Settings, twilio: TwilioStandIn, *, before_retry: Callable[[], None] = lambda: None
) -> tuple[DeliveryJob, list[DeliveryAttempt]]:
    """Ask for a reset by SMS and run a worker until its job is done."""

    async def run() -> tuple[DeliveryJob, list[DeliveryAttempt]]:
        services = build_services(settings)
        providers = build_providers(settings, mailbox=services.mailbox, clock=services.clock)
        worker = DeliveryWorker(
            database=services.database,
            outbox=services.outbox,
            providers={Channel.SMS: providers[Channel.SMS]},
            renderer=make_renderer(settings),
            clock=services.clock,
            policy=WorkerPolicy(max_tries=4, backoff_seconds=0.05),
            random=lambda: 0.0,
        )
        try:
            await services.recovery.request_reset(email=None, phone=PHONE, attempt_id="a")
            deadline = time.monotonic() + 30
            retried = False
            while time.monotonic() < deadline:
                await worker.drain()
                async with services.database.read() as conn:
                    [job] = await DeliveryRepository(conn).list_jobs()
                    attempts = await DeliveryRepository(conn).attempts(job.id)
                if job.status in ("sent", "failed"):
                    return job, attempts
                if attempts and not retried:
                    before_retry()
                    retried = True
                await asyncio.sleep(0.05)
            raise AssertionError("the job never finished")
        finally:
            for chain in providers.values():
                for provider in chain:
                    await provider.close()
            await services.close()

    return asyncio.run(run())


@pytest.fixture
def settings(
    make_settings: Callable[..., Settings], database_url: str, twilio: TwilioStandIn
) -> Settings:
    settings = make_settings(
        database_url=database_url,
        inprocess_worker=False,
        provider_timeout_seconds=TIMEOUT,
        **twilio.settings(),
    )
    create_verified_account(settings, phone=PHONE, preference=Channel.SMS)
    return settings


@pytest.mark.parametrize("twilio_sent_it", [False, True], ids=["still-queued", "sent"])
def test_a_create_that_timed_out_but_was_accepted_is_not_sent_again(
    settings: Settings, twilio: TwilioStandIn, twilio_sent_it: bool
) -> None:
    twilio.hang(seconds=HOLD, accept=True)
    # Queued at Twilio (no date_sent: the DateSent query misses it), or already sent.
    job, attempts = _deliver_one_reset(
        settings, twilio, before_retry=twilio.mark_sent if twilio_sent_it else lambda: None
    )

    [sms] = twilio.messages_to(PHONE)
    assert job.status == "sent"
    assert job.provider == "twilio"
    assert job.provider_message_id == sms.sid
    assert [a.status for a in attempts] == ["retry", "sent"]
    assert "outcome unknown" in (attempts[0].error or "")
    assert attempts[1].provider_message_id == sms.sid
    # One create call (the one that hung), then look-ups only.
    posts = [r for r in twilio.requests if r.method == "POST"]
    assert len(posts) == 1 and posts[0].timed_out
    lookups = [r for r in twilio.requests if r.method == "GET"]
    assert lookups and all(r.status == 200 for r in lookups)


def test_a_create_that_timed_out_and_was_not_accepted_is_sent_once_on_retry(
    settings: Settings, twilio: TwilioStandIn
) -> None:
    twilio.hang(seconds=HOLD, accept=False)
    job, attempts = _deliver_one_reset(settings, twilio)

    [sms] = twilio.messages_to(PHONE)
    assert job.status == "sent"
    assert job.provider_message_id == sms.sid
    assert [a.status for a in attempts] == ["retry", "sent"]
    posts = [r for r in twilio.requests if r.method == "POST"]
    assert [r.timed_out for r in posts] == [True, False]
    assert any(r.method == "GET" for r in twilio.requests)


def test_a_failed_look_up_sends_nothing_and_is_tried_again(
    settings: Settings, twilio: TwilioStandIn
) -> None:
    """While Twilio cannot say whether it has the message, nothing is sent again."""
    twilio.hang(seconds=HOLD, accept=True)
    job, attempts = _deliver_one_reset(
        settings, twilio, before_retry=lambda: twilio.outage(503, requests=1)
    )

    [sms] = twilio.messages_to(PHONE)
    assert job.status == "sent" and job.provider_message_id == sms.sid
    assert [a.status for a in attempts] == ["retry", "retry", "sent"]
    assert "look-up" in (attempts[1].error or "")
    assert len([r for r in twilio.requests if r.method == "POST"]) == 1


def test_the_list_endpoint_filters_like_twilio(twilio: TwilioStandIn) -> None:
    """The stand-in's ListMessage: To/From filters, DateSent on date_sent, pages."""
    import httpx

    auth = (twilio.account_sid, twilio.auth_token)
    with httpx.Client(auth=auth) as client:
        for i in range(3):
            form = {"To": PHONE, "From": "+15005550006", "Body": f"message {i}"}
            assert client.post(twilio.messages_url, data=form).status_code == 201
        other = {"To": "+14155550999", "From": "+15005550006", "Body": "other"}
        assert client.post(twilio.messages_url, data=other).status_code == 201

        def listed(**params: Any) -> dict[str, Any]:
            answer = client.get(twilio.messages_url, params=params)
            assert answer.status_code == 200, answer.text
            body: dict[str, Any] = answer.json()
            return body

        page = listed(To=PHONE, PageSize=2)
        assert [m["body"] for m in page["messages"]] == ["message 2", "message 1"]
        assert page["next_page_uri"]
        rest = client.get(twilio.url + page["next_page_uri"]).json()
        assert [m["body"] for m in rest["messages"]] == ["message 0"]
        assert rest["next_page_uri"] is None
        today = time.strftime("%Y-%m-%d", time.gmtime())
        assert listed(To=PHONE, **{"DateSent>": today})["messages"] == []  # still queued
        twilio.mark_sent()
        assert len(listed(To=PHONE, **{"DateSent>": today})["messages"]) == 3
        assert listed(To=PHONE, **{"DateSent<": "2000-01-01"})["messages"] == []
        assert client.get(twilio.messages_url, params={"Bogus": "1"}).status_code == 400
        assert client.get(twilio.messages_url, params={"DateSent": "today"}).status_code == 400


@pytest.mark.parametrize("twilio_accepted_it", [False, True], ids=["not-accepted", "accepted"])
def test_after_a_timeout_the_next_provider_waits_for_the_look_up(
    make_settings: Callable[..., Settings],
    database_url: str,
    twilio: TwilioStandIn,
    twilio_accepted_it: bool,
) -> None:
    """With a second SMS provider after Twilio, a timed-out create does not fail over in the
    same round (that could be a second SMS): the retry looks the message up, and only a
    message Twilio did not accept goes out through the next provider. One SMS either way."""
    settings = make_settings(
        database_url=database_url,
        inprocess_worker=False,
        provider_timeout_seconds=TIMEOUT,
        **{**twilio.settings(), "sms_providers": "twilio,outbox"},
    )
    create_verified_account(settings, phone=PHONE, preference=Channel.SMS)
    twilio.hang(seconds=HOLD, accept=twilio_accepted_it)
    job, attempts = _deliver_one_reset(settings, twilio)

    assert job.status == "sent"
    assert [(a.provider, a.status) for a in attempts] == [
        ("twilio", "retry"),
        ("twilio" if twilio_accepted_it else "outbox", "sent"),
    ]
    assert len(twilio.messages_to(PHONE)) == (1 if twilio_accepted_it else 0)
    in_mailbox = asyncio.run(_mailbox_messages_to(settings, PHONE))
    assert in_mailbox == (0 if twilio_accepted_it else 1)
    # One create call, the one that hung: never a second one.
    assert len([r for r in twilio.requests if r.method == "POST"]) == 1


async def _mailbox_messages_to(settings: Settings, to: str) -> int:
    services = build_services(settings)
    try:
        return sum(1 for message in await services.mailbox.newest() if message.recipient == to)
    finally:
        await services.close()
