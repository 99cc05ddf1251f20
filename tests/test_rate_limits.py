"""Rate limits (R15-R18) and equal work for known and unknown accounts (R20)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import event

from resetflow.config import Settings, load_settings
from resetflow.services import build_services
from resetflow.storage.migrate import upgrade
from tests.conftest import LiveApp
from tests.support.flow import (
    create_verified_account,
    dev_mailbox,
    sign_up_verified,
    trace_each_reset_kind,
    verified_and_unverified_accounts,
    wait_for_dev_message,
)

TRUSTED = {"trusted_proxies": "127.0.0.1/32"}


def _from(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


def _reset_messages(client: httpx.Client, to: str) -> int:
    return len(
        [
            m
            for m in dev_mailbox(client)
            if m["to"] == to and m["notification"] == "password-reset-token"
        ]
    )


def _settle(client: httpx.Client) -> None:
    """Wait until the outbox is empty (jobs are written before the answer goes out)."""
    for _ in range(300):
        if client.get("/readyz").json()["outbox_pending"] == 0:
            return
        asyncio.run(asyncio.sleep(0.05))
    raise AssertionError("outbox did not drain")


def test_r15_default_limits_per_destination(tmp_path: Any) -> None:
    settings = load_settings(data_dir=tmp_path, _env_file=None)
    assert settings.limit_destination == "1/minute;3/15 minutes;10/day"


def test_r15_a_destination_gets_at_most_its_quota_of_codes(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app(limit_destination="3/15 minutes;10/day")
    with app.client() as client:
        sign_up_verified(client)
        answers = [client.post("/send-token", json={"email": "ada@example.com"}) for _ in range(6)]
        _settle(client)
        assert {(a.status_code, a.content) for a in answers} == {
            (answers[0].status_code, answers[0].content)
        }
        assert _reset_messages(client, "ada@example.com") == 3


def test_r15_resend_cooldown_and_the_first_code_still_works(
    live_app: Callable[..., LiveApp],
) -> None:
    """With the default 1/minute cooldown a quick second request sends nothing, and the
    code from the first one keeps working in the same browser session."""
    app = live_app(limit_destination="1/minute;3/15 minutes;10/day")
    with app.client() as client:
        sign_up_verified(client)
        assert client.post("/send-token", json={"email": "ada@example.com"}).status_code == 202
        first = wait_for_dev_message(
            client, to="ada@example.com", notification="password-reset-token"
        )
        assert client.post("/send-token", json={"email": "ada@example.com"}).status_code == 202
        _settle(client)
        assert _reset_messages(client, "ada@example.com") == 1
        from tests.support.flow import find_code

        assert (
            client.post("/verify-token", json={"token": find_code(first["text"])}).status_code
            == 200
        )


def test_r16_per_client_limit_on_every_post(live_app: Callable[..., LiveApp]) -> None:
    app = live_app(limit_ip="5/minute", **TRUSTED)
    with app.client() as client:
        for path, body in [
            ("/send-token", {"email": "a@example.com"}),
            ("/verify-token", {"token": "123456"}),
            ("/login", {"email": "a@example.com", "password": "x" * 20}),
            ("/create-user", {"name": "x"}),
        ]:
            answers = [client.post(path, json=body, headers=_from("203.0.113.7")) for _ in range(6)]
            assert [a.status_code for a in answers[:5]].count(429) == 0, path
            assert answers[5].status_code == 429, path
            # Another client is not affected.
            assert client.post(path, json=body, headers=_from("203.0.113.8")).status_code != 429


def test_r16_global_limit_across_clients(live_app: Callable[..., LiveApp]) -> None:
    app = live_app(limit_global="4/minute", **TRUSTED)
    with app.client() as client:
        codes = [
            client.post(
                "/send-token", json={"email": f"u{i}@example.com"}, headers=_from(f"198.51.100.{i}")
            ).status_code
            for i in range(6)
        ]
    assert codes == [202, 202, 202, 202, 429, 429]


def test_r16_untrusted_forwarded_for_is_ignored(live_app: Callable[..., LiveApp]) -> None:
    """Without a trusted proxy, X-Forwarded-For cannot be used to dodge the per-IP limit."""
    app = live_app(limit_ip="3/minute")
    with app.client() as client:
        codes = [
            client.post(
                "/send-token", json={"email": "a@example.com"}, headers=_from(f"192.0.2.{i}")
            ).status_code
            for i in range(4)
        ]
    assert codes == [202, 202, 202, 429]


def test_r17_limits_look_the_same_for_known_and_unknown_contacts(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app(limit_destination="2/minute")
    with app.client() as client:
        sign_up_verified(client)
        known = [client.post("/send-token", json={"email": "ada@example.com"}) for _ in range(4)]
        unknown = [
            client.post("/send-token", json={"email": "nobody@example.com"}) for _ in range(4)
        ]
        _settle(client)
        assert [(a.status_code, a.content) for a in known] == [
            (a.status_code, a.content) for a in unknown
        ]
        assert _reset_messages(client, "ada@example.com") == 2


def test_r16_a_send_token_over_the_client_limit_is_429_whatever_its_body_and_counts_nothing(
    live_app: Callable[..., LiveApp], backend: dict[str, Any]
) -> None:
    """/send-token counts the client's limits with the contact's, after reading the body
    (one round trip on Redis): answers as when the client's count came first. A body
    refused (422) still counts; over the limit, a bad body is 429 too; a refused request
    uses up nothing of its contact's limit."""
    app = live_app(**backend, **TRUSTED, limit_ip="3/minute", limit_destination="1/minute")
    create_verified_account(app.settings)
    create_verified_account(
        app.settings, name="Carol", email="carol@example.com", phone="+14155550102"
    )
    one = _from("198.51.100.7")
    with app.client() as client:
        sent = [
            client.post("/send-token", json={"email": "ada@example.com"}, headers=one),
            client.post("/send-token", json={"email": "not an address"}, headers=one),
            client.post("/send-token", json={"email": "nobody@example.com"}, headers=one),
        ]
        assert [r.status_code for r in sent] == [202, 422, 202]
        over = [
            client.post("/send-token", json={"email": "carol@example.com"}, headers=one),
            client.post("/send-token", json={"email": "not an address"}, headers=one),
            client.post(
                "/send-token",
                content=b"{",
                headers={**one, "content-type": "application/json"},
            ),
        ]
        assert [r.status_code for r in over] == [429, 429, 429]
        # Carol's limit (1/minute) was not used by the refused request: another client
        # still gets her a code.
        other = _from("198.51.100.8")
        asked = client.post("/send-token", json={"email": "carol@example.com"}, headers=other)
        assert asked.status_code == 202
        wait_for_dev_message(client, to="carol@example.com", notification="password-reset-token")
        _settle(client)
        assert _reset_messages(client, "carol@example.com") == 1
        assert _reset_messages(client, "ada@example.com") == 1


