"""Events for the host application (SPEC §9, R61): signed per Standard Webhooks, queued
in the same transaction as the change, retried with backoff, in the delivery log, and
never carrying a secret. Receivers are real HTTP servers on loopback; signatures are
checked with the reference ``standardwebhooks`` library."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from resetflow.accounts.models import Channel
from resetflow.accounts.service import NewAccount
from resetflow.config import ConfigError, Settings
from resetflow.notify.events import Events, EventType, SessionsRevokedReason
from resetflow.notify.webhooks_out import sign
from resetflow.services import Services, build_services
from resetflow.storage import deliveries
from resetflow.storage.deliveries import DeliveryJob, DeliveryRepository, JobStatus
from resetflow.storage.tables import delivery_jobs, users
from resetflow.storage.users import UserRepository
from tests.conftest import LiveApp
from tests.support.flow import (
    NEW_PASSWORD,
    PASSWORD,
    find_code,
    operator_account,
    sign_up,
    wait_for_dev_message,
)
from tests.support.processes import run_resetflow
from tests.support.prod import prod_settings
from tests.support.webhooks import Received, new_secret, webhook_receiver

EMAIL = "ada@example.com"
NEW_EMAIL = "ada.lovelace@example.org"
ALL_EVENTS = {event.value for event in EventType}


def _verified(secret: str, received: Received) -> dict[str, Any]:
    """The event, once the reference library has checked its signature and timestamp."""
    event: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    assert set(event) == {"type", "timestamp", "data"}
    assert event["type"] in ALL_EVENTS
    assert datetime.fromisoformat(event["timestamp"]).tzinfo is not None
    assert received.headers["content-type"] == "application/json"
    return event


def _contains(text: str, secret: str) -> bool:
    if secret.isdigit():  # a code: as a number of its own, not inside a longer one
        return re.search(rf"(?<!\d){secret}(?!\d)", text) is not None
    return secret in text


def _run(settings: Settings, work: Callable[[Services], Any]) -> Any:
    async def go() -> Any:
        services = build_services(settings)
        try:
            return await work(services)
        finally:
            await services.close()

    return asyncio.run(go())


async def _event_jobs(services: Services) -> list[DeliveryJob]:
    async with services.database.read() as conn:
        return await DeliveryRepository(conn).list_jobs(channel=deliveries.EVENT_CHANNEL)


async def _deliver_until_settled(services: Services, *, timeout: float = 30) -> list[DeliveryJob]:
    """Run the worker until no event job is queued or being sent (backoff waits real)."""
    deadline = time.monotonic() + timeout
    while True:
        await services.worker.run_once()
        jobs = await _event_jobs(services)
        if all(job.status in (JobStatus.DELIVERED, JobStatus.FAILED) for job in jobs):
            return jobs
        assert time.monotonic() < deadline, [(j.notification, j.status) for j in jobs]
        await asyncio.sleep(0.05)


def test_r61_each_event_reaches_the_app_signed_after_its_action_through_the_live_app(
    live_app: Callable[..., LiveApp], tmp_path: Path
) -> None:
    secret = new_secret()
    with webhook_receiver() as receiver:
        app = live_app(webhook_url=receiver.url, webhook_secret=secret)
        codes: list[str] = []
        cookies: set[str] = set()
        with app.client() as client:
            # Sign-up (user.created), then the email verified (contact.verified).
            assert sign_up(client).status_code == 201
            message = wait_for_dev_message(client, to=EMAIL, notification="verify-contact")
            codes.append(find_code(message["text"]))
            assert client.post("/verify-contact", json={"token": codes[-1]}).status_code == 200
            cookies.update(client.cookies.values())
            user_id = receiver.wait_for("user.created")[0].event["data"]["user_id"]
            first_hash = _password_hash(app.settings, user_id)

            # The email changed (contact.changed, and sessions.revoked: they all end).
            login = client.post("/login", json={"email": EMAIL, "password": PASSWORD})
            assert login.status_code == 200
            cookies.update(client.cookies.values())
            asked = client.post(
                "/account/contact",
                json={"channel": "email", "value": NEW_EMAIL, "password": PASSWORD},
            )
            assert asked.status_code == 202, asked.text
            message = wait_for_dev_message(client, to=NEW_EMAIL, notification="verify-contact")
            codes.append(find_code(message["text"]))
            done = client.post("/account/confirm-contact", json={"token": codes[-1]})
            assert done.status_code == 200, done.text
            cookies.update(client.cookies.values())

            # A password reset (password.reset, and sessions.revoked).
            assert client.post("/send-token", json={"email": NEW_EMAIL}).status_code == 202
            message = wait_for_dev_message(
                client, to=NEW_EMAIL, notification="password-reset-token"
            )
            codes.append(find_code(message["text"]))
            assert client.post("/verify-token", json={"token": codes[-1]}).status_code == 200
            reset = client.post(
                "/reset-password",
                json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
            )
            assert reset.status_code == 200, reset.text
            cookies.update(client.cookies.values())
            second_hash = _password_hash(app.settings, user_id)

        # An operator signs the account out everywhere (sessions.revoked), from the CLI.
        env = {
            "RESETFLOW_DATA_DIR": str(app.settings.data_dir),
            "RESETFLOW_DATABASE_URL": app.settings.resolved_database_url,
            "RESETFLOW_WEBHOOK_URL": receiver.url,
            "RESETFLOW_WEBHOOK_SECRET": secret,
        }
        ended = run_resetflow("users", "end-sessions", NEW_EMAIL, env=env, cwd=tmp_path)
        assert ended.returncode == 0, ended.stderr
        revoked = receiver.wait_for("sessions.revoked", count=3)
        listed = run_resetflow("deliveries", "list", "--channel", "webhook", env=env, cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        shown = run_resetflow(
            "deliveries", "show", revoked[-1].headers["webhook-id"], env=env, cwd=tmp_path
        )
        assert shown.returncode == 0, shown.stderr
        # And on the operators' page, under the channel filter webhook.
        granted = run_resetflow("users", "grant-admin", NEW_EMAIL, env=env, cwd=tmp_path)
        assert granted.returncode == 0, granted.stderr
        with app.client() as admin:
            login = admin.post("/login", json={"email": NEW_EMAIL, "password": NEW_PASSWORD})
            assert login.status_code == 200, login.text
            page = admin.get("/admin/deliveries", params={"channel": "webhook"})
            assert page.status_code == 200
            only_email = admin.get("/admin/deliveries", params={"channel": "email"}).text
        assert page.text.count("sessions.revoked") == 3 and "user.created" in page.text
        assert "user.created" not in only_email and "verify-contact" in only_email

    events = {r.headers["webhook-id"]: _verified(secret, r) for r in receiver.received}
    assert len(events) == len(receiver.received) == 7  # each event once, each its own id
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in events.values():
        by_type.setdefault(event["type"], []).append(event["data"])
    assert {t: len(d) for t, d in by_type.items()} == {
        "user.created": 1,
        "contact.verified": 1,
        "contact.changed": 1,
        "password.reset": 1,
        "sessions.revoked": 3,
    }
    assert by_type["user.created"][0] == {
        "user_id": user_id,
        "email": EMAIL,
        "phone": "+14155550100",
        "name": "Ada Lovelace",
        "preference": "email",
        "locale": "en",
        "email_verified": False,
        "phone_verified": False,
    }
    assert by_type["contact.verified"][0] == {
        "user_id": user_id,
        "email": EMAIL,
        "phone": "+14155550100",
        "channel": "email",
        "contact": EMAIL,
    }
    assert by_type["contact.changed"][0] == {
        "user_id": user_id,
        "email": NEW_EMAIL,
        "phone": "+14155550100",
        "channel": "email",
        "previous": EMAIL,
        "current": NEW_EMAIL,
    }
    assert by_type["password.reset"][0] == {
        "user_id": user_id,
        "email": NEW_EMAIL,
        "phone": "+14155550100",
    }
    assert sorted(d["reason"] for d in by_type["sessions.revoked"]) == [
        "contact_changed",
        "operator",
        "password_reset",
    ]
    assert all(d["user_id"] == user_id for d in by_type["sessions.revoked"])
    assert [r.event["data"]["reason"] for r in revoked][-1] == "operator"

    # Nothing secret anywhere in what the app received: not a code, a password, a hash,
    # a session cookie, nor the signing secret.
    assert len(codes) == 3 and cookies and first_hash != second_hash
    secrets_seen = [*codes, PASSWORD, NEW_PASSWORD, first_hash, second_hash, *cookies, secret]
    for received in receiver.received:
        text = received.body.decode() + json.dumps(received.headers)
        for value in secrets_seen:
            assert not _contains(text, value), f"{received.type} carries a secret"

    # The delivery log lists them with channel webhook.
    lines = [line for line in listed.stdout.splitlines() if line.strip()]
    assert len(lines) == 7
    for line in lines:
        assert " delivered " in line and " webhook " in line
    assert sum("sessions.revoked" in line for line in lines) == 3
    assert any("user.created" in line for line in lines)
    facts = dict(line.split(None, 1) for line in shown.stdout.splitlines()[:4])
    assert facts["notification"] == "sessions.revoked"
    assert "delivered" in shown.stdout and "HTTP 200" in shown.stdout


def _password_hash(settings: Settings, user_id: str) -> str:
    async def read(services: Services) -> str:
        async with services.database.read() as conn:
            user = await UserRepository(conn).get(user_id)
        assert user is not None
        return user.password_hash

    result: str = _run(settings, read)
    return result


def test_r61_a_receiver_refuses_a_tampered_body_and_an_old_timestamp() -> None:
    secret = new_secret()
    key = Webhook(secret)  # the reference library, as the host app would use it
    body = b'{"type":"user.created","timestamp":"2026-12-03T20:25:00.000Z","data":{}}'

    def headers(at: int, signature: str) -> dict[str, str]:
        return {"webhook-id": "evt1", "webhook-timestamp": str(at), "webhook-signature": signature}

    from resetflow.notify.events import decode_secret

    now = int(time.time())
    good = sign(decode_secret(secret), msg_id="evt1", timestamp=now, body=body)
    assert key.verify(body, headers(now, good))["type"] == "user.created"
    with pytest.raises(WebhookVerificationError):
        key.verify(body.replace(b"user.created", b"user.deleted"), headers(now, good))
    with pytest.raises(WebhookVerificationError):
        key.verify(body, {**headers(now, good), "webhook-id": "evt2"})
    # A replay of a message signed six minutes ago, signature and all: too old.
    old = now - 6 * 60
    replayed = sign(decode_secret(secret), msg_id="evt1", timestamp=old, body=body)
    with pytest.raises(WebhookVerificationError, match="too old"):
        key.verify(body, headers(old, replayed))
    # Another endpoint's secret does not verify it.
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers(now, good))


def test_r61_signatures_match_the_specifications_example() -> None:
    """The example of the Standard Webhooks specification (and the reference library)."""
    from resetflow.notify.events import decode_secret

    key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signature = sign(
        key,
        msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp=1614265330,
        body=b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_r61_a_failing_receiver_is_retried_and_gets_the_event_once_under_one_id(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    secret, other_secret = new_secret(), new_secret()
    with (
        webhook_receiver([500, 503]) as flaky,
        webhook_receiver([500] * 10) as broken,
        webhook_receiver([410] * 10) as gone,
    ):
        settings = make_settings(
            database_url=database_url,
            webhook_url=flaky.url,
            webhook_secret=secret,
            # A second endpoint that wants user.created only, and never says 2xx.
            webhooks=json.dumps(
                [
                    {"url": broken.url, "secret": other_secret, "events": ["user.created"]},
                    {"url": gone.url, "secret": other_secret, "events": ["user.created"]},
                ]
            ),
            delivery_max_tries=3,
            delivery_backoff_seconds=0.05,
        )

        async def work(services: Services) -> tuple[list[DeliveryJob], dict[str, Any]]:
            user_id = await operator_account(services, email=EMAIL)
            await _deliver_until_settled(services)
            # The events without a caller yet: the publisher's methods, committed alike.
            async with services.database.write() as conn:
                user = await UserRepository(conn).get(user_id)
                assert user is not None
                await services.events.password_changed(conn, user, now=services.clock.now())
                await services.events.user_deleted(conn, user, now=services.clock.now())
            jobs = await _deliver_until_settled(services)
            async with services.database.read() as conn:
                repo = DeliveryRepository(conn)
                attempts = {job.id: await repo.attempts(job.id) for job in jobs}
            return jobs, attempts

        jobs, attempts = _run(settings, work)

    # The flaky endpoint: user.created refused twice, then taken, always under one id.
    created = [r for r in flaky.received if r.type == "user.created"]
    assert len(created) == 3
    assert {r.headers["webhook-id"] for r in created} == {created[0].headers["webhook-id"]}
    job_id = created[0].headers["webhook-id"]
    for received in flaky.received:
        _verified(secret, received)  # every attempt signed afresh, and within tolerance
    job = next(j for j in jobs if j.id == job_id)
    assert (job.status, job.channel, job.provider, job.tries) == (
        "delivered",
        "webhook",
        "webhook",
        2,
    )
    assert job.sealed_payload is None  # erased once the job ended
    assert [(a.status, a.error) for a in attempts[job_id]] == [
        ("retry", "HTTP 500"),
        ("retry", "HTTP 503"),
        ("sent", "HTTP 200"),
    ]
    host = flaky.url.split("//")[1].split("/")[0]
    assert {a.destination for a in attempts[job_id]} == {host}  # never the path
    assert sorted(r.type for r in flaky.received if r.type != "user.created") == [
        "password.changed",
        "user.deleted",
    ]

    # The broken endpoint: only what it asked for, each try under the job's id, then failed.
    assert [r.type for r in broken.received] == ["user.created"] * 3
    for received in broken.received:
        _verified(other_secret, received)
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(received.body, received.headers)
    failed = next(j for j in jobs if j.id == broken.received[0].headers["webhook-id"])
    assert (failed.status, failed.last_error) == ("failed", "HTTP 500")
    assert [a.status for a in attempts[failed.id]] == ["retry", "retry", "failed"]
    # 410 Gone: the receiver wants no more; not retried.
    assert [r.type for r in gone.received] == ["user.created"]
    ended = next(j for j in jobs if j.id == gone.received[0].headers["webhook-id"])
    assert (ended.status, ended.tries, ended.last_error) == ("failed", 0, "HTTP 410")
    assert {j.status for j in jobs} == {"delivered", "failed"} and len(jobs) == 5


def test_r61_the_event_commits_with_its_change_or_not_at_all(
    database_url: str, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(
        database_url=database_url,
        webhook_url="http://127.0.0.1:9/hooks",  # never called: no worker runs here
        webhook_secret=new_secret(),
    )
    account = NewAccount(
        name="Ada", email=EMAIL, phone="+14155550100", password=PASSWORD, preference=Channel.EMAIL
    )

    async def counts(services: Services) -> tuple[int, int]:
        async with services.database.read() as conn:
            accounts = (
                await conn.execute(select(func.count()).where(users.c.email == EMAIL))
            ).scalar_one()
            events = (
                await conn.execute(select(func.count()).where(delivery_jobs.c.channel == "webhook"))
            ).scalar_one()
        return int(accounts), int(events)

    async def work(services: Services) -> list[tuple[int, int]]:
        seen = []

        # A sign-up that fails inside its transaction (here: the audit trail cannot be
        # written) leaves neither the account nor its event behind.
        async def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("audit trail unavailable")

        with monkeypatch.context() as patch:
            patch.setattr(services.audit, "record", broken)
            with pytest.raises(RuntimeError):
                await services.accounts.sign_up(account, attempt_id="a", verify=False)
        seen.append(await counts(services))
        # An event published and then rolled back is gone too.
        with pytest.raises(RuntimeError):
            async with services.database.write() as conn:
                await services.events.sessions_revoked(
                    conn, "someone", reason=SessionsRevokedReason.OPERATOR, now=services.clock.now()
                )
                raise RuntimeError("the change failed")
        seen.append(await counts(services))
        # The same sign-up, succeeding: the account and user.created, together.
        user_id = await services.accounts.sign_up(account, attempt_id="b", verify=False)
        seen.append(await counts(services))
        [job] = await _event_jobs(services)
        assert (job.notification, job.user_id, job.status) == ("user.created", user_id, "queued")
        return seen

    assert _run(settings, work) == [(0, 0), (0, 0), (1, 1)]


def test_r61_nothing_is_queued_without_a_webhook_url(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(database_url=database_url)
    assert settings.webhook_endpoints == []

    async def work(services: Services) -> list[DeliveryJob]:
        assert not services.events.enabled
        user_id = await operator_account(services, email=EMAIL)
        async with services.database.write() as conn:
            user = await UserRepository(conn).get(user_id)
            assert user is not None
            for publish in (services.events.password_changed, services.events.user_deleted):
                await publish(conn, user, now=services.clock.now())
        async with services.database.read() as conn:
            return await DeliveryRepository(conn).list_jobs()

    assert _run(settings, work) == []
    assert Events.disabled().enabled is False


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"webhook_url": "https://app.example.com/hooks"}, "RESETFLOW_WEBHOOK_SECRET"),
        ({"webhook_secret": "SECRET"}, "RESETFLOW_WEBHOOK_URL"),
        ({"webhook_url": "https://app.example.com/h", "webhook_secret": "SECRET"}, "_SECRET"),
        (
            {"webhook_url": "https://app.example.com/h", "webhook_secret": "whsec_c2hvcnQ="},
            "_SECRET",
        ),
        ({"webhook_url": "https://app.example.com/h", "webhook_secret": "whsec_!!!"}, "_SECRET"),
        ({"webhook_url": "http://app.example.com/h", "webhook_secret": "GOOD"}, "_URL"),
        ({"webhook_url": "ftp://127.0.0.1/h", "webhook_secret": "GOOD"}, "_URL"),
        (
            {"env": "prod", "webhook_url": "http://127.0.0.1:9000/h", "webhook_secret": "GOOD"},
            "RESETFLOW_WEBHOOK_URL",
        ),
        ({"webhooks": "not json"}, "RESETFLOW_WEBHOOKS"),
        ({"webhooks": '[{"url": "https://a.example/h"}]'}, "RESETFLOW_WEBHOOKS (entry 1)"),
        (
            {"webhooks": '[{"url": "https://a.example/h", "secret": "GOOD", "events": ["x"]}]'},
            "RESETFLOW_WEBHOOKS (entry 1)",
        ),
        (
            {"webhooks": '[{"url": "https://a.example/h", "secret": "whsec_AAAA"}]'},
            "RESETFLOW_WEBHOOKS (entry 1)",
        ),
    ],
)
def test_webhook_settings_are_checked_at_start_up_in_one_line_that_shows_no_secret(
    make_settings: Callable[..., Settings], overrides: dict[str, Any], variable: str
) -> None:
    good = new_secret()
    values = {
        key: value.replace("GOOD", good).replace("SECRET", "s3cr3t" * 8)
        for key, value in overrides.items()
    }
    if values.get("env") == "prod":
        values["secret_key"] = "k" * 48
    with pytest.raises(ConfigError) as raised:
        make_settings(**values)
    message = str(raised.value)
    assert "\n" not in message and variable in message.split(":")[0]
    assert good not in message and "s3cr3t" not in message and "whsec_AAAA" not in message


def test_webhook_settings_that_work(make_settings: Callable[..., Settings]) -> None:
    secret, other = new_secret(), new_secret()
    settings = make_settings(
        webhook_url="http://localhost:8080/hooks",  # plain http: loopback, dev only
        webhook_secret=secret,
        webhooks=json.dumps(
            [
                {"url": "https://a.example/h", "secret": other, "events": ["user.deleted"]},
                {"url": "http://[::1]:9000/h", "secret": other},
            ]
        ),
    )
    first, second, third = settings.webhook_endpoints
    assert (first.url, first.events) == ("http://localhost:8080/hooks", None)
    assert second.events == frozenset({EventType.USER_DELETED})
    assert second.wants(EventType.USER_DELETED) and not second.wants(EventType.USER_CREATED)
    assert third.wants(EventType.USER_CREATED)
    assert secret not in repr(settings) and other not in repr(settings)
    assert secret not in repr(settings.webhook_endpoints)
    prod = make_settings(
        **prod_settings(webhook_url="https://app.example.com/hooks", webhook_secret=secret)
    )
    assert [e.url for e in prod.webhook_endpoints] == ["https://app.example.com/hooks"]


def test_r61_event_timestamps_are_iso_utc() -> None:
    from resetflow.notify.events import event_timestamp

    at = datetime(2026, 12, 3, 21, 25, 0, 123456, tzinfo=UTC) + timedelta(hours=0)
    assert event_timestamp(at) == "2026-12-03T21:25:00.123Z"


def test_r61_the_receiving_example_in_the_docs_takes_events_and_refuses_forgeries(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/integration.md's receiver, as written there, behind uvicorn."""
    import httpx

    from resetflow.storage.migrate import upgrade
    from tests.support.servers import serve_in_thread

    docs = (Path(__file__).parents[1] / "docs" / "integration.md").read_text()
    source = re.findall(r"```python\n(.*?)```", docs, flags=re.DOTALL)[-1]
    secret = new_secret()
    monkeypatch.setenv("RESETFLOW_WEBHOOK_SECRET", secret)
    namespace: dict[str, Any] = {}
    exec(compile(source, "docs/integration.md", "exec"), namespace)
    with serve_in_thread(namespace["app"]) as url:
        settings = make_settings(webhook_url=f"{url}/hooks/resetflow", webhook_secret=secret)
        upgrade(settings.resolved_database_url)

        async def work(services: Services) -> list[DeliveryJob]:
            await operator_account(services, email=EMAIL)
            return await _deliver_until_settled(services)

        [job] = _run(settings, work)
        assert (job.status, job.notification) == ("delivered", "user.created")
        assert job.id in namespace["seen"]
        forged = httpx.post(
            f"{url}/hooks/resetflow",
            content=b'{"type":"user.deleted","timestamp":"x","data":{}}',
            headers={
                "webhook-id": "evt_forged",
                "webhook-timestamp": str(int(time.time())),
                "webhook-signature": "v1,AAAA",
            },
        )
        assert forged.status_code == 400 and "evt_forged" not in namespace["seen"]
