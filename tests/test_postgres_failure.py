"""When PostgreSQL goes away: 503 with Retry-After and the generic body, never a 500 or a
half-written reset, and recovery by itself once it is back.

The machine's shared PostgreSQL is never touched: the module runs a throw-away cluster of
its own on a free port (``initdb`` as the ``postgres`` OS user when run as root) and stops
it with ``pg_ctl -m immediate`` (as a crash would) and starts it again. Sessions live in
the database here (no Redis), so with the database down every page that needs a session
answers 503 too, while ``/healthz`` keeps answering.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import IN_CI, LiveApp
from tests.support.flow import (
    NEW_PASSWORD,
    PASSWORD,
    dev_mailbox,
    find_code,
    sign_up_verified,
    wait_for_dev_message,
)
from tests.support.servers import free_port

pytestmark = pytest.mark.postgres

PAGES = [
    "/",
    "/new-user",
    "/verify-contact",
    "/login",
    "/forgot-password",
    "/enter-token",
    "/new-password",
    "/account",
    "/dev/outbox",
    "/dev/outbox.json",
]
UNAVAILABLE = {
    "error": "The service is busy. Please try again shortly.",
    "code": "service_unavailable",
}


def _postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian layout), if any."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")

    def version(path: str) -> tuple[int, ...]:
        number = Path(path).parent.parent.name
        return tuple(int(part) for part in number.split(".") if part.isdigit())

    return Path(max(found, key=version)).parent if found else None


def _unusable(reason: str) -> None:
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


class OwnPostgres:
    """A PostgreSQL cluster in a temporary directory, on 127.0.0.1:``port`` only."""

    def __init__(self, bindir: Path, root: Path, *, as_user: str | None) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self._prefix = ["runuser", "-u", as_user, "--"] if as_user else []

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            [*self._prefix, str(self.bindir / tool), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"{tool} {' '.join(args)}: {done.stdout}{done.stderr}"

    def init(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        # -l: the server's output goes to a file, not to our pipes (which would then
        # never close).
        log = str(self.root / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self) -> None:
        """Like a crash: no checkpoint, every connection cut."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    bindir = _postgres_bin()
    if bindir is None:
        _unusable("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb)")
    assert bindir is not None
    as_user: str | None = None
    if os.geteuid() == 0:
        # initdb refuses to run as root.
        if shutil.which("runuser") is None:
            _unusable("running as root and runuser is missing: cannot run initdb")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _unusable("running as root and there is no postgres OS user to run initdb as")
            raise
        as_user = "postgres"
    # Not under pytest's tmp_path: its parents are private to root.
    root = Path(tempfile.mkdtemp(prefix="resetflow-pg-", dir="/tmp"))
    if as_user is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    server = OwnPostgres(bindir, root, as_user=as_user)
    try:
        server.init()
        server.start()
        yield server
    finally:
        if server.running():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database(own_postgres: OwnPostgres) -> str:
    """A fresh database on the module's own server (started, if a test left it down)."""
    if not own_postgres.running():
        own_postgres.start()
    name = f"failure_{os.urandom(4).hex()}"

    async def create() -> None:
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{own_postgres.port}/")
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return own_postgres.url.rsplit("/", 1)[0] + f"/{name}"


def _assert_unavailable(answer: httpx.Response, what: str) -> None:
    assert answer.status_code == 503, (what, answer.status_code, answer.text)
    assert answer.json() == UNAVAILABLE, what
    assert int(answer.headers["retry-after"]) > 0, what


