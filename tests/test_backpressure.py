"""Backpressure from the in-process worker: requests that write jobs wait (bounded) while
the worker is behind, so that messages do not queue up for as long as a load lasts."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable

import httpx
import pytest

from resetflow.crypto import Keyring
from resetflow.notify.outbox import Outbox
from tests.conftest import LiveApp
from tests.support.flow import create_verified_account

pytestmark = pytest.mark.anyio


def _outbox() -> Outbox:
    return Outbox(keyring=Keyring(b"k" * 32))


async def test_without_an_in_process_worker_requests_are_admitted_at_once() -> None:
    outbox = _outbox()
    outbox.report_claim(claimed=20, batch_size=20)  # even when a claim came back full
    await asyncio.wait_for(outbox.admit(), 1)


async def test_requests_wait_while_the_worker_is_behind_and_go_once_it_caught_up() -> None:
    outbox = _outbox()
    outbox.hold_requests_while_behind(30)
    await asyncio.wait_for(outbox.admit(), 1)  # nothing claimed yet: not behind
    outbox.report_claim(claimed=20, batch_size=20)
    waiting = [asyncio.create_task(outbox.admit()) for _ in range(5)]
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in waiting)
    outbox.report_claim(claimed=20, batch_size=20)  # still behind
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in waiting)
    outbox.report_claim(claimed=3, batch_size=20)  # caught up: everyone goes
    await asyncio.wait_for(asyncio.gather(*waiting), 1)


async def test_the_wait_is_bounded_when_the_worker_never_catches_up() -> None:
    outbox = _outbox()
    outbox.hold_requests_while_behind(0.05)
    outbox.report_claim(claimed=20, batch_size=20)
    await asyncio.wait_for(outbox.admit(), 2)  # returns by itself, no exception


def test_a_burst_of_requests_is_answered_and_every_message_delivered(
    live_app: Callable[..., LiveApp],
) -> None:
    """160 concurrent /send-token (half for known accounts), more than the worker's batch
    of 20: the gate closes and opens again; nothing deadlocks, every answer is the generic
    202, every known account gets exactly one message."""
    app = live_app(limit_global="100000/minute")
    known = [f"user{i}@example.com" for i in range(80)]
    for i, address in enumerate(known):
        create_verified_account(app.settings, name="User", email=address, phone=f"+1415555{i:04d}")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=app.url, timeout=60) as client:
            addresses = known + [f"nobody{i}@example.com" for i in range(80)]
            return await asyncio.gather(
                *(client.post("/send-token", json={"email": a}) for a in addresses)
            )

    answers = asyncio.run(burst())
    assert {a.status_code for a in answers} == {202}
    assert len({a.text for a in answers}) == 1
    database = sqlite3.connect(app.settings.data_dir / "resetflow.db")
    try:
        deadline = time.monotonic() + 30
        while True:
            sent = [
                row[0]
                for row in database.execute(
                    "SELECT recipient FROM dev_outbox WHERE notification = 'password-reset-token'"
                )
            ]
            if len(sent) >= len(known) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        database.close()
    assert sorted(sent) == sorted(known)
