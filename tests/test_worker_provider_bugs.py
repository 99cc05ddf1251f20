"""A provider that fails in a way it should not (a bug, not a ProviderError) costs a
logged, bounded retry like any retryable failure: the job is not left leased and
re-claimed at every lease expiry for ever, and the failover still happens."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from resetflow.accounts.models import Channel
from resetflow.config import Settings
from resetflow.notify.messages import RenderedMessage
from resetflow.notify.providers.base import Provider, SendResult
from resetflow.notify.worker import DeliveryWorker, WorkerPolicy
from resetflow.services import build_services, make_renderer
from resetflow.storage.deliveries import DeliveryRepository
from resetflow.storage.migrate import upgrade
from tests.support.flow import create_verified_account


class BuggyProvider(Provider):
    name = "buggy"
    channels = frozenset({Channel.EMAIL})

    async def send(self, message: RenderedMessage) -> SendResult:
        raise KeyError(f"oops {message.text}")  # the text holds the code


class RecordingProvider(Provider):
    name = "recording"
    channels = frozenset({Channel.SMS})

    def __init__(self) -> None:
        self.sent: list[RenderedMessage] = []

    async def send(self, message: RenderedMessage) -> SendResult:
        self.sent.append(message)
        return SendResult(provider_message_id=f"m{len(self.sent)}")


def test_an_unexpected_provider_exception_is_a_retryable_failure_then_failover(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(inprocess_worker=False)
    upgrade(settings.resolved_database_url)
    create_verified_account(settings, preference=Channel.EMAIL)
    sms = RecordingProvider()

    async def run() -> tuple[str, str | None, list[tuple[str, str, str | None]]]:
        services = build_services(settings)
        worker = DeliveryWorker(
            database=services.database,
            outbox=services.outbox,
            providers={Channel.EMAIL: [BuggyProvider()], Channel.SMS: [sms]},
            renderer=make_renderer(settings),
            clock=services.clock,
            policy=WorkerPolicy(max_tries=1),  # one try per route: then the next route
        )
        try:
            await services.recovery.request_reset(
                email="ada@example.com", phone=None, attempt_id="a"
            )
            handled = await worker.drain(max_rounds=5)
            assert handled == 1  # claimed once, settled: not left leased
            async with services.database.read() as conn:
                repo = DeliveryRepository(conn)
                [job] = await repo.list_jobs()
                attempts = await repo.attempts(job.id)
            return (
                job.status,
                job.channel,
                [(a.provider, a.status, a.error) for a in attempts],
            )
        finally:
            await services.close()

    status, channel, attempts = asyncio.run(run())
    assert (status, channel) == ("sent", "sms")
    assert attempts[0] == ("buggy", "retry", "buggy: unexpected KeyError")
    assert attempts[-1][:2] == ("recording", "sent")
    assert len(sms.sent) == 1
