"""The durable outbox: what got an answer is delivered, even across processes (SPEC §8)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest
from sqlalchemy import select

from resetflow.clock import FrozenClock
from resetflow.services import build_services
from resetflow.storage.deliveries import DeliveryRepository
from resetflow.storage.tables import delivery_jobs
from tests.conftest import LiveApp
from tests.support.flow import (
    PASSWORD,
    create_verified_account,
    find_code,
    sign_up,
    sign_up_verified,
)
from tests.support.servers import SmtpSink, run


def _jobs(app: LiveApp) -> list[dict[str, object]]:
    async def read() -> list[dict[str, object]]:
        services = build_services(app.settings)
        try:
            async with services.database.read() as conn:
                rows = await conn.execute(
                    select(delivery_jobs).order_by(delivery_jobs.c.created_at)
                )
                return [dict(row._mapping) for row in rows]
        finally:
            await services.close()

    result: list[dict[str, object]] = run(read())
    return result


def _worker_env(app: LiveApp, smtp_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESETFLOW_")}
    env.update(
        RESETFLOW_DATA_DIR=str(app.settings.data_dir),
        RESETFLOW_EMAIL_PROVIDER="smtp",
        RESETFLOW_SMTP_HOST="127.0.0.1",
        RESETFLOW_SMTP_PORT=str(smtp_port),
    )
    return env


def test_a_code_requested_while_no_worker_runs_is_delivered_by_a_worker_started_later(
    live_app: Callable[..., LiveApp], smtp: tuple[SmtpSink, int]
) -> None:
    """Nothing is lost between the answer and the send: the job is on disk with the code."""
    sink, port = smtp
    with_worker = live_app(email_provider="smtp", smtp_host="127.0.0.1", smtp_port=port)
    with with_worker.client() as client:
        sign_up(client, name="Ada")
        code = find_code(sink.wait_for("ada@example.com")[0].text)
        assert client.post("/verify-contact", json={"token": code}).status_code == 200

    with_worker.stop()
    # The same data, served by a process without any delivery worker.
    without_worker = live_app(
        email_provider="smtp",
        smtp_host="127.0.0.1",
        smtp_port=port,
        inprocess_worker=False,
        data_dir=with_worker.settings.data_dir,
    )
    with without_worker.client() as client:
        assert client.post("/send-token", json={"email": "ada@example.com"}).status_code == 202
        queued = [
            job for job in _jobs(without_worker) if job["notification"] == "password-reset-token"
        ]
        assert [job["status"] for job in queued] == ["queued"]
        assert queued[0]["sealed_payload"] is not None
        assert len(sink.to("ada@example.com")) == 1  # only the sign-up message so far

        done = subprocess.run(
            [sys.executable, "-m", "resetflow", "worker", "--drain"],
            env=_worker_env(without_worker, port),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        reset_mail = sink.wait_for("ada@example.com", count=2)[1]
        assert reset_mail.message["Subject"] == "Your password reset token"
        # The code from the new process's message works in the web process's session.
        code = find_code(reset_mail.text)
        assert client.post("/verify-token", json={"token": code}).status_code == 200

    sent = [job for job in _jobs(without_worker) if job["notification"] == "password-reset-token"]
    assert sent[0]["status"] == "sent"
    assert sent[0]["sealed_payload"] is None  # the code is erased once sent
    assert sent[0]["provider"] == "smtp" and sent[0]["provider_message_id"]


def test_an_expired_code_is_never_sent(
    live_app: Callable[..., LiveApp], smtp: tuple[SmtpSink, int]
) -> None:
    sink, port = smtp
    clock = FrozenClock()
    app = live_app(
        clock=clock,
        inprocess_worker=False,
        email_provider="smtp",
        smtp_host="127.0.0.1",
        smtp_port=port,
    )

    create_verified_account(app.settings, clock=clock)

    async def prepare_and_deliver() -> list[str]:
        services = build_services(app.settings, clock=clock)
        try:
            await services.recovery.request_reset(
                email="ada@example.com", phone=None, attempt_id="a"
            )
            clock.advance(app.settings.code_ttl_seconds + 1)
            await services.worker.drain()
            async with services.database.read() as conn:
                jobs = await DeliveryRepository(conn).list_jobs()
            return [f"{job.status}:{job.last_error}:{job.sealed_payload is None}" for job in jobs]
        finally:
            await services.close()

    assert run(prepare_and_deliver()) == ["failed:expired before sending:True"]
    assert sink.messages == []


def test_r08_asking_for_a_reset_changes_nothing_on_the_account(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app()
    with app.client() as client:
        sign_up_verified(client)
        for _ in range(3):
            assert client.post("/send-token", json={"email": "ada@example.com"}).status_code == 202
        assert (
            client.post(
                "/login", json={"email": "ada@example.com", "password": PASSWORD}
            ).status_code
            == 200
        )


@pytest.mark.parametrize("provider", ["mailbox", "outbox", "console"])
def test_dev_providers_print_the_message_to_the_console(
    live_app: Callable[..., LiveApp], provider: str, capfd: pytest.CaptureFixture[str]
) -> None:
    app = live_app(email_provider=provider)
    with app.client() as client:
        sign_up(client, name="Ada")
        import time

        deadline = time.monotonic() + 10
        printed = ""
        while time.monotonic() < deadline and "confirmation code is" not in printed:
            time.sleep(0.05)
            printed += capfd.readouterr().out
    assert "email to ada@example.com" in printed
    assert find_code(printed.split("confirmation code is", 1)[1])
