"""The audit trail (R43): every step, with time, account, address, agent and outcome."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from resetflow.audit import AuditRecord
from resetflow.services import build_services
from resetflow.storage.database import Database
from tests.conftest import LiveApp
from tests.support.flow import NEW_PASSWORD, PASSWORD, find_code, sign_up, wait_for_dev_message

AGENT = {"User-Agent": "audit-test/1.0", "X-Forwarded-For": "203.0.113.9"}


def _trail(app: LiveApp) -> list[AuditRecord]:
    async def read() -> list[AuditRecord]:
        services = build_services(app.settings)
        try:
            return await services.audit.recent(limit=500)
        finally:
            await services.close()

    return list(reversed(asyncio.run(read())))


def test_r43_every_step_of_the_flow_is_recorded(live_app: Callable[..., LiveApp]) -> None:
    started = datetime.now(UTC) - timedelta(seconds=1)
    app = live_app(trusted_proxies="127.0.0.1/32", limit_ip="2/minute")
    with app.client() as client:
        client.headers.update(AGENT)
        sign_up(client)
        code = find_code(
            wait_for_dev_message(client, to="ada@example.com", notification="verify-contact")[
                "text"
            ]
        )
        client.post("/verify-contact", json={"token": code})
        client.post("/logout", json={})
        client.post("/login", json={"email": "ada@example.com", "password": "wrong password here"})
        client.post("/send-token", json={"email": "nobody@example.com"})
        client.post("/send-token", json={"email": "ada@example.com"})
        client.post("/send-token", json={"email": "nobody@example.com"})  # over the IP limit
        message = wait_for_dev_message(
            client, to="ada@example.com", notification="password-reset-token"
        )
        client.post(
            "/verify-token",
            json={"token": "000000" if find_code(message["text"]) != "000000" else "111111"},
        )
        client.post("/verify-token", json={"token": find_code(message["text"])})
        client.post(
            "/reset-password",
            json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
        )
        client.post("/login", json={"email": "ada@example.com", "password": NEW_PASSWORD})

    trail = _trail(app)
    steps = [(r.event, r.outcome) for r in trail]
    for expected in [
        ("sign_up", "created"),
        ("code_accepted", "accepted"),
        ("contact_verified", "ok"),
        ("sign_out", "ok"),
        ("sign_in", "wrong_password"),
        ("reset_requested", "code_queued"),
        ("reset_requested", "unknown_contact"),
        ("limit_hit", "client"),
        ("code_rejected", "wrong"),
        ("password_changed", "ok"),
        ("sessions_ended", "ok"),
        ("sign_in", "ok"),
    ]:
        assert expected in steps, expected
    ada = next(r.user_id for r in trail if r.event == "sign_up")
    sent = [r for r in trail if r.event == "code_sent"]
    assert {r.detail["notification"] for r in sent} == {"verify-contact", "password-reset-token"}
    assert {r.ip for r in sent} == {"-"}  # written by the delivery worker, not a client
    for record in trail:
        assert record.at.tzinfo is not None and started <= record.at <= datetime.now(UTC)
        if record.event == "code_sent":
            continue
        assert record.ip == "203.0.113.9"
        assert record.user_agent == "audit-test/1.0"
        if record.event in {"password_changed", "sessions_ended", "contact_verified", "sign_out"}:
            assert record.user_id == ada
    unknown = next(r for r in trail if r.outcome == "unknown_contact")
    assert unknown.user_id is None
    assert unknown.detail["destination"] == "n***@example.com"


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_r43_the_audit_table_is_append_only(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from tests.conftest import migrated_database

    url = migrated_database(kind, request, tmp_path)

    async def tamper() -> list[str]:
        db = Database(url)
        refused = []
        try:
            async with db.write() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO audit_events (at, event, outcome, ip, user_agent, detail) "
                        "VALUES (:at, 'sign_in', 'ok', '-', '-', '{}')"
                    ).bindparams(at=datetime.now(UTC).replace(tzinfo=None))
                )
            for statement in (
                "UPDATE audit_events SET outcome = 'forged'",
                "DELETE FROM audit_events",
            ):
                try:
                    async with db.write() as conn:
                        await conn.execute(text(statement))
                except DBAPIError as error:
                    refused.append(str(error.orig))
            async with db.read() as conn:
                rows = (await conn.execute(text("SELECT outcome FROM audit_events"))).all()
        finally:
            await db.close()
        assert [row[0] for row in rows] == ["ok"]
        return refused

    refused = asyncio.run(tamper())
    assert len(refused) == 2
    assert all("append-only" in message for message in refused)


def test_resetflow_audit_command_reads_the_trail(live_app: Callable[..., LiveApp]) -> None:
    app = live_app()
    with app.client() as client:
        sign_up(client)
        client.post("/login", json={"email": "ada@example.com", "password": PASSWORD})
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESETFLOW_")}
    env["RESETFLOW_DATA_DIR"] = str(app.settings.data_dir)
    done = subprocess.run(
        [sys.executable, "-m", "resetflow", "audit", "--user", "ada@example.com", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    names = [e["event"] for e in events if e["event"] != "code_sent"]
    assert names[:2] == ["sign_in", "sign_up"]  # newest first
    # The worker's code_sent may land before or after the sign-in (it delivers a moment
    # later); the newest of the request events is the sign-in, from the client's address.
    newest = next(e for e in events if e["event"] != "code_sent")
    assert newest["outcome"] == "ok" and newest["ip"] == "127.0.0.1"
    plain = subprocess.run(
        [sys.executable, "-m", "resetflow", "audit", "--event", "sign_up"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert plain.returncode == 0 and "sign_up" in plain.stdout and "sign_in" not in plain.stdout
