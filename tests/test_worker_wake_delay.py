"""The in-process worker's random delay (R20): a job is not delivered the moment the
request that queued it is answered, but within the configured bound after it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from resetflow.accounts.models import Channel
from resetflow.config import Settings
from resetflow.notify.messages import RenderedMessage
from resetflow.notify.providers.base import Provider, SendResult
from resetflow.notify.worker import DeliveryWorker, WorkerPolicy
from resetflow.services import build_services, make_renderer
from resetflow.storage.migrate import upgrade
from tests.support.flow import create_verified_account


class Recording(Provider):
    name = "recording"
    channels = frozenset({Channel.EMAIL})

    def __init__(self) -> None:
        self.sent_at: list[float] = []

    async def send(self, message: RenderedMessage) -> SendResult:
        self.sent_at.append(time.monotonic())
        return SendResult(provider_message_id="m")


def _deliver_one(settings: Settings, *, delay: float, draw: float) -> float:
    """Seconds from the request's answer to the send, with the worker running."""
    email = Recording()

    async def run() -> float:
        services = build_services(settings)
        worker = DeliveryWorker(
            database=services.database,
            outbox=services.outbox,
            providers={Channel.EMAIL: [email]},
            renderer=make_renderer(settings),
            clock=services.clock,
            policy=WorkerPolicy(poll_seconds=30),  # only a wake may start the claim
        )
        worker.delay_after_wake(delay, random=lambda: draw)
        running = asyncio.create_task(worker.run())
        try:
            await asyncio.sleep(0.05)  # the worker is idle, waiting for a wake
            await services.recovery.request_reset(
                email="ada@example.com", phone=None, attempt_id="a"
            )
            answered = time.monotonic()
            deadline = answered + 10
            while not email.sent_at and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert email.sent_at, "never delivered"
            return email.sent_at[0] - answered
        finally:
            worker.stop()
            await running
            await services.close()

    return asyncio.run(run())


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """A migrated SQLite database with one verified account; no in-process worker."""
    settings = make_settings(inprocess_worker=False)
    upgrade(settings.resolved_database_url)
    create_verified_account(settings, preference=Channel.EMAIL)
    return settings


def test_r20_the_in_process_worker_waits_a_random_moment_before_delivering(
    settings: Settings,
) -> None:
    # The largest draw: the whole delay passes before the claim, and not much more.
    waited = _deliver_one(settings, delay=0.6, draw=0.999)
    assert 0.55 <= waited < 5


def test_without_a_delay_the_worker_delivers_on_the_wake(settings: Settings) -> None:
    waited = _deliver_one(settings, delay=0.0, draw=0.999)
    assert waited < 0.55  # no poll interval (30 s) either: the wake did it
