"""A worker's batch (notify/outcomes.py): the outcomes of one claimed batch are written
together, on SQLite and PostgreSQL, without changing what each job's outcome is.

- a batch where one send fails: only that job is retried, the others are sent and closed
  once, each with its attempt and audit record;
- a job still in flight does not hold back the outcomes of the rest of its batch; when its
  lease runs out another worker claims only that job (and logs an ``interrupted`` attempt
  for it), and what was recorded as sent is never sent again;
- BatchOutcomes itself: one write for a batch whose jobs all end together, a member that
  ends without an outcome does not hold the others, a failed write reaches each caller.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
from pydantic import SecretStr

from resetflow.accounts.models import Channel
from resetflow.audit import AuditEvent, AuditLog
from resetflow.clock import FrozenClock
from resetflow.crypto import Keyring
from resetflow.notify.events import Events, EventType, WebhookEndpoint
from resetflow.notify.messages import Notification, Route
from resetflow.notify.outbox import Outbox
from resetflow.notify.outcomes import BatchOutcomes
from resetflow.notify.providers.smtp import SmtpProvider
from resetflow.notify.templates import TemplateRenderer
from resetflow.notify.webhooks_out import WebhookSender
from resetflow.notify.worker import DeliveryWorker, WorkerPolicy
from resetflow.storage.database import Database
from resetflow.storage.deliveries import DeliveryJob, DeliveryRepository
from tests.support.servers import SmtpSink, run, smtp_server

ADDRESSES = ["a@example.com", "b@example.com", "c@example.com"]


@dataclass
class HoldingSink(SmtpSink):
    """Holds the first message to each address of ``hold`` until ``release`` is set."""

    hold: set[str] = field(default_factory=set)
    release: threading.Event = field(default_factory=threading.Event)
    held: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.hold & set(envelope.rcpt_tos):
            self.hold -= set(envelope.rcpt_tos)
            self.held.set()
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        return await super().handle_DATA(server, session, envelope)


@dataclass
class Setup:
    database: Database
    outbox: Outbox
    clock: FrozenClock
    port: int
    providers: list[SmtpProvider] = field(default_factory=list)

    def worker(self, **policy: Any) -> DeliveryWorker:
        smtp = SmtpProvider(host="127.0.0.1", port=self.port, sender="resetflow@example.com")
        self.providers.append(smtp)
        return DeliveryWorker(
            database=self.database,
            outbox=self.outbox,
            providers={Channel.EMAIL: [smtp]},
            renderer=TemplateRenderer(),
            clock=self.clock,
            policy=WorkerPolicy(**policy),
            audit=AuditLog(database=self.database, clock=self.clock),
        )

    async def enqueue(self, addresses: list[str]) -> dict[str, str]:
        """One reset-code job per address, in that order; the job id of each."""
        ids: dict[str, str] = {}
        for to in addresses:
            async with self.database.write() as conn:
                now = self.clock.now()
                ids[to] = await self.outbox.enqueue(
                    conn,
                    notification=Notification.PASSWORD_RESET_TOKEN,
                    routes=[Route(channel=Channel.EMAIL, to=to)],
                    context={
                        "name": "Ada",
                        "base_url": "http://x",
                        "ttl_minutes": 15,
                        "token": "123456",
                    },
                    locale="en",
                    user_id=f"user-{to[0]}",
                    now=now,
                    expires_at=now + timedelta(hours=1),
                )
            self.clock.advance(0.001)  # claimed oldest first: in this order
        return ids

    async def job(self, job_id: str) -> DeliveryJob:
        async with self.database.read() as conn:
            found = await DeliveryRepository(conn).get(job_id)
        assert found is not None
        return found

    async def attempts(self, job_id: str) -> list[tuple[str, str]]:
        async with self.database.read() as conn:
            return [(a.provider, a.status) for a in await DeliveryRepository(conn).attempts(job_id)]

    async def codes_sent(self) -> list[str]:
        records = await AuditLog(database=self.database, clock=self.clock).recent(
            event=AuditEvent.CODE_SENT.value
        )
        return sorted(r.user_id or "" for r in records)


@asynccontextmanager
async def _setup(database_url: str, port: int) -> AsyncIterator[Setup]:
    setup = Setup(
        database=Database(database_url),
        outbox=Outbox(keyring=Keyring(b"k" * 32)),
        clock=FrozenClock(),
        port=port,
    )
    try:
        yield setup
    finally:
        for provider in setup.providers:
            await provider.close()
        await setup.database.close()


def test_in_a_batch_only_the_job_whose_send_failed_is_retried(database_url: str) -> None:
    with smtp_server() as (sink, port):
        sink.refuse["b@example.com"] = "451 4.3.0 Try again later"

        async def scenario() -> None:
            async with _setup(database_url, port) as setup:
                ids = await setup.enqueue(ADDRESSES)
                worker = setup.worker(backoff_seconds=1.0)
                assert await worker.run_once() == 3  # one claim for the three jobs

                a, b, c = [await setup.job(ids[to]) for to in ADDRESSES]
                assert (a.status, c.status) == ("sent", "sent")
                assert a.sealed_payload is None and c.sealed_payload is None
                assert a.provider_message_id and c.provider_message_id
                assert (b.status, b.tries, b.route_index) == ("queued", 1, 0)
                assert b.sealed_payload is not None and b.last_error
                assert await setup.attempts(ids["a@example.com"]) == [("smtp", "sent")]
                assert await setup.attempts(ids["b@example.com"]) == [("smtp", "retry")]
                assert await setup.attempts(ids["c@example.com"]) == [("smtp", "sent")]
                assert await setup.codes_sent() == ["user-a", "user-c"]

                del sink.refuse["b@example.com"]
                setup.clock.advance(10)  # past any backoff
                assert await worker.run_once() == 1  # only the job that failed
                assert (await setup.job(ids["b@example.com"])).status == "sent"
                assert await setup.attempts(ids["b@example.com"]) == [
                    ("smtp", "retry"),
                    ("smtp", "sent"),
                ]
                assert await setup.codes_sent() == ["user-a", "user-b", "user-c"]
                assert await worker.run_once() == 0

        run(scenario())
        assert [len(sink.to(to)) for to in ADDRESSES] == [1, 1, 1]


def test_a_lost_lease_is_claimed_again_and_what_was_recorded_sent_is_not_resent(
    database_url: str,
) -> None:
    """Worker 1's batch: a and c are sent and recorded while b's send hangs (its outcome
    does not wait for b); b's lease runs out, worker 2 claims b alone and sends it. When
    worker 1's send of b finally ends, its outcome does not overwrite worker 2's."""
    sink = HoldingSink(hold={"b@example.com"})
    with smtp_server(sink) as (_, port):

        async def scenario() -> None:
            async with _setup(database_url, port) as setup:
                ids = await setup.enqueue(ADDRESSES)
                first = setup.worker(lease_seconds=60)
                in_flight = asyncio.create_task(first.run_once())
                deadline = time.monotonic() + 15
                while [
                    (await setup.job(ids[to])).status for to in ("a@example.com", "c@example.com")
                ] != ["sent", "sent"]:
                    assert time.monotonic() < deadline, "a and c were not recorded sent"
                    assert not in_flight.done()
                    await asyncio.sleep(0.02)
                assert sink.held.is_set() and not in_flight.done()
                held = await setup.job(ids["b@example.com"])
                assert (held.status, held.provider) == ("sending", None)

                setup.clock.advance(61)  # worker 1's lease on b runs out
                second = setup.worker(lease_seconds=60)
                assert await second.run_once() == 1  # b only: a and c are done
                taken_over = await setup.job(ids["b@example.com"])
                assert taken_over.status == "sent"

                sink.release.set()
                assert await in_flight == 3
                final = await setup.job(ids["b@example.com"])
                # Worker 2's outcome stands: worker 1 no longer held the lease.
                assert final.provider_message_id == taken_over.provider_message_id
                assert final.updated_at == taken_over.updated_at
                assert await setup.attempts(ids["a@example.com"]) == [("smtp", "sent")]
                assert await setup.attempts(ids["c@example.com"]) == [("smtp", "sent")]
                # The take-over is in the delivery log: worker 1 stopped mid-send (as far
                # as anyone could tell), then worker 2's send, then worker 1's late one.
                assert await setup.attempts(ids["b@example.com"]) == [
                    ("worker", "interrupted"),
                    ("smtp", "sent"),
                    ("smtp", "sent"),
                ]
                assert final.last_error is None
                assert await second.run_once() == 0

        run(scenario())
    assert len(sink.to("a@example.com")) == 1
    assert len(sink.to("c@example.com")) == 1
    # b went out twice: worker 1 was still sending it when its lease ran out (at least once).
    assert len(sink.to("b@example.com")) == 2


def test_a_job_whose_worker_stops_every_time_ends_after_max_tries(database_url: str) -> None:
    """Each claim of a job whose lease ran out counts the interrupted try, so a job that
    stops its worker every time it is sent (here: claimed by two workers that die) fails
    at ``max_tries`` instead of being claimed again for ever; under the limit it is sent."""
    with smtp_server() as (sink, port):

        async def scenario() -> None:
            async with _setup(database_url, port) as setup:
                ids = await setup.enqueue(["a@example.com", "b@example.com"])
                for dead in ("dead-1", "dead-2"):
                    async with setup.database.write() as conn:
                        taken = await DeliveryRepository(conn).claim_due(
                            owner=dead, now=setup.clock.now(), lease_seconds=60, limit=10
                        )
                    assert len(taken) == 2
                    setup.clock.advance(61)  # the dead worker's lease runs out
                # The first claim took queued jobs (no try lost); the second took over
                # dead-1's expired leases: one lost try each.
                assert [(await setup.job(i)).tries for i in ids.values()] == [1, 1]

                # The worker's claim takes over the second lost lease: 2 tries lost, and
                # with max_tries=2 neither job is sent again; both end failed, logged.
                worker = setup.worker(max_tries=2)
                assert await worker.run_once() == 2
                for job_id in ids.values():
                    job = await setup.job(job_id)
                    assert (job.status, job.tries) == ("failed", 2)
                    assert job.last_error and job.last_error.startswith("interrupted 2 times")
                    assert job.sealed_payload is None  # the code inside is erased
                    assert await setup.attempts(job_id) == [("worker", "interrupted")]

        run(scenario())
        assert sink.messages == []

    with smtp_server() as (sink, port):

        async def under_the_limit() -> None:
            async with _setup(database_url, port) as setup:
                ids = await setup.enqueue(["c@example.com"])
                async with setup.database.write() as conn:
                    await DeliveryRepository(conn).claim_due(
                        owner="dead", now=setup.clock.now(), lease_seconds=60, limit=10
                    )
                setup.clock.advance(61)
                assert await setup.worker(max_tries=4).run_once() == 1
                job = await setup.job(ids["c@example.com"])
                assert job.status == "sent"
                assert await setup.attempts(job.id) == [("worker", "interrupted"), ("smtp", "sent")]

        run(under_the_limit())
        assert len(sink.to("c@example.com")) == 1


def test_an_event_job_whose_worker_stops_every_time_ends_after_max_tries(
    database_url: str,
) -> None:
    """The same for an event for the host application (a webhook job): lost leases count
    as tries, and at max_tries the job fails without another POST."""
    posted: list[httpx.Request] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        posted.append(request)  # must never be called: the test fails on any POST
        return httpx.Response(204)

    async def scenario() -> None:
        async with _setup(database_url, 0) as setup:
            events = Events(
                endpoints=[
                    WebhookEndpoint(
                        url="https://app.example.org/hooks",
                        secret=SecretStr("whsec_" + "A" * 43),
                    )
                ],
                keyring=Keyring(b"k" * 32),
            )
            async with setup.database.write() as conn:
                [job_id] = await events.publish(
                    conn, EventType.USER_CREATED, {"id": "u1"}, now=setup.clock.now()
                )
            for dead in ("dead-1", "dead-2"):
                async with setup.database.write() as conn:
                    await DeliveryRepository(conn).claim_due(
                        owner=dead, now=setup.clock.now(), lease_seconds=60, limit=10
                    )
                setup.clock.advance(61)
            sender = WebhookSender(
                events=events,
                database=setup.database,
                clock=setup.clock,
                transport=httpx.MockTransport(receiver),
            )
            worker = DeliveryWorker(
                database=setup.database,
                outbox=setup.outbox,
                providers={},
                renderer=TemplateRenderer(),
                clock=setup.clock,
                policy=WorkerPolicy(max_tries=2),
                webhooks=sender,
            )
            try:
                assert await worker.run_once() == 1
            finally:
                await sender.close()
            job = await setup.job(job_id)
            assert (job.status, job.tries) == ("failed", 2)
            assert job.last_error and job.last_error.startswith("interrupted 2 times")

    run(scenario())
    assert posted == []


# BatchOutcomes on its own ----------------------------------------------------------------


def test_outcomes_of_jobs_that_end_together_are_one_write() -> None:
    written: list[list[str]] = []

    async def write(outcomes: list[str]) -> None:
        written.append(outcomes)

    async def scenario() -> None:
        batch: BatchOutcomes[str] = BatchOutcomes(write, members=4, linger=60)

        async def member(name: str, outcome: bool) -> None:
            try:
                if outcome:
                    await batch.add(name, f"sent {name}")
            finally:
                batch.leave(name)

        await asyncio.gather(*(member(n, n != "d") for n in "abcd"))
        await batch.close()
        assert batch.writes == 1

    run(scenario())
    assert written == [["sent a", "sent b", "sent c"]]


def test_an_outcome_is_written_without_waiting_for_a_member_that_never_ends() -> None:
    written: list[list[str]] = []

    async def write(outcomes: list[str]) -> None:
        written.append(outcomes)

    async def scenario() -> None:
        batch: BatchOutcomes[str] = BatchOutcomes(write, members=2, linger=0.01)
        # The other member is still sending: the linger lets this one be written anyway.
        await asyncio.wait_for(batch.add("a", "sent a"), timeout=30)
        assert written == [["sent a"]]
        batch.leave("a")
        await batch.close()

    run(scenario())
    assert written == [["sent a"]]


def test_a_failed_write_reaches_every_job_of_it() -> None:
    async def write(_outcomes: list[str]) -> None:
        raise RuntimeError("database down")

    async def scenario() -> list[BaseException | None]:
        batch: BatchOutcomes[str] = BatchOutcomes(write, members=2, linger=60)
        results = await asyncio.gather(
            batch.add("a", "sent a"), batch.add("b", "sent b"), return_exceptions=True
        )
        await batch.close()
        return [r if isinstance(r, BaseException) else None for r in results]

    errors = run(scenario())
    assert [str(e) for e in errors] == ["database down", "database down"]
