"""Issue 4: several processes on PostgreSQL + Redis. Two ``resetflow serve`` and two
``resetflow worker`` processes, all real subprocesses sharing one database, one Redis and
one SMTP server: every request answered is delivered exactly once whichever process took
it, a session made on one web process works on the other, and a worker killed with
SIGKILL in the middle of a batch loses no message (and re-sends at most what it held)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from resetflow.accounts.models import Channel
from resetflow.accounts.passwords import PasswordHasher
from resetflow.notify.worker import WorkerPolicy
from resetflow.storage.database import Database
from resetflow.storage.deliveries import DeliveryRepository
from resetflow.storage.tables import delivery_jobs, users
from resetflow.storage.users import UserRepository
from tests.conftest import _asyncpg_dsn
from tests.support.flow import NEW_PASSWORD, PASSWORD, find_code
from tests.support.processes import ProcessSet
from tests.support.servers import SmtpSink, free_port, run

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

RESET_SUBJECT = "Your password reset token"
# How many jobs one worker claims at once: all a SIGKILLed worker can have left half-done.
BATCH_SIZE = WorkerPolicy().batch_size


@dataclass
class SlowSmtpSink(SmtpSink):
    """The SMTP sink, optionally slow: with ``delay`` set, messages are accepted one at a
    time, ``delay`` seconds each, so that a worker's batch takes a while to get out."""

    delay: float = 0.0
    _serial: asyncio.Lock | None = field(default=None, repr=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay <= 0:
            return await super().handle_DATA(server, session, envelope)
        if self._serial is None:
            self._serial = asyncio.Lock()
        async with self._serial:
            await asyncio.sleep(self.delay)
            return await super().handle_DATA(server, session, envelope)

    def resets(self, addresses: list[str]) -> Counter[str]:
        """How many reset-code messages each of ``addresses`` received."""
        wanted = set(addresses)
        with self._lock:
            return Counter(
                to
                for message in self.messages
                if message.message["Subject"] == RESET_SUBJECT
                for to in message.recipients
                if to in wanted
            )


@dataclass
class Deployment:
    web: list[str]
    database_url: str
    sink: SlowSmtpSink
    processes: ProcessSet
    workers_started: int = 0
    live_workers: list[str] = field(default_factory=list)

    def start_worker(self) -> str:
        """Start ``resetflow worker`` and wait until it listens for new jobs (so that it
        is past start-up, its SIGTERM handler in place)."""
        self.workers_started += 1
        name = f"worker-{self.workers_started}"
        self.processes.start(name, "worker")
        self.live_workers.append(name)
        self.wait_listeners()
        return name

    def stop_worker(self, name: str) -> None:
        """SIGTERM: the worker finishes what it holds and exits cleanly."""
        self.live_workers.remove(name)
        assert self.processes.stop(name) == 0, self.processes.log(name)

    def stop_workers(self) -> None:
        """Whatever workers still run (clean-up after a failure: no checks)."""
        while self.live_workers:
            self.processes.stop(self.live_workers.pop())

    def kill_worker(self, name: str) -> None:
        self.live_workers.remove(name)
        self.processes.kill(name)

    def wait_listeners(self, *, timeout: float = 30) -> None:
        """Until every running worker holds its LISTEN connection, and no dead one does."""
        expected = len(self.live_workers)
        deadline = time.monotonic() + timeout
        listening = -1
        while time.monotonic() < deadline:
            for name in self.live_workers:
                assert self.processes.alive(name), self.processes.log(name)
            listening = run(self._count_listeners())
            if listening == expected:
                return
            time.sleep(0.1)
        raise AssertionError(f"{listening} worker(s) listening, expected {expected}")

    async def _count_listeners(self) -> int:
        conn = await asyncpg.connect(_asyncpg_dsn(self.database_url))
        try:
            count = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND query LIKE 'LISTEN %resetflow_outbox%'"
            )
        finally:
            await conn.close()
        return int(count)

    def create_users(self, emails: list[str], *, first_phone: int) -> None:
        """Accounts with both contacts verified, written straight to the database (one
        Argon2id hash of PASSWORD for all: hashing hundreds would take seconds)."""

        async def insert() -> None:
            password_hash = await PasswordHasher().hash(PASSWORD)
            database = Database(self.database_url)
            now = datetime.now(UTC)
            try:
                async with database.write() as conn:
                    repo = UserRepository(conn)
                    for number, email in enumerate(emails, start=first_phone):
                        user_id = secrets.token_hex(16)
                        await repo.insert(
                            user_id=user_id,
                            name=f"User {number}",
                            email=email,
                            phone=f"+1415555{number:04d}",
                            password_hash=password_hash,
                            preference=Channel.EMAIL,
                            locale="en",
                            now=now,
                        )
                        await repo.mark_verified(user_id, Channel.EMAIL, now=now)
                        await repo.mark_verified(user_id, Channel.SMS, now=now)
            finally:
                await database.close()

        run(insert())

    def request_resets(self, emails: list[str]) -> list[int]:
        """``POST /send-token`` for each address, alternating between the web processes,
        from a pool of threads; returns the status codes in order."""

        def one(index: int) -> int:
            url = f"{self.web[index % len(self.web)]}/send-token"
            return httpx.post(url, json={"email": emails[index]}, timeout=30).status_code

        with ThreadPoolExecutor(max_workers=16) as pool:
            return list(pool.map(one, range(len(emails))))

    def wait_all_received(self, emails: list[str], *, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.sink.resets(emails)) == len(emails):
                return
            time.sleep(0.1)
        missing = sorted(set(emails) - set(self.sink.resets(emails)))
        raise AssertionError(
            f"{len(missing)} of {len(emails)} never got their code, e.g. {missing[:5]}; "
            f"outbox: {self.job_statuses(emails)}"
        )

    def wait_outbox_settled(self, *, timeout: float = 30) -> None:
        """Until no job is queued or being sent (so that no late duplicate can follow)."""
        deadline = time.monotonic() + timeout
        pending = -1
        while time.monotonic() < deadline:
            pending = run(self._count_pending())
            if pending == 0:
                return
            time.sleep(0.1)
        raise AssertionError(f"{pending} job(s) still pending after {timeout} s")

    async def _count_pending(self) -> int:
        database = Database(self.database_url)
        try:
            async with database.read() as conn:
                return await DeliveryRepository(conn).count_pending()
        finally:
            await database.close()

    def job_statuses(self, emails: list[str]) -> Counter[str]:
        """Statuses of the reset-code jobs of these accounts."""

        async def read() -> Counter[str]:
            database = Database(self.database_url)
            try:
                async with database.read() as conn:
                    rows = await conn.execute(
                        select(delivery_jobs.c.status)
                        .join(users, users.c.id == delivery_jobs.c.user_id)
                        .where(users.c.email.in_(emails))
                        .where(delivery_jobs.c.notification == "password-reset-token")
                    )
                    return Counter(row[0] for row in rows)
            finally:
                await database.close()

        result: Counter[str] = run(read())
        return result

    def held_by(self, pid: int) -> list[str]:
        """Emails of the accounts whose jobs a (dead) worker process still holds leased."""

        async def read() -> list[str]:
            database = Database(self.database_url)
            try:
                async with database.read() as conn:
                    rows = await conn.execute(
                        select(users.c.email)
                        .join(delivery_jobs, users.c.id == delivery_jobs.c.user_id)
                        .where(delivery_jobs.c.status == "sending")
                        .where(delivery_jobs.c.lease_owner.like(f"%:{pid}:%"))
                    )
                    return [row[0] for row in rows]
            finally:
                await database.close()

        result: list[str] = run(read())
        return result


