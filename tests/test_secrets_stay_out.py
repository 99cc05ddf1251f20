"""Codes, passwords, session ids and secrets never reach logs or stored records (R44, R45)."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable

import pytest

from resetflow.logs import QUIET_LOGGERS, JsonFormatter
from tests.conftest import LiveApp
from tests.standins.fixtures import twilio_fixture  # noqa: F401
from tests.standins.twilio import TwilioStandIn
from tests.support.flow import NEW_PASSWORD, PASSWORD, find_code, sign_up
from tests.support.servers import SmtpSink


def test_r44_a_full_flow_leaves_no_secret_in_logs_or_tables(
    live_app: Callable[..., LiveApp], smtp: tuple[SmtpSink, int], caplog: pytest.LogCaptureFixture
) -> None:
    sink, port = smtp
    for name in QUIET_LOGGERS:  # as configure_logging() sets them in serve and worker
        caplog.set_level(logging.WARNING, logger=name)
    caplog.set_level(logging.DEBUG)  # last: it also sets the capturing handler's level
    app = live_app(email_provider="smtp", smtp_host="127.0.0.1", smtp_port=port)
    secrets_seen: list[str] = [PASSWORD, NEW_PASSWORD, app.settings.secret().decode()]
    with app.client() as client:
        sign_up(client, name="Ada")
        secrets_seen.append(client.cookies["resetflow_session"])
        code = find_code(sink.wait_for("ada@example.com")[0].text)
        secrets_seen.append(code)
        client.post("/verify-contact", json={"token": code})
        client.post("/verify-token", json={"token": "000000"})
        client.post("/send-token", json={"email": "ada@example.com"})
        secrets_seen.append(client.cookies["resetflow_session"])
        code = find_code(sink.wait_for("ada@example.com", count=2)[1].text)
        secrets_seen.append(code)
        client.post("/verify-token", json={"token": code})
        secrets_seen.append(client.cookies["resetflow_session"])
        client.post(
            "/reset-password",
            json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
        )
        client.post("/login", json={"email": "ada@example.com", "password": NEW_PASSWORD})
        secrets_seen.append(client.cookies["resetflow_session"])
        sink.wait_for("ada@example.com", count=3)

    formatter = JsonFormatter()
    # Everything the service's process logged; "mail.log" is the test's own SMTP server.
    ours = [record for record in caplog.records if not record.name.startswith("mail.")]
    log_text = "\n".join(formatter.format(record) for record in ours)
    assert "reset_requested" in log_text and "sign_in" in log_text  # the logs were captured
    assert "ada@example.com" not in log_text  # contacts are masked

    database = sqlite3.connect(app.settings.data_dir / "resetflow.db")
    dump = "\n".join(database.iterdump())
    raw_rows = b"".join(
        bytes(value) if isinstance(value, bytes) else str(value).encode()
        for table in ("one_time_codes", "delivery_jobs", "delivery_attempts", "sessions", "users")
        for row in database.execute(f"SELECT * FROM {table}")
        for value in row
    )
    database.close()
    assert "a***@example.com" in dump  # the delivery log masks destinations
    for secret in secrets_seen:
        assert secret not in log_text, "a secret reached the logs"
        assert secret.encode() not in raw_rows, "a secret reached a stored record"


def test_r45_log_lines_cannot_be_forged_by_input() -> None:
    record = logging.LogRecord("resetflow", logging.INFO, "", 0, "sign_in", None, None)
    record.user_agent = 'curl\n{"event": "password_changed", "level": "info"}'
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert json.loads(line)["user_agent"].startswith("curl\n")
    assert json.loads(line)["event"] == "sign_in"


def test_r44_sms_and_email_flow_leaves_no_secret_in_logs_audit_deliveries_or_metrics(
    live_app: Callable[..., LiveApp],
    smtp: tuple[SmtpSink, int],
    twilio: TwilioStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 3's grep test: real SMTP and the Twilio stand-in, then every place an
    operator can read (logs, audit trail, delivery log, /metrics) is searched."""
    sink, port = smtp
    for name in QUIET_LOGGERS:
        caplog.set_level(logging.WARNING, logger=name)
    caplog.set_level(logging.DEBUG)
    app = live_app(
        email_provider="smtp", smtp_host="127.0.0.1", smtp_port=port, **twilio.settings()
    )
    secrets_seen = [PASSWORD, NEW_PASSWORD, app.settings.secret().decode(), twilio.auth_token]
    with app.client() as client:
        sign_up(client, name="Ada", preference="sms")
        secrets_seen.append(client.cookies["resetflow_session"])
        code = find_code(twilio.wait_for("+14155550100")[0].body)
        secrets_seen.append(code)
        assert client.post("/verify-contact", json={"token": code}).status_code == 200
        secrets_seen.append(client.cookies["resetflow_session"])
        assert client.post("/account/verify", json={"channel": "email"}).status_code == 202
        code = find_code(sink.wait_for("ada@example.com")[0].text)
        secrets_seen.append(code)
        assert client.post("/verify-contact", json={"token": code}).status_code == 200
        client.post("/logout", json={})
        client.post("/send-token", json={"email": "ada@example.com"})
        secrets_seen.append(client.cookies["resetflow_session"])
        code = find_code(twilio.wait_for("+14155550100", count=2)[1].body)
        secrets_seen.append(code)
        client.post("/verify-token", json={"token": _other(code)})
        assert client.post("/verify-token", json={"token": code}).status_code == 200
        secrets_seen.append(client.cookies["resetflow_session"])
        assert (
            client.post(
                "/reset-password",
                json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
            ).status_code
            == 200
        )
        assert (
            client.post(
                "/login", json={"phone": "+14155550100", "password": NEW_PASSWORD}
            ).status_code
            == 200
        )
        secrets_seen.append(client.cookies["resetflow_session"])
        sink.wait_for("ada@example.com", count=2)  # the password-changed notice
        metrics = client.get("/metrics").text

    ours = [record for record in caplog.records if not record.name.startswith("mail.")]
    log_text = "\n".join(JsonFormatter().format(record) for record in ours)
    database = sqlite3.connect(app.settings.data_dir / "resetflow.db")
    readable = {
        table: "\n".join(repr(row) for row in database.execute(f"SELECT * FROM {table}"))
        for table in ("audit_events", "delivery_attempts", "delivery_jobs", "sessions", "users")
    }
    database.close()
    assert "code_sent" in readable["audit_events"] and "delivery_sent" in log_text
    assert 'resetflow_deliveries_total{channel="sms"' in metrics
    places = {"logs": log_text, "metrics": metrics, **readable}
    for secret in secrets_seen:
        for place, text in places.items():
            assert secret not in text, f"a secret reached {place}"
    for contact in ("ada@example.com", "+14155550100"):
        assert contact not in log_text and contact not in metrics
        assert (
            contact not in readable["audit_events"] and contact not in readable["delivery_attempts"]
        )


def _other(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"
