"""SMS pumping defences (R16): an allow-list of regions, a velocity limit per number
prefix and an hourly SMS budget. A refused SMS falls back to the verified email, and the
delivery log says why."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from resetflow.accounts.models import Channel
from resetflow.services import build_services
from resetflow.storage.deliveries import DeliveryAttempt, DeliveryRepository
from tests.conftest import LiveApp
from tests.standins.fixtures import twilio_fixture  # noqa: F401
from tests.standins.twilio import TwilioStandIn
from tests.support.flow import PASSWORD, create_verified_account, find_code
from tests.support.servers import SmtpSink


def _app(
    live_app: Callable[..., LiveApp], twilio: TwilioStandIn, smtp_port: int, **extra: Any
) -> LiveApp:
    return live_app(
        email_provider="smtp",
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        **twilio.settings(),
        **extra,
    )


def _add_user(app: LiveApp, *, email: str, phone: str) -> None:
    """An account made before any SMS restriction, with both contacts verified."""
    settings = app.settings.model_copy(update={"sms_allowed_countries": ""})
    create_verified_account(settings, email=email, phone=phone, preference=Channel.SMS)


def _attempts(app: LiveApp) -> list[DeliveryAttempt]:
    async def read() -> list[DeliveryAttempt]:
        services = build_services(app.settings)
        try:
            async with services.database.read() as conn:
                repo = DeliveryRepository(conn)
                found: list[DeliveryAttempt] = []
                for job in await repo.list_jobs(limit=100):
                    found += await repo.attempts(job.id)
                return found
        finally:
            await services.close()

    return asyncio.run(read())


def test_r16_sms_to_a_region_outside_the_allow_list_falls_back_to_email(
    live_app: Callable[..., LiveApp], twilio: TwilioStandIn, smtp: tuple[SmtpSink, int]
) -> None:
    sink, port = smtp
    app = _app(live_app, twilio, port, sms_allowed_countries="US,CA")
    _add_user(app, email="ada@example.com", phone="+442079460958")  # a UK number
    with app.client() as client:
        assert client.post("/send-token", json={"phone": "+442079460958"}).status_code == 202
        mail = sink.wait_for("ada@example.com")[0]
        assert mail.message["Subject"] == "Your password reset token"
        assert client.post("/verify-token", json={"token": find_code(mail.text)}).status_code == 200
    assert twilio.messages == []
    skipped = [a for a in _attempts(app) if a.status == "skipped"]
    assert [(a.channel, a.provider) for a in skipped] == [("sms", "policy")]
    assert skipped[0].error == "SMS to region GB is not allowed"


def test_r16_sign_up_refuses_sms_codes_to_a_region_outside_the_allow_list(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app(sms_allowed_countries="US")
    with app.client() as client:
        refused = client.post(
            "/create-user",
            json={
                "name": "Ada",
                "email": "ada@example.com",
                "phone": "+442079460958",
                "password": PASSWORD,
                "preference": "sms",
            },
        )
        assert refused.status_code == 422
        assert "preference" in refused.json()["fields"]
        by_email = client.post(
            "/create-user",
            json={
                "name": "Ada",
                "email": "ada@example.com",
                "phone": "+442079460958",
                "password": PASSWORD,
                "preference": "email",
            },
        )
        assert by_email.status_code == 201


def test_r16_the_hourly_sms_budget_and_the_prefix_velocity_fall_back_to_email(
    live_app: Callable[..., LiveApp], twilio: TwilioStandIn, smtp: tuple[SmtpSink, int]
) -> None:
    sink, port = smtp
    app = _app(live_app, twilio, port, sms_hourly_budget=2, limit_sms_prefix="1000/hour")
    numbers = ["+14155550101", "+14155550102", "+14155550103"]
    for i, number in enumerate(numbers):
        _add_user(app, email=f"user{i}@example.com", phone=number)
    with app.client() as client:
        for number in numbers:
            assert client.post("/send-token", json={"phone": number}).status_code == 202
        # Jobs run concurrently: which of the three is over budget is not fixed.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(sink.messages) < 1:
            time.sleep(0.05)
    assert len(sink.messages) == 1
    assert len(twilio.messages) == 2
    emailed = int(sink.messages[0].recipients[0].removeprefix("user").split("@")[0])
    assert {m.to for m in twilio.messages} == set(numbers) - {numbers[emailed]}
    assert "hourly SMS budget exhausted" in [
        a.error for a in _attempts(app) if a.status == "skipped"
    ]

    velocity = _app(
        live_app,
        twilio,
        port,
        limit_sms_prefix="1/hour",
        data_dir=app.settings.data_dir.parent / "v",
    )
    _add_user(velocity, email="a@example.com", phone="+14155550111")
    _add_user(velocity, email="b@example.com", phone="+14155550112")  # same +141555 prefix
    with velocity.client() as client:
        client.post("/send-token", json={"phone": "+14155550111"})
        twilio.wait_for("+14155550111")
        client.post("/send-token", json={"phone": "+14155550112"})
        sink.wait_for("b@example.com")
    reasons = [a.error for a in _attempts(velocity) if a.status == "skipped"]
    assert reasons == ["SMS velocity limit for this number prefix"]