def test_r18_429_carries_retry_after_and_the_generic_body(live_app: Callable[..., LiveApp]) -> None:
    app = live_app(limit_ip="1/minute")
    with app.client() as client:
        client.post("/send-token", json={"email": "ada@example.com"})
        limited = client.post("/send-token", json={"email": "ada@example.com"})
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.json() == {
            "error": "Too many requests. Please wait a moment and try again.",
            "code": "rate_limited",
        }
        other = client.post("/send-token", json={"email": "nobody@example.com"})
        assert other.content == limited.content


def test_r18_forms_show_the_limit_in_the_page(live_app: Callable[..., LiveApp]) -> None:
    import re

    app = live_app(limit_ip="1/minute")
    with app.client() as client:
        page = client.get("/forgot-password")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        client.post("/send-token", data={"csrf_token": token, "email": "ada@example.com"})
        limited = client.post("/send-token", data={"csrf_token": token, "email": "ada@example.com"})
    assert limited.status_code == 429
    assert "retry-after" in limited.headers
    assert "Too many requests" in limited.text and "<form" in limited.text


def test_r20_known_unknown_unverified_and_limited_requests_do_the_same_work(
    make_settings: Callable[..., Settings],
) -> None:
    """R20: no early exit. Whether the contact belongs to a verified account, an
    unverified one, nobody, or is over its limit, /send-token runs the same statements."""
    settings = make_settings(limit_destination="1/hour")
    upgrade(settings.resolved_database_url)

    async def scenario() -> dict[str, list[str]]:
        services = build_services(settings)
        seen: list[str] = []

        tracing = False

        def record(statement: str) -> None:
            if not tracing:
                return
            words = statement.replace("(", " ").split()
            tables = [
                w
                for w in words
                if w in {"users", "one_time_codes", "delivery_jobs", "audit_events"}
            ]
            seen.append(f"{words[0].upper()} {tables[0] if tables else '?'}")

        # Traced by SQLite itself: hot statements skip SQLAlchemy (storage/prepared.py),
        # so its cursor events would not see them. Every connection gets the tracer.
        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.driver_connection.raw_connection.set_trace_callback(record)

        event.listen(services.database.engine.sync_engine, "connect", on_connect)
        try:
            await verified_and_unverified_accounts(services)
            tracing = True
            traces = await trace_each_reset_kind(services, seen)
        finally:
            await services.close()
        return traces

    traces = asyncio.run(scenario())
    assert traces["known"] == traces["unknown"] == traces["unverified"] == traces["limited"]
    assert "SELECT users" in traces["known"]
    assert "INSERT one_time_codes" in traces["known"]
    assert "INSERT audit_events" in traces["known"]
    assert "INSERT delivery_jobs" in traces["known"]


def test_r20_delivery_happens_off_the_request_path(live_app: Callable[..., LiveApp]) -> None:
    """The answer comes before any provider is called: with no worker running, the
    request still answers at once and leaves a queued job."""
    app = live_app(inprocess_worker=False)
    with app.client() as client:
        create_verified_account(app.settings)
        assert client.post("/send-token", json={"email": "ada@example.com"}).status_code == 202
        assert client.get("/readyz").json()["outbox_pending"] >= 1
        assert not [m for m in dev_mailbox(client) if m["notification"] == "password-reset-token"]


def test_r20_the_worker_renders_decoy_jobs_and_drops_them_unsent(
    live_app: Callable[..., LiveApp],
) -> None:
    """Unknown contacts leave a decoy job that the worker handles like a real one (so the
    work after the answer is alike too), then deletes without sending anything."""
    app = live_app()
    with app.client() as client:
        for i in range(5):
            assert (
                client.post("/send-token", json={"email": f"nobody{i}@example.com"}).status_code
                == 202
            )

        async def jobs_left() -> int:
            services = build_services(app.settings)
            try:
                async with services.database.read() as conn:
                    rows = await conn.exec_driver_sql("SELECT count(*) FROM delivery_jobs")
                    return int(rows.scalar_one())
            finally:
                await services.close()

        for _ in range(200):
            if asyncio.run(jobs_left()) == 0:
                break
            asyncio.run(asyncio.sleep(0.05))
        assert asyncio.run(jobs_left()) == 0
        assert dev_mailbox(client) == []