@pytest.fixture(scope="module")
def deployment(
    postgres_server: str, redis_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """Two web processes on a fresh database, Redis prefix and SMTP sink (module-wide:
    starting them is the slow part); each test starts the workers it needs."""
    tmp = tmp_path_factory.mktemp("multiprocess")
    name = f"resetflow_test_{secrets.token_hex(6)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(_asyncpg_dsn(postgres_server))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    run(admin(f'CREATE DATABASE "{name}"'))
    database_url = postgres_server.rsplit("/", 1)[0] + f"/{name}"
    sink = SlowSmtpSink()
    smtp_port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    ports = [free_port(), free_port()]
    processes = ProcessSet(
        logs=tmp / "logs",
        env={
            "RESETFLOW_DATABASE_URL": database_url,
            "RESETFLOW_REDIS_URL": redis_server,
            "RESETFLOW_REDIS_PREFIX": f"resetflow-mp-{secrets.token_hex(6)}",
            "RESETFLOW_INPROCESS_WORKER": "false",
            "RESETFLOW_EMAIL_PROVIDER": "smtp",
            "RESETFLOW_SMTP_HOST": "127.0.0.1",
            "RESETFLOW_SMTP_PORT": str(smtp_port),
            "RESETFLOW_SECRET_KEY": secrets.token_urlsafe(36),  # 48 characters
            "RESETFLOW_DATA_DIR": str(tmp / "data"),
            "RESETFLOW_BASE_URL": f"http://127.0.0.1:{ports[0]}",
            "RESETFLOW_LIMIT_IP": "100000/minute",
            "RESETFLOW_LIMIT_DESTINATION": "1000/minute",
            # The default (600/s over all processes) is not what these tests measure.
            "RESETFLOW_LIMIT_GLOBAL": "100000/second",
            "RESETFLOW_DELIVERY_LEASE_SECONDS": "5",
            "RESETFLOW_WORKER_POLL_SECONDS": "0.2",
            # Shared by every process, as on one host in production (docs/deployment.md).
            "RESETFLOW_METRICS_DIR": str(tmp / "metrics"),
        },
    )
    try:
        with processes.logs_on_failure():
            processes.run("migrate", "migrate")
            for number, port in enumerate(ports, start=1):
                processes.start(f"web-{number}", "serve", "--port", str(port))
            web = [f"http://127.0.0.1:{port}" for port in ports]
            for number, url in enumerate(web, start=1):
                processes.wait_ready(f"web-{number}", f"{url}/readyz")
        yield Deployment(web=web, database_url=database_url, sink=sink, processes=processes)
    finally:
        processes.stop_all()
        controller.stop()
        run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    """A line in pytest's own output (not captured), for figures worth seeing on success."""
    with capsys.disabled():
        print(f"\n[multiprocess] {text}")


def test_200_resets_over_two_web_processes_and_two_workers_are_each_sent_once(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    processes = deployment.processes
    emails = [f"burst{number:03d}@example.com" for number in range(200)]
    with processes.logs_on_failure():
        deployment.create_users(emails, first_phone=0)
        workers = [deployment.start_worker(), deployment.start_worker()]
        try:
            started = time.monotonic()
            statuses = deployment.request_resets(emails)
            answered = time.monotonic() - started
            assert Counter(statuses) == {202: 200}
            deployment.wait_all_received(emails, timeout=60)
            delivered = time.monotonic() - started
            deployment.wait_outbox_settled()
            counts = deployment.sink.resets(emails)
            duplicates = {email: count - 1 for email, count in counts.items() if count > 1}
            sent_by = {
                worker: sum(
                    1
                    for entry in processes.events(worker, "delivery_sent")
                    if entry.get("notification") == "password-reset-token"
                )
                for worker in workers
            }
            _report(
                capsys,
                f"200 resets: answered in {answered:.1f} s, all delivered after "
                f"{delivered:.1f} s, sent per worker {sent_by}, duplicates {len(duplicates)}",
            )
            assert duplicates == {}
            assert set(counts) == set(emails)
            assert deployment.job_statuses(emails) == {"sent": 200}
            for worker in workers:
                deployment.stop_worker(worker)
        finally:
            deployment.stop_workers()


def test_either_web_process_reports_the_deliveries_of_the_separate_workers(
    deployment: Deployment,
) -> None:
    emails = [f"counted{number:03d}@example.com" for number in range(30)]
    processes = deployment.processes

    def totals(url: str) -> tuple[float, float]:
        """(reset codes issued, messages sent over SMTP), as this web process reports."""
        text = httpx.get(f"{url}/metrics", timeout=10).text
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

        def total(name: str, **labels: str) -> float:
            return sum(
                s.value
                for s in samples
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
            )

        return (
            total("resetflow_codes_issued_total", purpose="reset"),
            total("resetflow_deliveries_total", provider="smtp", status="sent"),
        )

    with processes.logs_on_failure():
        deployment.create_users(emails, first_phone=300)
        before = [totals(url) for url in deployment.web]
        assert before[0] == before[1]
        workers = [deployment.start_worker(), deployment.start_worker()]
        try:
            assert Counter(deployment.request_resets(emails)) == {202: 30}
            deployment.wait_all_received(emails)
            deployment.wait_outbox_settled()
            issued, sent = before[0][0] + 30, before[0][1] + 30
            # A worker counts an attempt just after recording it: the last may lag.
            deadline = time.monotonic() + 10
            while totals(deployment.web[0]) != (issued, sent) and time.monotonic() < deadline:
                time.sleep(0.1)
            # The web processes issued the codes and the workers sent them; neither web
            # process sent anything itself, yet both report all of it.
            assert [totals(url) for url in deployment.web] == [(issued, sent)] * 2
            for worker in workers:
                deployment.stop_worker(worker)
        finally:
            deployment.stop_workers()


def test_a_session_and_a_reset_started_on_one_web_process_continue_on_the_other(
    deployment: Deployment,
) -> None:
    web1, web2 = deployment.web
    email = "ada.multi@example.com"
    processes = deployment.processes
    with processes.logs_on_failure():
        deployment.create_users([email], first_phone=500)
        workers = [deployment.start_worker(), deployment.start_worker()]
        try:
            with httpx.Client(timeout=30) as browser:
                signed_in = browser.post(
                    f"{web1}/login", json={"email": email, "password": PASSWORD}
                )
                assert signed_in.status_code == 200, signed_in.text
                account = browser.get(f"{web2}/account", follow_redirects=False)
                assert account.status_code == 200, account.text
                assert email in account.text

                with httpx.Client(timeout=30) as forgetful:
                    asked = forgetful.post(f"{web1}/send-token", json={"email": email})
                    assert asked.status_code == 202, asked.text
                    mail = deployment.sink.wait_for(email, timeout=30)
                    assert [m.message["Subject"] for m in mail] == [RESET_SUBJECT]
                    code = find_code(mail[0].text)
                    verified = forgetful.post(f"{web2}/verify-token", json={"token": code})
                    assert verified.status_code == 200, verified.text
                    reset = forgetful.post(
                        f"{web2}/reset-password",
                        json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
                    )
                    assert reset.status_code == 200, reset.text

                # The reset on web 2 ended the session made on web 1, seen from both.
                for url in (web1, web2):
                    ended = browser.get(f"{url}/account", follow_redirects=False)
                    assert ended.status_code == 303, (url, ended.status_code)

            with httpx.Client(timeout=30) as fresh:
                old = fresh.post(f"{web1}/login", json={"email": email, "password": PASSWORD})
                assert old.status_code == 401
                new = fresh.post(f"{web1}/login", json={"email": email, "password": NEW_PASSWORD})
                assert new.status_code == 200, new.text
            for worker in workers:
                deployment.stop_worker(worker)
        finally:
            deployment.stop_workers()


def test_a_worker_killed_mid_batch_loses_no_message(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    processes = deployment.processes
    sink = deployment.sink
    emails = [f"killed{number:03d}@example.com" for number in range(150)]
    with processes.logs_on_failure():
        deployment.create_users(emails, first_phone=1000)
        # 50 ms per message, one at a time: a claimed batch of 20 takes a second to go out.
        sink.delay = 0.05
        try:
            doomed = deployment.start_worker()
            doomed_pid = processes.pid(doomed)
            statuses = deployment.request_resets(emails)
            assert Counter(statuses) == {202: 150}
            # Killed once the first few messages are out while it holds a good part of a
            # batch (checked just before: it has a second's worth of sending ahead).
            deadline = time.monotonic() + 30
            while sum(sink.resets(emails).values()) < 3 or len(deployment.held_by(doomed_pid)) < 5:
                assert time.monotonic() < deadline, "the first worker never got going"
                assert processes.alive(doomed), processes.log(doomed)
                time.sleep(0.01)
            deployment.kill_worker(doomed)
            received_at_kill = sum(sink.resets(emails).values())
            # What it still held: leased to it, neither sent-and-recorded nor released.
            held = deployment.held_by(doomed_pid)
            assert 0 < len(held) <= BATCH_SIZE, held

            rescuer = deployment.start_worker()  # also waits for the dead one's LISTEN to go
            deployment.wait_all_received(emails, timeout=60)
            deployment.wait_outbox_settled(timeout=30)
            counts = sink.resets(emails)
            duplicates = {email: count - 1 for email, count in counts.items() if count > 1}
            _report(
                capsys,
                f"SIGKILL: {received_at_kill} message(s) in when the worker was killed, "
                f"it held {len(held)} job(s); duplicates afterwards: "
                f"{sum(duplicates.values())} {sorted(duplicates)}",
            )
            assert set(counts) == set(emails)  # no message lost
            assert set(duplicates) <= set(held)  # only a held job can go out twice
            assert all(extra == 1 for extra in duplicates.values())
            assert sum(duplicates.values()) <= BATCH_SIZE
            assert deployment.job_statuses(emails) == {"sent": 150}
            deployment.stop_worker(rescuer)
        finally:
            sink.delay = 0.0
            deployment.stop_workers()