def _wait_ready(client: httpx.Client, *, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ready = client.get("/readyz")
        if ready.status_code == 200:
            return
        assert time.monotonic() < deadline, f"not ready again: {ready.text}"
        time.sleep(0.1)


def _newest_message_id(client: httpx.Client) -> int:
    return max((message["id"] for message in dev_mailbox(client)), default=0)


def _full_reset(client: httpx.Client, *, email: str, new_password: str) -> None:
    after = _newest_message_id(client)
    assert client.post("/send-token", json={"email": email}).status_code == 202
    message = wait_for_dev_message(
        client, to=email, notification="password-reset-token", after=after
    )
    verified = client.post("/verify-token", json={"token": find_code(message["text"])})
    assert verified.status_code == 200, verified.text
    done = client.post(
        "/reset-password", json={"newPassword": new_password, "newPasswordConfirm": new_password}
    )
    assert done.status_code == 200, done.text


def _signs_in(app: LiveApp, email: str, password: str) -> bool:
    with app.client() as client:
        answer = client.post("/login", json={"email": email, "password": password})
    assert answer.status_code in (200, 401), answer.text
    return answer.status_code == 200


def test_postgresql_down_gives_503_never_500_and_the_service_recovers_by_itself(
    live_app: Callable[..., LiveApp], own_postgres: OwnPostgres, database: str
) -> None:
    app = live_app(database_url=database, redis_url=None)
    email = "ada@example.com"
    with app.client() as client, app.client() as newcomer:
        sign_up_verified(client, email=email)
        assert client.post("/send-token", json={"email": email}).status_code == 202
        code = find_code(
            wait_for_dev_message(client, to=email, notification="password-reset-token")["text"]
        )
        assert client.get("/readyz").status_code == 200

        own_postgres.stop()
        try:
            # With a session (the store is the database) and without one (the action
            # itself reaches the database): the same clean 503 each time.
            for who, browser, path, body in [
                ("session", client, "/send-token", {"email": email}),
                ("session", client, "/verify-token", {"token": code}),
                ("session", client, "/login", {"email": email, "password": PASSWORD}),
                ("newcomer", newcomer, "/send-token", {"email": email}),
                ("newcomer", newcomer, "/login", {"email": email, "password": PASSWORD}),
            ]:
                _assert_unavailable(browser.post(path, json=body), f"{who} {path}")
            # Every page: a 503 where it needs the database, never a 500.
            for browser in (client, newcomer):
                for path in PAGES:
                    page = browser.get(path, follow_redirects=False)
                    assert page.status_code < 500 or page.status_code == 503, (path, page.text)
                    if page.status_code == 503:
                        assert int(page.headers["retry-after"]) > 0, path
                    if browser is client:  # its session is in the database
                        assert page.status_code == 503, path
            # Sessionless, like the probes: still answers, without the outbox figures.
            assert client.get("/metrics").status_code == 200
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["database"] == "down"
            assert client.get("/healthz").status_code == 200
        finally:
            own_postgres.start()

        # Back, with nothing restarted on our side: the pool finds its dead connections.
        _wait_ready(client)
        # The code sent before the outage was not consumed by the failed attempt.
        assert client.post("/verify-token", json={"token": code}).status_code == 200
        _full_reset(newcomer, email=email, new_password=NEW_PASSWORD)
    assert _signs_in(app, email, NEW_PASSWORD)
    assert not _signs_in(app, email, PASSWORD)


def test_postgresql_down_between_code_and_new_password_leaves_no_half_written_reset(
    live_app: Callable[..., LiveApp], own_postgres: OwnPostgres, database: str
) -> None:
    app = live_app(database_url=database, redis_url=None)
    email = "grace@example.com"
    new_password = {"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD}
    with app.client() as client:
        sign_up_verified(client, name="Grace Hopper", email=email, phone="+14155550111")
        assert client.post("/send-token", json={"email": email}).status_code == 202
        code = find_code(
            wait_for_dev_message(client, to=email, notification="password-reset-token")["text"]
        )
        assert client.post("/verify-token", json={"token": code}).status_code == 200

        own_postgres.stop()
        try:
            _assert_unavailable(client.post("/reset-password", json=new_password), "reset")
        finally:
            own_postgres.start()
        _wait_ready(client)

        # Nothing of the reset happened: the old password is the one that works...
        assert _signs_in(app, email, PASSWORD)
        assert not _signs_in(app, email, NEW_PASSWORD)
        # ...and the grant (kept in the session, in the database) is still good, once.
        assert client.post("/reset-password", json=new_password).status_code == 200
        other = "yet another passphrase, never set"
        again = client.post(
            "/reset-password", json={"newPassword": other, "newPasswordConfirm": other}
        )
        assert again.status_code == 403, again.text
    assert _signs_in(app, email, NEW_PASSWORD)
    assert not _signs_in(app, email, PASSWORD)


def test_a_database_failure_right_after_the_new_password_is_written_still_ends_every_session(
    live_app: Callable[..., LiveApp], own_postgres: OwnPostgres, database: str
) -> None:
    """The worst moment for the database to fail: the new password is committed, the
    account's sessions not yet ended (a separate step). Injected exactly there with a
    trigger that refuses to delete the account's sessions. Whatever the answer, the
    account must end up consistent: exactly one password works, and if it is the new
    one, no session from before the reset survives (R27)."""
    app = live_app(database_url=database, redis_url=None)
    email = "grace@example.com"
    new_password = {"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD}
    with app.client() as client, app.client() as other_device:
        sign_up_verified(client, name="Grace Hopper", email=email, phone="+14155550111")
        signed_in = other_device.post("/login", json={"email": email, "password": PASSWORD})
        assert signed_in.status_code == 200
        assert other_device.get("/account", follow_redirects=False).status_code == 200
        assert client.post("/send-token", json={"email": email}).status_code == 202
        code = find_code(
            wait_for_dev_message(client, to=email, notification="password-reset-token")["text"]
        )
        assert client.post("/verify-token", json={"token": code}).status_code == 200

        dsn = database.replace("postgresql+asyncpg://", "postgresql://", 1)

        async def refuse_ending_sessions(refuse: bool) -> None:
            conn = await asyncpg.connect(dsn)
            try:
                if not refuse:
                    await conn.execute("DROP TRIGGER IF EXISTS outage ON sessions")
                    return
                user_id = await conn.fetchval("SELECT id FROM users WHERE email = $1", email)
                await conn.execute(
                    "CREATE FUNCTION outage() RETURNS trigger LANGUAGE plpgsql AS"
                    " $$ BEGIN RAISE EXCEPTION 'simulated outage'; END $$"
                )
                await conn.execute(
                    "CREATE TRIGGER outage BEFORE DELETE ON sessions FOR EACH ROW"
                    f" WHEN (OLD.user_id = '{user_id}') EXECUTE FUNCTION outage()"
                )
            finally:
                await conn.close()

        asyncio.run(refuse_ending_sessions(True))
        try:
            answer = client.post("/reset-password", json=new_password)
        finally:
            asyncio.run(refuse_ending_sessions(False))
        assert answer.status_code in (200, 503), answer.text
        if answer.status_code == 503:
            assert answer.json() == UNAVAILABLE

        old_works = _signs_in(app, email, PASSWORD)
        new_works = _signs_in(app, email, NEW_PASSWORD)
        assert old_works != new_works, (old_works, new_works)
        if new_works:
            ended = other_device.get("/account", follow_redirects=False)
            retry = client.post("/reset-password", json=new_password)
            assert ended.status_code == 303, (
                f"the password was changed (the answer was {answer.status_code}, a retry "
                f"gets {retry.status_code}) but a session signed in before the reset is "
                "still alive"
            )
