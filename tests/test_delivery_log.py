"""The delivery log service (notify/delivery_log.py), on both stores: what operators, the
provider webhooks and the readiness figures may read and change of delivery jobs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from resetflow.config import Settings
from resetflow.notify.delivery_log import DeliveryLog, RetryRefusal, RetryRefused
from resetflow.services import build_services
from resetflow.storage.deliveries import DECOY, EVENT_CHANNEL, WEBHOOK, JobStatus
from resetflow.storage.migrate import upgrade
from tests.support.deliveries import put_job, read_job

T = TypeVar("T")


@pytest.fixture
def settings(make_settings: Callable[..., Settings], backend: dict[str, Any]) -> Settings:
    made = make_settings(**backend)
    made.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(made.resolved_database_url)
    return made


def _with_log(settings: Settings, use: Callable[[DeliveryLog], Awaitable[T]]) -> T:
    """``use`` run on the delivery log of freshly built services (closed afterwards)."""

    async def run() -> T:
        services = build_services(settings)
        try:
            return await use(services.delivery_log)
        finally:
            await services.close()

    return asyncio.run(run())


def test_search_newest_first_with_filters_and_masked_destinations_never_decoys(
    settings: Settings,
) -> None:
    old = put_job(settings, status="failed", provider="smtp", age=timedelta(minutes=5))
    sms = put_job(
        settings,
        status="sent",
        channel="sms",
        provider="twilio",
        destination="+1415*****00",
        provider_message_id="SM1",
        age=timedelta(minutes=1),
    )
    put_job(settings, status=DECOY, provider="smtp")

    everything = _with_log(settings, lambda log: log.search())
    assert [entry.job.id for entry in everything] == [sms, old]
    assert [entry.destination for entry in everything] == ["+1415*****00", "a***@example.com"]

    assert [e.job.id for e in _with_log(settings, lambda log: log.search(channel="sms"))] == [sms]
    assert [
        e.job.id for e in _with_log(settings, lambda log: log.search(status=JobStatus.FAILED))
    ] == [old]
    assert [e.job.id for e in _with_log(settings, lambda log: log.search(provider="smtp"))] == [old]
    assert [e.job.id for e in _with_log(settings, lambda log: log.search(limit=1))] == [sms]


def test_status_counts_per_window_without_decoys(settings: Settings) -> None:
    put_job(settings, status="sent", provider_message_id="a", age=timedelta(minutes=10))
    put_job(settings, status="sent", provider_message_id="b", age=timedelta(hours=3))
    put_job(settings, status="failed", age=timedelta(hours=2))
    put_job(settings, status="failed", age=timedelta(days=2))
    put_job(settings, status=DECOY)

    hour, day = _with_log(
        settings, lambda log: log.status_counts(timedelta(hours=1), timedelta(days=1))
    )
    assert hour == {"sent": 1}
    assert day == {"sent": 2, "failed": 1}


def test_read_gives_the_job_and_its_attempts_never_a_decoy(settings: Settings) -> None:
    job_id = put_job(settings, status="sent", provider_message_id="pm-1")
    decoy = put_job(settings, status=DECOY)

    record = _with_log(settings, lambda log: log.read(job_id))
    assert record is not None
    assert record.job.id == job_id
    assert record.job.status == JobStatus.SENT
    assert [(a.status, a.provider_message_id) for a in record.attempts] == [("sent", "pm-1")]
    assert _with_log(settings, lambda log: log.read(decoy)) is None
    assert _with_log(settings, lambda log: log.read("no-such-job")) is None


def test_retry_makes_a_waiting_job_due_now(settings: Settings) -> None:
    job_id = put_job(
        settings,
        status="queued",
        keep_payload=True,
        due_in=timedelta(hours=1),
        expires_in=timedelta(minutes=10),
    )
    before = datetime.now(UTC)

    was = _with_log(settings, lambda log: log.retry(job_id))

    assert was.id == job_id
    assert was.next_attempt_at is not None and was.next_attempt_at > before + timedelta(minutes=50)
    job, _ = read_job(settings, job_id)
    assert job.status == JobStatus.QUEUED
    assert job.next_attempt_at is not None and job.next_attempt_at <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("job", "reason"),
    [
        ({"status": "failed"}, RetryRefusal.FAILED),
        ({"status": "sent", "provider_message_id": "m"}, RetryRefusal.ACCEPTED),
        ({"status": "delivered", "provider_message_id": "m"}, RetryRefusal.ACCEPTED),
        ({"status": "undeliverable", "provider_message_id": "m"}, RetryRefusal.ACCEPTED),
        ({"status": "sending", "keep_payload": True}, RetryRefusal.SENDING),
        ({"status": "queued"}, RetryRefusal.NO_PAYLOAD),
        (
            {"status": "queued", "keep_payload": True, "expires_in": timedelta(minutes=-1)},
            RetryRefusal.CODE_EXPIRED,
        ),
        ({"status": DECOY, "keep_payload": True}, RetryRefusal.NO_SUCH_JOB),
    ],
)
def test_retry_refuses_what_cannot_be_sent_again(
    settings: Settings, job: dict[str, Any], reason: RetryRefusal
) -> None:
    job_id = put_job(settings, due_in=timedelta(hours=1), **job)
    before, _ = read_job(settings, job_id)

    with pytest.raises(RetryRefused) as refused:
        _with_log(settings, lambda log: log.retry(job_id))

    assert refused.value.reason == reason
    assert refused.value.job == (None if reason == RetryRefusal.NO_SUCH_JOB else before)
    after, _ = read_job(settings, job_id)
    assert after == before


def test_retry_of_an_unknown_job(settings: Settings) -> None:
    with pytest.raises(RetryRefused) as refused:
        _with_log(settings, lambda log: log.retry("no-such-job"))
    assert refused.value.reason == RetryRefusal.NO_SUCH_JOB
    assert refused.value.job is None


def test_reports_move_a_sent_job_forward_once_and_are_all_logged(settings: Settings) -> None:
    job_id = put_job(settings, status="sent", provider="postmark", provider_message_id="pm-7")

    def report(status: JobStatus | None, text: str, provider: str = "postmark") -> Any:
        return _with_log(
            settings,
            lambda log: log.record_report(
                provider=provider, provider_message_id="pm-7", status=status, report=text
            ),
        )

    first = report(JobStatus.DELIVERED, "postmark: delivered")
    assert (first.job_id, first.previous, first.status, first.moved) == (
        job_id,
        "sent",
        "delivered",
        True,
    )
    late = report(JobStatus.UNDELIVERABLE, "postmark: bounce HardBounce")
    assert (late.status, late.moved) == ("delivered", False)
    # Another provider's message with the same id is not this job.
    assert report(JobStatus.UNDELIVERABLE, "twilio: failed", provider="twilio") is None

    job, attempts = read_job(settings, job_id)
    assert job.status == JobStatus.DELIVERED
    assert [(a.status, a.error) for a in attempts if a.status == WEBHOOK] == [
        ("webhook", "postmark: delivered"),
        ("webhook", "postmark: bounce HardBounce; no change (job delivered)"),
    ]
    assert [a.destination for a in attempts] == ["a***@example.com"] * 3


def test_backlog_counts_what_workers_have_left_decoys_in_events_out(settings: Settings) -> None:
    empty = _with_log(settings, lambda log: log.backlog())
    assert (empty.pending, empty.oldest_queued_at) == (0, None)
    assert empty.lag_seconds(datetime.now(UTC)) == 0.0

    put_job(settings, status="queued", keep_payload=True, age=timedelta(seconds=30))
    put_job(settings, status=DECOY, keep_payload=True, age=timedelta(minutes=2))
    put_job(settings, status="sending", keep_payload=True, age=timedelta(hours=1))
    put_job(settings, status="queued", channel=EVENT_CHANNEL, age=timedelta(hours=2))
    put_job(settings, status="sent", provider_message_id="m", age=timedelta(hours=3))

    backlog = _with_log(settings, lambda log: log.backlog())
    assert backlog.pending == 3
    assert backlog.oldest_queued_at is not None
    assert 110 <= backlog.lag_seconds(datetime.now(UTC)) < 3600
    assert backlog.lag_seconds(backlog.oldest_queued_at - timedelta(seconds=5)) == 0.0

    uncounted = _with_log(settings, lambda log: log.backlog(count=False))
    assert uncounted.pending is None
    assert uncounted.oldest_queued_at == backlog.oldest_queued_at
