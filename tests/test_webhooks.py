"""Provider webhooks: Twilio status callbacks (signed with the auth token) and Postmark
delivery and bounce events (basic auth or a secret header) move a ``sent`` job to
``delivered`` or ``undeliverable``; anything unauthenticated is refused and changes
nothing. SMS go through the Twilio stand-in, which checks every request against Twilio's
OpenAPI description (``StatusCallback`` included)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from resetflow.accounts.models import Channel
from resetflow.config import ConfigError
from resetflow.storage.database import Database
from resetflow.storage.deliveries import DeliveryRepository
from resetflow.storage.tables import delivery_jobs
from resetflow.storage.users import DECOY_USER_ID, UserRepository
from resetflow.web.webhooks import twilio_signature, twilio_signature_valid
from tests.conftest import LiveApp
from tests.standins.fixtures import twilio_fixture  # noqa: F401
from tests.standins.twilio import TwilioStandIn
from tests.support.deliveries import put_job, read_job, wait_for_job
from tests.support.flow import create_verified_account

PHONE = "+14155550100"
SECRET = "a-long-webhook-secret-0123456789"
PASSWORD = "another-long-password-9876543210"


def _sign(auth_token: str, url: str, params: dict[str, str]) -> str:
    """Twilio's documented algorithm, written out again here (not the code under test):
    the URL, then each parameter's name and value sorted by name; HMAC-SHA1; base64."""
    data = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _callback(
    client: httpx.Client,
    params: dict[str, str],
    *,
    signature: str | None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    sent = dict(headers or {})
    if signature is not None:
        sent["X-Twilio-Signature"] = signature
    return client.post("/webhooks/twilio", data=params, headers=sent)


def _status_report(sid: str, status: str, **extra: str) -> dict[str, str]:
    """The fields of a Twilio status callback for an outbound SMS."""
    return {
        "AccountSid": "AC" + "0" * 32,
        "ApiVersion": "2010-04-01",
        "From": "+15005550006",
        "To": PHONE,
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        **extra,
    }


def _sms_sent(
    app: LiveApp, client: httpx.Client, twilio: TwilioStandIn, count: int = 1
) -> tuple[str, str]:
    """Ask for a reset by phone; the SMS's message id and its job's id, once ``sent``."""
    assert client.post("/send-token", json={"phone": PHONE}).status_code == 202
    message = twilio.wait_for(PHONE, count=count)[count - 1]
    job = wait_for_job(app.settings, provider="twilio")
    assert job.provider_message_id == message.sid
    return message.sid, job.id


# The signature itself ------------------------------------------------------------------


def test_twilio_signature_matches_twilios_published_vectors() -> None:
    """The vectors of Twilio's own request-validator tests (auth token ``12345``)."""
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ]
    assert twilio_signature("12345", url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert twilio_signature("12345", url, reversed(params)) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    # A name sent several times: its values sorted, each taken once.
    repeated = [
        ("Sid", "CA123"),
        ("SidAccount", "AC123"),
        ("Digits", "5678"),
        ("Digits", "1234"),
        ("Digits", "1234"),
    ]
    assert twilio_signature("12345", url, repeated) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="

    assert twilio_signature_valid("12345", url, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    # With the default port spelt out, as Twilio's libraries also accept.
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    assert twilio_signature_valid("12345", with_port, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    for wrong in ("", "RSOYDt4T1cUTdK1PDd93/VVr8B8", "rsoydt4t1cutdk1pdd93/vvr8b8=", "\u00e9"):
        assert not twilio_signature_valid("12345", url, params, wrong)
    assert not twilio_signature_valid("54321", url, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not twilio_signature_valid("12345", url + "&x=1", params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    tampered = [*params[:2], ("Digits", "9999"), *params[3:]]
    assert not twilio_signature_valid("12345", url, tampered, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")


# Twilio ----------------------------------------------------------------------------------


def test_twilio_bad_signature_is_refused_and_changes_nothing_good_one_delivers(
    live_app: Callable[..., LiveApp], twilio: TwilioStandIn
) -> None:
    """The acceptance test: a callback with a wrong, missing or foreign-URL signature is
    refused with 403 JSON and the job stays ``sent`` with no webhook in its log; the same
    callback signed over RESETFLOW_BASE_URL + path marks the job ``delivered``."""
    app = live_app(**twilio.settings())
    create_verified_account(app.settings, phone=PHONE, preference=Channel.SMS)
    with app.client() as client:
        sid, job_id = _sms_sent(app, client, twilio)
    url = f"{app.settings.base_url}/webhooks/twilio"
    report = _status_report(sid, "delivered")
    with httpx.Client(base_url=app.url, timeout=30) as provider:
        refusals = [
            _callback(provider, report, signature=None),
            _callback(provider, report, signature="x" * 28),
            _callback(provider, report, signature=_sign("not-the-token", url, report)),
            # Signed for other values than those sent.
            _callback(
                provider,
                report,
                signature=_sign(twilio.auth_token, url, {**report, "MessageStatus": "sent"}),
            ),
            # Signed for the URL the request claims (its Host header): never believed.
            _callback(
                provider,
                report,
                signature=_sign(twilio.auth_token, "http://evil.example/webhooks/twilio", report),
                headers={"Host": "evil.example"},
            ),
        ]
        for refused in refusals:
            assert refused.status_code == 403, refused.text
            assert refused.json()["code"] == "webhook_refused"
            assert "set-cookie" not in refused.headers
        job, attempts = read_job(app.settings, job_id)
        assert job.status == "sent"
        assert [a.status for a in attempts] == ["sent"]

        good = _callback(provider, report, signature=_sign(twilio.auth_token, url, report))
        assert good.status_code == 200, good.text
        assert good.json() == {"result": "updated"}
        assert "set-cookie" not in good.headers  # no session was made for it
    job, attempts = read_job(app.settings, job.id)
    assert job.status == "delivered"
    assert [(a.status, a.provider, a.destination, a.provider_message_id) for a in attempts] == [
        ("sent", "twilio", "+1******0100", sid),
        ("webhook", "twilio", "+1******0100", sid),
    ]
    assert attempts[1].error == "twilio: delivered"


def test_twilio_undelivered_marks_undeliverable_and_only_moves_forward(
    live_app: Callable[..., LiveApp], twilio: TwilioStandIn
) -> None:
    """``undelivered`` with its error code → ``undeliverable`` with the code as the reason;
    a later ``delivered`` for the same message changes nothing; intermediate states
    (``sent``) settle nothing; a failed job is never brought back; an unknown message id
    is answered 200 so that Twilio does not retry it."""
    app = live_app(**twilio.settings())
    create_verified_account(app.settings, phone=PHONE, preference=Channel.SMS)
    url = f"{app.settings.base_url}/webhooks/twilio"
    with app.client() as client, httpx.Client(base_url=app.url, timeout=30) as provider:
        sid, job_id = _sms_sent(app, client, twilio)

        def report(status: str, message_sid: str = sid, **extra: str) -> httpx.Response:
            params = _status_report(message_sid, status, **extra)
            return _callback(provider, params, signature=_sign(twilio.auth_token, url, params))

        assert report("sent").json() == {"result": "unchanged"}
        assert read_job(app.settings, job_id)[0].status == "sent"
        assert report("undelivered", ErrorCode="30003").json() == {"result": "updated"}
        assert report("delivered").json() == {"result": "unchanged"}

        failed = put_job(
            app.settings,
            status="failed",
            channel="sms",
            provider="twilio",
            destination="+1******0199",
            provider_message_id="SM" + "f" * 32,
            last_error="twilio: Twilio 400 code 21610",
        )
        assert report("delivered", "SM" + "f" * 32).json() == {"result": "unchanged"}
        assert report("delivered", "SM" + "0" * 32).json() == {"result": "unknown_message"}

    job, attempts = read_job(app.settings, job_id)
    assert job.status == "undeliverable"
    assert job.provider_message_id == sid
    assert job.last_error == "twilio: undelivered, error 30003"
    assert [(a.status, a.error) for a in attempts] == [
        ("sent", None),
        ("webhook", "twilio: sent; no change (job sent)"),
        ("webhook", "twilio: undelivered, error 30003"),
        ("webhook", "twilio: delivered; no change (job undeliverable)"),
    ]
    still_failed, failed_attempts = read_job(app.settings, failed)
    assert still_failed.status == "failed"
    assert failed_attempts[-1].error == "twilio: delivered; no change (job failed)"


def test_twilio_callbacks_are_not_held_to_the_per_address_web_limits(
    live_app: Callable[..., LiveApp], twilio: TwilioStandIn
) -> None:
    """A burst of callbacks from one address, well over the production per-address limit
    (20 a minute) and with the global POST budget small, all get through: webhooks have
    no rate limit of their own and are not counted against the web's."""
    app = live_app(**twilio.settings(), limit_ip="20/minute;300/hour", limit_global="5/second")
    url = f"{app.settings.base_url}/webhooks/twilio"
    with httpx.Client(base_url=app.url, timeout=30) as provider:
        answers = []
        for n in range(60):
            params = _status_report(f"SM{n:032x}", "delivered")
            answers.append(
                _callback(provider, params, signature=_sign(twilio.auth_token, url, params))
            )
        assert {a.status_code for a in answers} == {200}
        # The web limits still apply to the web.
        with app.client() as client:
            codes = {client.post("/login", json={}).status_code for _ in range(25)}
        assert 429 in codes


def test_twilio_webhook_exists_only_with_a_twilio_auth_token(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app()
    with app.client() as client:
        answer = client.post(
            "/webhooks/twilio", data=_status_report("SM1", "delivered"), headers={}
        )
    assert answer.status_code == 404
    assert answer.json()["code"] == "not_found"


def test_messages_ask_twilio_for_status_callbacks_at_the_https_base_url(
    live_app: Callable[..., LiveApp], twilio: TwilioStandIn
) -> None:
    """With an https base URL each SMS carries ``StatusCallback=<base>/webhooks/twilio``,
    which the stand-in accepts as a field of Twilio's CreateMessage; Twilio's callback to
    that URL, signed as Twilio signs it, delivers the job. With the setting off, or a
    plain-http base URL, no callback is asked for."""
    base = "https://auth.example.org"
    app = live_app(**twilio.settings(), base_url=base)
    create_verified_account(app.settings, phone=PHONE, preference=Channel.SMS)
    with app.client() as client:
        sid, job_id = _sms_sent(app, client, twilio)
    request = twilio.requests[-1]
    assert request.status == 201
    assert request.fields["StatusCallback"] == f"{base}/webhooks/twilio"
    params = _status_report(sid, "delivered")
    with httpx.Client(base_url=app.url, timeout=30) as provider:
        answer = _callback(
            provider, params, signature=_sign(twilio.auth_token, f"{base}/webhooks/twilio", params)
        )
    assert answer.json() == {"result": "updated"}
    assert read_job(app.settings, job_id)[0].status == "delivered"
    app.stop()

    for overrides in ({"base_url": base, "twilio_status_callback": False}, {}):
        other = live_app(**twilio.settings(), **overrides, data_dir=app.settings.data_dir)
        with other.client() as client:
            _sms_sent(other, client, twilio, count=len(twilio.messages_to(PHONE)) + 1)
        assert "StatusCallback" not in twilio.requests[-1].fields
        other.stop()


# Postmark --------------------------------------------------------------------------------


def _event(record_type: str, message_id: str, **extra: Any) -> dict[str, Any]:
    """A Postmark webhook body, as documented for delivery and bounce events."""
    common: dict[str, Any] = {
        "RecordType": record_type,
        "ServerID": 23,
        "MessageStream": "outbound",
        "MessageID": message_id,
        "Tag": "password-reset-token",
        "Metadata": {},
    }
    if record_type == "Delivery":
        common.update(
            Recipient="ada@example.com",
            DeliveredAt="2026-11-27T16:34:52Z",
            Details="Test delivery webhook details",
        )
    else:
        common.update(
            ID=4323372036854775807,
            Type="HardBounce",
            TypeCode=1,
            Name="Hard bounce",
            Description="The server was unable to deliver your message.",
            Details="smtp;550 5.1.1 The email account that you tried to reach does not exist.",
            Email="ada@example.com",
            From="resetflow@example.org",
            BouncedAt="2026-11-27T16:34:52Z",
            DumpAvailable=True,
            Inactive=True,
            CanActivate=True,
            Subject="Your password reset code",
        )
    common.update(extra)
    return common


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_postmark_webhook_with_the_secret_header(live_app: Callable[..., LiveApp]) -> None:
    app = live_app(postmark_webhook_secret=SECRET)
    message_id = "b7bc2f4a-e38e-4336-af7d-e6c392c2f817"
    job_id = put_job(app.settings, provider_message_id=message_id)
    delivery = _event("Delivery", message_id)
    with httpx.Client(base_url=app.url, timeout=30) as provider:
        for headers in ({}, {"X-Resetflow-Webhook-Secret": "wrong"}, {"X-Other": SECRET}):
            refused = provider.post("/webhooks/postmark", json=delivery, headers=headers)
            assert refused.status_code == 403
            assert refused.json()["code"] == "webhook_refused"
        assert read_job(app.settings, job_id)[0].status == "sent"
        accepted = provider.post(
            "/webhooks/postmark", json=delivery, headers={"X-Resetflow-Webhook-Secret": SECRET}
        )
        assert accepted.status_code == 200 and accepted.json() == {"result": "updated"}
    job, attempts = read_job(app.settings, job_id)
    assert job.status == "delivered"
    assert (attempts[-1].status, attempts[-1].error) == ("webhook", "postmark: delivered")
    assert attempts[-1].destination == "a***@example.com"


def test_postmark_webhook_with_basic_auth_bounces(live_app: Callable[..., LiveApp]) -> None:
    """A hard bounce → ``undeliverable`` with the bounce type as the reason (never the
    bounce's details, which quote the address); an auto-reply is no failure; events of
    other kinds, unknown ids and Twilio's jobs are left alone."""
    app = live_app(postmark_webhook_user="postmark", postmark_webhook_password=PASSWORD)
    bounced = put_job(app.settings, provider_message_id="m-bounced")
    replied = put_job(app.settings, provider_message_id="m-replied")
    twilio_job = put_job(
        app.settings, channel="sms", provider="twilio", provider_message_id="m-twilio"
    )
    good = httpx.BasicAuth("postmark", PASSWORD)
    with httpx.Client(base_url=app.url, timeout=30) as provider:
        wrong_credentials: list[dict[str, str]] = [
            {},
            {"Authorization": _basic("postmark", "wrong")},
            {"Authorization": _basic("x", PASSWORD)},
            {"Authorization": "Basic !!!"},
            {"Authorization": f"Bearer {PASSWORD}"},
        ]
        for headers in wrong_credentials:
            refused = provider.post(
                "/webhooks/postmark", json=_event("Bounce", "m-bounced"), headers=headers
            )
            assert refused.status_code == 403
        # The secret header is not configured here, so it lets nobody in.
        refused = provider.post(
            "/webhooks/postmark",
            json=_event("Bounce", "m-bounced"),
            headers={"X-Resetflow-Webhook-Secret": ""},
        )
        assert refused.status_code == 403
        assert read_job(app.settings, bounced)[0].status == "sent"

        def post(body: dict[str, Any]) -> dict[str, Any]:
            answer = provider.post("/webhooks/postmark", json=body, auth=good)
            assert answer.status_code == 200, answer.text
            result: dict[str, Any] = answer.json()
            return result

        assert post(_event("Bounce", "m-bounced")) == {"result": "updated"}
        assert post(_event("Bounce", "m-replied", Type="AutoResponder")) == {"result": "unchanged"}
        assert post(_event("Delivery", "m-twilio")) == {"result": "unknown_message"}
        assert post(_event("Delivery", "00000000-0000-0000-0000-000000000000")) == {
            "result": "unknown_message"
        }
        assert post({"RecordType": "Open", "MessageID": "m-replied"}) == {"result": "ignored"}
        assert post(_event("Delivery", "m-bounced")) == {"result": "unchanged"}
        not_json = provider.post(
            "/webhooks/postmark",
            content=b"{",
            headers={"content-type": "application/json"},
            auth=good,
        )
        assert not_json.status_code == 400

    job, attempts = read_job(app.settings, bounced)
    assert job.status == "undeliverable"
    assert job.last_error == "postmark: bounce HardBounce"
    assert all("ada@example.com" not in (a.error or "") for a in attempts)
    assert read_job(app.settings, replied)[0].status == "sent"
    assert read_job(app.settings, replied)[1][-1].error == (
        "postmark: bounce AutoResponder; no change (job sent)"
    )
    assert read_job(app.settings, twilio_job)[0].status == "sent"


def test_postmark_webhook_does_not_exist_without_credentials(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app()
    with app.client() as client:
        answer = client.post(
            "/webhooks/postmark",
            json=_event("Delivery", "m-1"),
            headers={"X-Resetflow-Webhook-Secret": ""},
        )
    assert answer.status_code == 404


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"postmark_webhook_secret": "short"}, "RESETFLOW_POSTMARK_WEBHOOK_SECRET"),
        (
            {"postmark_webhook_user": "pm", "postmark_webhook_password": "short"},
            "RESETFLOW_POSTMARK_WEBHOOK_PASSWORD",
        ),
        ({"postmark_webhook_user": "pm"}, "RESETFLOW_POSTMARK_WEBHOOK_USER"),
        ({"postmark_webhook_password": PASSWORD}, "RESETFLOW_POSTMARK_WEBHOOK_USER"),
    ],
)
def test_webhook_credentials_must_be_long_and_complete(
    make_settings: Callable[..., Any], overrides: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        make_settings(**overrides)
    message = str(raised.value)
    assert message.startswith(variable)
    assert "short" not in message and PASSWORD not in message
    # Empty values count as unset.
    settings = make_settings(postmark_webhook_secret="", postmark_webhook_user="")
    assert settings.postmark_webhook_secret is None and settings.postmark_webhook_user is None


# The repository, on SQLite and PostgreSQL ---------------------------------------------------


@pytest.mark.anyio
async def test_reports_roles_and_retries_in_the_repositories(database_url: str) -> None:
    """Reports move ``sent`` jobs forward only, bound to the provider; ``retry_now`` only
    takes a queued job with its payload and a live code; counts and filters skip decoys;
    roles round-trip. The same on SQLite and PostgreSQL."""
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    db = Database(database_url)
    try:
        async with db.write() as conn:
            repo = DeliveryRepository(conn)
            for job_id, status, provider, message_id, expires in (
                ("a" * 32, "sent", "twilio", "SM1", None),
                ("b" * 32, "failed", "twilio", "SM2", None),
                ("c" * 32, "queued", None, None, now + timedelta(minutes=5)),
                ("d" * 32, "queued", None, None, now - timedelta(minutes=1)),
                ("e" * 32, "decoy", None, None, None),
            ):
                await repo.enqueue(
                    job_id=job_id,
                    user_id=None,
                    notification="password-reset-token",
                    locale="en",
                    sealed_payload=b"sealed",
                    expires_at=expires,
                    now=now - timedelta(minutes=30),
                    status=status if status in ("queued", "decoy") else "queued",
                )
                await conn.execute(
                    update(delivery_jobs)
                    .where(delivery_jobs.c.id == job_id)
                    .values(
                        status=status,
                        provider=provider,
                        channel="sms" if provider else None,
                        provider_message_id=message_id,
                        next_attempt_at=now + timedelta(minutes=10),
                    )
                )
            await repo.record_attempt(
                job_id="a" * 32,
                channel="sms",
                provider="twilio",
                destination="+1******0100",
                status="sent",
                provider_message_id="SM1",
                error=None,
                now=now,
            )
        async with db.write() as conn:
            repo = DeliveryRepository(conn)
            moved = await repo.apply_report(
                provider="twilio",
                provider_message_id="SM1",
                status="delivered",
                report="twilio: delivered",
                now=now,
            )
            assert moved is not None and moved.moved and moved.status == "delivered"
            late = await repo.apply_report(
                provider="twilio",
                provider_message_id="SM1",
                status="undeliverable",
                report="twilio: undelivered",
                now=now,
            )
            assert late is not None and not late.moved and late.status == "delivered"
            stays = await repo.apply_report(
                provider="twilio",
                provider_message_id="SM2",
                status="delivered",
                report="twilio: delivered",
                now=now,
            )
            assert stays is not None and not stays.moved and stays.status == "failed"
            for provider, message_id in (("postmark", "SM1"), ("twilio", "SM404")):
                assert (
                    await repo.apply_report(
                        provider=provider,
                        provider_message_id=message_id,
                        status="delivered",
                        report="x",
                        now=now,
                    )
                    is None
                )
            attempts = await repo.attempts("a" * 32)
            assert [(a.status, a.destination) for a in attempts] == [
                ("sent", "+1******0100"),
                ("webhook", "+1******0100"),
                ("webhook", "+1******0100"),
            ]

            assert await repo.retry_now("c" * 32, now=now)
            assert not await repo.retry_now("d" * 32, now=now)  # its code expired
            assert not await repo.retry_now("b" * 32, now=now)  # ended
            assert not await repo.retry_now("e" * 32, now=now)  # a decoy
            job = await repo.get("c" * 32)
            assert job is not None and job.next_attempt_at == now

            counts = await repo.count_by_status(since=now - timedelta(hours=1))
            assert counts == {"delivered": 1, "failed": 1, "queued": 2}
            assert await repo.count_by_status(since=now) == {}
            assert [j.id for j in await repo.list_jobs(provider="twilio", status="failed")] == [
                "b" * 32
            ]
            assert len(await repo.list_jobs(channel="sms")) == 2
            assert "e" * 32 not in {j.id for j in await repo.list_jobs(limit=100)}
            assert await repo.last_destinations(["a" * 32, "c" * 32]) == {"a" * 32: "+1******0100"}

            users = UserRepository(conn)
            decoy = await users.get(DECOY_USER_ID)
            assert decoy is not None and decoy.role == "user" and not decoy.is_admin
            assert await users.set_role(DECOY_USER_ID, "admin", now=now)
            assert not await users.set_role(DECOY_USER_ID, "admin", now=now)
            decoy = await users.get(DECOY_USER_ID)
            assert decoy is not None and decoy.is_admin
    finally:
        await db.close()
