"""Issue acceptance, under chaos: with the SMS stand-in failing 30 % of requests at random
(5xx) and timing out on another 10 %, 300 reset requests all end delivered or recorded as
failed with a reason; none is sent twice after a 2xx; none is lost.

The stand-in holds a "timed out" request past the provider timeout and does not count it
as sent (see tests/standins/twilio.py): so every SMS it accepted was answered ``201``, and
a second SMS to the same number would be a resend after a 2xx."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Callable

from resetflow.accounts.models import Channel
from resetflow.accounts.passwords import PasswordHasher
from resetflow.services import build_services
from resetflow.storage.deliveries import DeliveryAttempt, DeliveryJob, DeliveryRepository
from resetflow.storage.users import UserRepository
from tests.conftest import LiveApp
from tests.standins.fixtures import twilio_fixture  # noqa: F401
from tests.standins.twilio import TwilioStandIn
from tests.support.flow import PASSWORD
from tests.support.servers import SmtpSink

USERS = 300
RESET = "password-reset-token"
Log = list[tuple[DeliveryJob, list[DeliveryAttempt]]]


def _phone(i: int) -> str:
    return f"+1415555{100 + i:04d}"


def _email(i: int) -> str:
    return f"chaos{i}@example.com"


def _create_users(app: LiveApp) -> None:
    """300 accounts preferring SMS, both contacts verified, written straight into the
    database with one password hash (one Argon2 run instead of 300)."""

    async def create() -> None:
        services = build_services(app.settings)
        try:
            password_hash = await PasswordHasher().hash(PASSWORD)
            now = services.clock.now()
            async with services.database.write() as conn:
                users = UserRepository(conn)
                for i in range(USERS):
                    user_id = secrets.token_hex(16)
                    await users.insert(
                        user_id=user_id,
                        name=f"Chaos {i}",
                        email=_email(i),
                        phone=_phone(i),
                        password_hash=password_hash,
                        preference=Channel.SMS,
                        locale="en",
                        now=now,
                    )
                    await users.mark_verified(user_id, Channel.EMAIL, now=now)
                    await users.mark_verified(user_id, Channel.SMS, now=now)
        finally:
            await services.close()

    asyncio.run(create())


def _settled_log(app: LiveApp, *, timeout: float) -> Log:
    """The reset jobs and their attempts, once none is queued or sending (bounded)."""

    async def read() -> Log:
        services = build_services(app.settings)
        try:
            deadline = time.monotonic() + timeout
            while True:
                async with services.database.read() as conn:
                    repo = DeliveryRepository(conn)
                    jobs = [j for j in await repo.list_jobs(limit=1000) if j.notification == RESET]
                    settled = len(jobs) == USERS and all(
                        j.status in ("sent", "failed") for j in jobs
                    )
                    if settled or time.monotonic() > deadline:
                        return [(job, await repo.attempts(job.id)) for job in jobs]
                await asyncio.sleep(0.25)
        finally:
            await services.close()

    return asyncio.run(read())


def test_300_resets_under_sms_chaos_are_each_delivered_once_or_failed_with_a_reason(
    live_app: Callable[..., LiveApp], twilio: TwilioStandIn, smtp: tuple[SmtpSink, int]
) -> None:
    sink, port = smtp
    app = live_app(
        **twilio.settings(),
        email_provider="smtp",
        smtp_host="127.0.0.1",
        smtp_port=port,
        email_from="resetflow@example.org",
        provider_timeout_seconds=0.5,
        delivery_backoff_seconds=0.05,
        delivery_max_tries=4,
        worker_poll_seconds=0.1,
        limit_ip="100000/minute",
        limit_destination="1000/minute",
        limit_global="100000/second",
        limit_sms_prefix="1000000/hour",
        sms_hourly_budget=1_000_000,
    )
    _create_users(app)
    twilio.chaos(fail=0.3, timeout=0.1, seed=20260101, hold_seconds=1.5)

    started = time.monotonic()
    with app.client() as client:
        for i in range(USERS):
            answer = client.post("/send-token", json={"phone": _phone(i)})
            assert answer.status_code == 202, answer.text
    log = _settled_log(app, timeout=90)
    elapsed = time.monotonic() - started

    # None lost: one reset job per request, every one finished.
    assert len(log) == USERS
    pending = [(job.id, job.status) for job, _ in log if job.status not in ("sent", "failed")]
    assert pending == [], pending
    failed = [job for job, _ in log if job.status == "failed"]
    assert all(job.last_error for job in failed), [(j.id, j.last_error) for j in failed]

    # Each job sent at most once, and a sent job has exactly one "sent" attempt.
    for job, attempts in log:
        sent_attempts = [a for a in attempts if a.status == "sent"]
        assert len(sent_attempts) == (1 if job.status == "sent" else 0), (job.id, attempts)

    # None sent twice after a 2xx: one accepted SMS per number at most, one email per
    # address at most; what arrived is exactly what the log says was sent.
    sms_per_number = Counter(message.to for message in twilio.messages)
    assert max(sms_per_number.values(), default=0) <= 1, sms_per_number.most_common(3)
    emails = list(sink.messages)
    email_per_address = Counter(r for mail in emails for r in mail.recipients)
    assert max(email_per_address.values(), default=0) <= 1, email_per_address.most_common(3)
    by_sms = sum(job.status == "sent" and job.channel == "sms" for job, _ in log)
    by_email = sum(job.status == "sent" and job.channel == "email" for job, _ in log)
    assert len(twilio.messages) == by_sms
    assert len(emails) == by_email
    assert len(twilio.messages) + len(emails) == by_sms + by_email == USERS - len(failed)

    # The chaos really happened, and a timed-out request never counted as sent.
    requests = twilio.requests
    timed_out = [r for r in requests if r.timed_out]
    errors = [r for r in requests if r.status >= 500 and not r.timed_out]
    assert timed_out and errors
    retries = sum(a.status == "retry" for _, attempts in log for a in attempts)
    assert retries == len(timed_out) + len(errors)
    print(
        f"\nchaos: {USERS} resets in {elapsed:.1f}s: sent by sms {by_sms}, by email "
        f"{by_email}, failed {len(failed)}; twilio requests {len(requests)} "
        f"(5xx {len(errors)}, timed out {len(timed_out)}), retries logged {retries}"
    )
