"""``make bench-peers``: resetflow's ``POST /send-token`` against the forgot-password
endpoints of Django and fastapi-users on one machine with one harness (issue 15).

For each user count (``--users``, default 1k and 100k; ``--million`` adds 1M) it makes
the same N users (one Argon2id or the peer's own default hash, a verified address) in a
fresh store for every peer, then runs the peers interleaved — A, B, C, …, then again for
``--repetitions`` (default 2) — each with 2 server processes, an SMTP sink of ours (the
tests' aiosmtpd server) receiving their mails, and wrk (2 threads, 32 connections):

1. ``GET /healthz`` for ``--duration`` s: the server's ceiling through its own stack;
2. the forgot-password endpoint for ``--duration`` s, half known, half unknown addresses
   from one shared list, no cookies: req/s, p50/p99, CPU per request (server + worker,
   psutil), mails delivered to known addresses (and none to unknown ones);
3. ``--latency-pairs`` known and unknown requests one at a time: known/unknown median.

The bare FastAPI app (one ``/healthz`` route, ``resetflow serve``'s uvicorn settings)
runs in the same rotation for the thin-edge comparison. Medians over the repetitions,
ratios to resetflow on PostgreSQL + Redis; a markdown table on stdout and ``--json``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import wrk
from bench.common import BenchError, failed, hard_timeout, no_timeout_during_cleanup, tail
from bench.load import Spec, server_env
from bench.options import add_load_options, check_load_options
from bench.peers import envs
from bench.procs import (
    Proc,
    busy_cores,
    clean_env,
    cpu_meter,
    resetflow_command,
    run_logged,
    run_migrate,
)
from bench.report import machine
from bench.sink import TimedSink, running_sink
from bench.stores import (
    PgDatabase,
    PgStore,
    SqliteStore,
    hash_password,
    preflight_postgres,
)
from tests.support.servers import free_port

HERE = Path(__file__).resolve().parent
LIST_SAMPLE = 50_000  # known (and as many unknown) addresses in wrk's list, at most


# The peers ------------------------------------------------------------------------------


@dataclass
class Peer:
    """One contender: how to prepare its store, start its processes and call it."""

    key: str
    label: str
    path: str | None  # the forgot-password endpoint; None: /healthz only
    body: str = "json"  # json | form
    status: int = 202
    env_name: str | None = None  # its virtual environment (bench/peers/envs.py)
    store: str = "sqlite"  # sqlite | postgres
    state: dict[str, Any] = field(default_factory=dict)


def all_peers() -> list[Peer]:
    return [
        Peer("resetflow-sqlite", "resetflow, embedded default (SQLite)", "/send-token"),
        Peer("resetflow-pg", "resetflow, PostgreSQL + Redis", "/send-token", store="postgres"),
        Peer(
            "django-pg",
            "Django `PasswordResetView`, PostgreSQL (gunicorn, 2 sync workers)",
            "/forgot-password",
            body="form",
            status=302,
            env_name="django",
            store="postgres",
        ),
        Peer(
            "django-sqlite",
            "Django, SQLite",
            "/forgot-password",
            body="form",
            status=302,
            env_name="django",
        ),
        Peer(
            "fastapi-users-sqlite",
            "fastapi-users, SQLite (uvicorn, 2 workers)",
            "/auth/forgot-password",
            env_name="fastapi-users",
        ),
        Peer(
            "bare-fastapi", "bare FastAPI app (`/healthz` only, resetflow's uvicorn settings)", None
        ),
    ]


class Run:
    """One user count: the shared addresses, the sink, and every peer's store."""

    def __init__(self, args: argparse.Namespace, users: int, sink: TimedSink, temp: Path) -> None:
        self.args, self.users, self.sink, self.temp = args, users, sink, temp
        rng = random.Random(f"{args.seed}-{users}")  # noqa: S311 (addresses, not secrets)
        self.emails = [f"peer-{rng.getrandbits(64):016x}@example.com" for _ in range(users)]
        self.ids = [f"{rng.getrandbits(128):032x}" for _ in range(users)]
        known = rng.sample(self.emails, min(users, LIST_SAMPLE))
        unknown = [f"peer-{rng.getrandbits(64):016x}@example.com" for _ in known]
        self.known, self.unknown = set(known), set(unknown)
        self.listing = wrk.write_list(temp / "addresses.txt", known, unknown, rng)
        self.emails_file = temp / "emails.txt"
        self.emails_file.write_text("\n".join(self.emails) + "\n")
        self.latency_pairs = [
            (rng.choice(known), unknown[i % len(unknown)]) for i in range(args.latency_pairs)
        ]

    # Preparing ---------------------------------------------------------------------------

    def prepare(self, peer: Peer, password_hash: str) -> None:
        home = self.temp / peer.key
        home.mkdir()
        peer.state = {"home": home}
        if peer.key.startswith("resetflow"):
            self._prepare_resetflow(peer, home, password_hash)
        elif peer.env_name is not None:
            url = self._peer_database(peer, home)
            env = self._peer_env(peer, url)
            done = run_logged(
                [
                    str(envs.python_of(peer.env_name)),
                    str(HERE / f"{_module(peer)}.py"),
                    "setup",
                    str(self.emails_file),
                ],
                env,
                home,
                home / "setup.log",
                timeout=3600,
            )
            if done != 0:
                raise BenchError(f"{peer.key}: set-up failed:\n{tail(home / 'setup.log')}")

    def _prepare_resetflow(self, peer: Peer, home: Path, password_hash: str) -> None:
        data = home / "data"
        data.mkdir()
        store: SqliteStore | PgStore
        if peer.store == "sqlite":
            store = SqliteStore(data)
        else:
            tag = f"{random.getrandbits(48):012x}"
            store = PgStore(
                self.args.database_url, f"resetflow_peers_{tag}", self.args.redis_url, f"peers{tag}"
            )
            store.create()
        peer.state["store"] = store
        spec = Spec(
            store=peer.store,
            users=self.users,
            workers=2,
            delivery="inprocess" if peer.store == "sqlite" else "process",
        )
        env = server_env(spec, data, store, self.sink)
        peer.state["env"] = env
        run_migrate(env, home, home / "migrate.log")
        store.insert_users(self.ids, self.emails, password_hash)

    def _peer_database(self, peer: Peer, home: Path) -> str:
        if peer.store == "postgres":
            tag = f"{random.getrandbits(48):012x}"
            db = PgDatabase(self.args.database_url, f"peers_{peer.key.replace('-', '_')}_{tag}")
            db.create()
            peer.state["pg"] = db
            args = db.connect_args()
            return f"postgresql://{args['user']}@{args['host']}:{args['port']}/{db.name}"
        path = (home / "peer.db").resolve()
        if peer.env_name == "fastapi-users":
            return f"sqlite+aiosqlite:///{path}"
        return f"sqlite:///{path}"

    def _peer_env(self, peer: Peer, url: str) -> dict[str, str]:
        env = {
            "PATH": "/usr/bin:/bin",
            "PEER_DATABASE_URL": url,
            "PEER_SMTP_PORT": str(self.sink.port),
            "PYTHONPATH": str(HERE),
            "PYTHONUNBUFFERED": "1",
        }
        peer.state["env"] = env
        return env

    def cleanup(self, peer: Peer) -> None:
        store = peer.state.get("store")
        if store is not None:
            store.cleanup()
        db = peer.state.get("pg")
        if db is not None:
            try:
                db.drop()
            except Exception as error:
                print(f"bench: could not drop database {db.name}: {error}", file=sys.stderr)

    # Running -----------------------------------------------------------------------------

    def start(self, peer: Peer, port: int) -> list[Proc]:
        home, env = peer.state.get("home", self.temp), peer.state.get("env", {})
        log = home / "server.log"
        bind = ["--host", "127.0.0.1", "--port", str(port)]
        if peer.key.startswith("resetflow"):
            serve = [*resetflow_command(), "serve", *bind, "--workers", "2"]
            procs = [Proc("server", serve, env, home, log)]
            if peer.store == "postgres":
                worker = [*resetflow_command(), "worker"]
                procs.append(Proc("worker", worker, env, home, home / "worker.log"))
        elif peer.key == "bare-fastapi":
            argv = [sys.executable, "-m", "bench.peers.bare_fastapi", *bind, "--workers", "2"]
            procs = [Proc("server", argv, clean_env(), Path.cwd(), self.temp / "bare.log")]
        elif peer.env_name == "django":
            python = envs.python_of("django")
            argv = [
                str(python),
                "-m",
                "gunicorn",
                "--workers",
                "2",
                "--bind",
                f"127.0.0.1:{port}",
                "django_peer:application",
            ]
            procs = [Proc("server", argv, env, home, log)]
        else:
            python = envs.python_of("fastapi-users")
            argv = [
                str(python),
                "-m",
                "uvicorn",
                "fastapi_users_peer:app",
                *bind,
                "--workers",
                "2",
                "--no-access-log",
            ]
            procs = [Proc("server", argv, env, home, log)]
        for proc in procs:
            proc.start()
        return procs

    def one(self, peer: Peer, script: Path) -> dict[str, Any]:
        """Start the peer, measure its ceiling and its endpoint, check its mail, stop it."""
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        procs: list[Proc] = []
        result: dict[str, Any] = {"peer": peer.key}
        try:
            procs = self.start(peer, port)
            procs[0].wait_ready(f"{base}/healthz", seconds=120)
            load = self._load_fn(base, script)
            load(wrk.get_args(), 1)  # warm-up (every worker process)
            restarts_before = restarts(procs[0].log)
            pg = peer.state["pg"].name if "pg" in peer.state else None
            if "store" in peer.state and isinstance(peer.state["store"], PgStore):
                pg = peer.state["store"].db.name
            with cpu_meter(procs, pg) as cpu:
                result["healthz"] = load(wrk.get_args(), self.args.duration)
            result["healthz"].update(cpu)
            if peer.path is None:
                result["restarts"] = restarts(procs[0].log) - restarts_before
                return result
            with httpx.Client(base_url=base, timeout=60) as client:
                if peer.body == "form":
                    peer.state["csrf"] = csrf_token(client, peer)
                warm = sorted(self.known)[:5]
                for address in warm:
                    self._post(client, peer, address)
                self._settle(len(warm), 60, procs)
                self.sink.clear()
                queued_before = codes_queued(peer)
                token, cookie = peer.state.get("csrf", ("", ""))
                lua = wrk.list_args(
                    self.listing,
                    peer.path,
                    peer.body,
                    peer.status,
                    fields=f"&csrfmiddlewaretoken={token}" if token else "",
                    cookie=cookie,
                )
                with cpu_meter(procs, pg) as cpu:
                    result["send"] = load(lua, self.args.duration)
                result["send"].update(cpu)
                for proc in procs:
                    proc.check()
                result["mail"] = self._mail(result["send"], procs, peer, queued_before)
                result["latency"] = self._latency(client, peer)
            result["restarts"] = restarts(procs[0].log) - restarts_before
            return result
        finally:
            for proc in reversed(procs):
                proc.stop()

    def _load_fn(self, base: str, script: Path) -> Callable[[list[str], int], dict[str, Any]]:
        def load(lua: list[str], seconds: int) -> dict[str, Any]:
            return wrk.run(
                base,
                script,
                lua,
                threads=self.args.threads,
                connections=self.args.connections,
                duration=seconds,
            )

        return load

    def _post(self, client: httpx.Client, peer: Peer, address: str) -> float:
        assert peer.path is not None
        client.cookies.clear()
        started = time.perf_counter()
        if peer.body == "form":
            token, cookie = peer.state["csrf"]
            answer = client.post(
                peer.path,
                data={"email": address, "csrfmiddlewaretoken": token},
                headers={"Cookie": cookie},
            )
        else:
            answer = client.post(peer.path, json={"email": address})
        elapsed = time.perf_counter() - started
        if answer.status_code != peer.status:
            raise BenchError(
                f"{peer.key}: {peer.path} answered {answer.status_code}, not {peer.status}: "
                f"{answer.text[:200]}"
            )
        return elapsed

    def _settle(self, at_least: int, seconds: float, procs: list[Proc]) -> int:
        """Wait until the sink has ``at_least`` messages, the peer's processes are idle
        (requests cut off when wrk stopped still run to their end, resetflow delivers
        after answering) and the sink's count has stayed the same for 2 s; for up to
        ``seconds``."""
        deadline = time.monotonic() + seconds
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            idle = busy_cores(procs, 0.5) < 0.05
            count = self.sink.count()
            if count != last or not idle:
                last, since = count, time.monotonic()
            elif count >= at_least and time.monotonic() - since >= 2.0:
                break
        return self.sink.count()

    def _mail(
        self, send: dict[str, Any], procs: list[Proc], peer: Peer, queued_before: int | None
    ) -> dict[str, Any]:
        # Requests still in flight when wrk stopped (at most one per connection) may add
        # theirs, and nothing may go to an unknown address.
        self._settle(
            max(0, send["known_sent"] - self.args.connections), self.args.drain_timeout, procs
        )
        mail: dict[str, Any] = {"known_sent": send["known_sent"]}
        if queued_before is not None:
            # resetflow's own count of the codes it queued in this load (its audit
            # records): the exact number of messages the sink must receive, in-flight
            # requests included, where wrk's count of known requests sent is not.
            queued = codes_queued(peer)
            assert queued is not None
            mail["queued"] = queued - queued_before
            self._settle(mail["queued"], self.args.drain_timeout, procs)
        received = self.sink.received()
        to_known = [m for m in received if m.to in self.known]
        mail.update(
            delivered=len(to_known),
            with_code_or_link=sum(1 for m in to_known if m.code),
            stray=sum(1 for m in received if m.to not in self.known),
        )
        if queued_before is not None:
            # A job sent twice is the same code to the same address twice. (Not for
            # Django: its links for one account within a second are alike by design.)
            mail["duplicates"] = len(to_known) - len({(m.to, m.code) for m in to_known})
        return mail

    def _latency(self, client: httpx.Client, peer: Peer) -> dict[str, Any]:
        known, unknown = [], []
        for known_address, unknown_address in self.latency_pairs:
            known.append(self._post(client, peer, known_address))
            unknown.append(self._post(client, peer, unknown_address))
        if not known:
            return {}
        k, u = statistics.median(known), statistics.median(unknown)
        return {"known_ms": 1000 * k, "unknown_ms": 1000 * u, "ratio": k / u if u else None}


def codes_queued(peer: Peer) -> int | None:
    """How many reset codes resetflow has queued in this peer's store so far (its
    ``code_queued`` audit records); ``None`` for the other peers."""
    store = peer.state.get("store")
    if store is None:
        return None
    rows = store.query(
        "SELECT count(*) FROM audit_events "
        "WHERE event = 'reset_requested' AND outcome = 'code_queued'"
    )
    return int(rows[0][0])


# A web process that died and was started again: uvicorn's supervisor kills one that does
# not answer its health check within 5 s (timeout_worker_healthcheck; a busy machine),
# gunicorn one that misses its --timeout.
RESTART = re.compile(r"Child process \[\d+\] died|WORKER TIMEOUT")


def restarts(log: Path) -> int:
    """How many times a web process died in this log so far."""
    try:
        return len(RESTART.findall(log.read_text(errors="replace")))
    except OSError:
        return 0


CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def csrf_token(client: httpx.Client, peer: Peer) -> tuple[str, str]:
    """What a browser has after loading Django's form: the token of its hidden field and
    the ``csrftoken`` cookie (``PasswordResetView`` is CSRF-protected by Django itself);
    the same pair is sent with every POST."""
    assert peer.path is not None
    page = client.get(peer.path)
    found = CSRF_FIELD.search(page.text)
    cookie = page.cookies.get("csrftoken")
    if page.status_code != 200 or found is None or cookie is None:
        raise BenchError(f"{peer.key}: no CSRF token on GET {peer.path} ({page.status_code})")
    client.cookies.clear()
    return found.group(1), f"csrftoken={cookie}"


def _module(peer: Peer) -> str:
    return "django_peer" if peer.env_name == "django" else "fastapi_users_peer"


# Command line and report ---------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="resetflow /send-token against Django and fastapi-users (issue 15).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    keys = [peer.key for peer in all_peers()]
    add_load_options(parser, users="1000,100000", threads=2)
    parser.add_argument("--million", action="store_true", help="also 1,000,000 users (long)")
    parser.add_argument("--peers", default=",".join(keys), help=f"comma-separated: {keys}")
    parser.add_argument("--repetitions", type=int, default=2, help="rounds of all peers")
    parser.add_argument(
        "--latency-pairs",
        type=int,
        default=20,
        help="known and unknown requests sent one at a time after the load, for the "
        "known/unknown latency ratio",
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=120.0, help="seconds to wait for the mail"
    )
    parser.add_argument(
        "--timeout", type=float, default=4 * 3600.0, help="hard limit for the whole run, s"
    )
    args = parser.parse_args(argv)
    check_load_options(parser, args)
    if args.million and 1_000_000 not in args.users:
        args.users.append(1_000_000)
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if not args.peers or set(args.peers) - set(keys):
        parser.error(f"--peers takes some of {keys}")
    if not 1 <= args.repetitions <= 10:
        parser.error("--repetitions must be between 1 and 10")
    return args


def _queued(cell: dict[str, Any]) -> str:
    """For resetflow: the codes its audit records say it queued, and whether the sink
    received exactly that many."""
    if cell.get("queued") is None:
        return ""
    exact = "every one" if cell["queued"] == cell["delivered"] else "**not** every one"
    twice = cell.get("duplicates") or 0
    again = "none twice" if twice == 0 else f"**{twice} twice**"
    return f" ({cell['queued']:,} codes queued by the server, {exact} delivered, {again})"


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _cpu_ms(run: dict[str, Any]) -> float | None:
    cores = run.get("cpu_cores", {})
    own = cores.get("server", 0.0) + cores.get("worker", 0.0)
    return 1000 * own / run["rps"] if run.get("rps") else None


def summarise(results: list[dict[str, Any]], peers: list[Peer]) -> dict[str, Any]:
    """Medians over the repetitions, by peer and user count."""
    out: dict[str, Any] = {}
    for peer in peers:
        mine = [r for r in results if r["peer"] == peer.key]
        by_users: dict[str, Any] = {}
        for users in sorted({r["users"] for r in mine}):
            runs = [r for r in mine if r["users"] == users and "error" not in r]
            sends = [r["send"] for r in runs if "send" in r]
            by_users[str(users)] = {
                "rps": _median([s["rps"] for s in sends]),
                "p50_ms": _median([s["latency_us"]["p50"] / 1000 for s in sends]),
                "p99_ms": _median([s["latency_us"]["p99"] / 1000 for s in sends]),
                "cpu_ms": _median([_cpu_ms(s) for s in sends]),
                "healthz_rps": _median([r["healthz"]["rps"] for r in runs]),
                "latency_ratio": _median([r.get("latency", {}).get("ratio") for r in runs]),
                "not_expected_status": sum(s["bad"] for s in sends),
                "delivered": sum(r["mail"]["delivered"] for r in runs if "mail" in r),
                "known_sent": sum(r["mail"]["known_sent"] for r in runs if "mail" in r),
                **{
                    key: (
                        sum(r["mail"][key] for r in runs if "mail" in r)
                        if all(key in r["mail"] for r in runs if "mail" in r)
                        else None
                    )
                    for key in ("queued", "duplicates")
                },
                "stray": sum(r["mail"]["stray"] for r in runs if "mail" in r),
                "runs": len(runs),
                "restarts": sum(r.get("restarts", 0) for r in runs),
                "failed_runs": sum(1 for r in mine if r["users"] == users and "error" in r),
            }
        out[peer.key] = {"label": peer.label, "by_users": by_users}
    return out


def _n(users: int) -> str:
    return (
        f"{users // 1_000_000}M"
        if users >= 1_000_000
        else f"{users // 1000}k"
        if users >= 1000
        else str(users)
    )


def table(summary: dict[str, Any], users: list[int]) -> str:
    base = summary.get("resetflow-pg", {}).get("by_users", {})
    head = "| | " + " | ".join(f"{_n(u)} users" for u in users)
    head += " | known/unknown latency | CPU ms/request | `/healthz` req/s |"
    lines = [head, "|---|" + "---:|" * (len(users) + 3)]
    for key, entry in summary.items():
        cells = []
        for u in users:
            cell = entry["by_users"].get(str(u), {})
            rps = cell.get("rps")
            if rps is None:
                cells.append("—")
                continue
            ref = base.get(str(u), {}).get("rps")
            ratio = f" ({rps / ref:.2f}×)" if ref and key != "resetflow-pg" else ""
            cells.append(f"{rps:,.0f}{ratio}")
        first = entry["by_users"].get(str(users[0]), {})
        ratio = first.get("latency_ratio")
        cpu = first.get("cpu_ms")
        health = first.get("healthz_rps")
        lines.append(
            f"| {entry['label']} | "
            + " | ".join(cells)
            + f" | {'—' if ratio is None else f'{ratio:.1f}×'}"
            + f" | {'—' if cpu is None else f'{cpu:.1f}'}"
            + f" | {'—' if health is None else f'{health:,.0f}'} |"
        )
    lines += [
        "",
        "req/s: `/send-token` or the peer's forgot-password endpoint, median of the "
        "repetitions; (n×): against resetflow on PostgreSQL + Redis at the same size. "
        f"Latency ratio, CPU (server + worker processes) and `/healthz` at {_n(users[0])} users.",
    ]
    bare = summary.get("bare-fastapi", {}).get("by_users", {})
    for key in ("resetflow-pg", "resetflow-sqlite"):
        mine = summary.get(key, {}).get("by_users", {})
        for u in users:
            ours, theirs = (
                mine.get(str(u), {}).get("healthz_rps"),
                bare.get(str(u), {}).get("healthz_rps"),
            )
            if ours and theirs:
                lines.append(
                    f"- thin edge, {summary[key]['label']}, {_n(u)} users: `/healthz` "
                    f"{ours:,.0f} req/s = {100 * ours / theirs:.0f} % of the bare FastAPI "
                    f"app's {theirs:,.0f} (target ≥ 80 %)"
                )
    lines.append("")
    for entry in summary.values():
        for u, cell in entry["by_users"].items():
            if cell["known_sent"] or cell["delivered"]:
                lines.append(
                    f"- mail, {entry['label']}, {_n(int(u))} users: {cell['delivered']:,} "
                    f"delivered to known addresses for {cell['known_sent']:,} known requests "
                    f"sent{_queued(cell)}, {cell['stray']} to unknown ones; "
                    f"{cell['not_expected_status']} "
                    f"answers not the expected status; p50/p99 "
                    f"{cell['p50_ms']:.0f}/{cell['p99_ms']:.0f} ms"
                )
            if cell["restarts"]:
                lines.append(
                    f"- **{entry['label']}, {_n(int(u))} users: a web process died and was "
                    f"started again {cell['restarts']} time(s) during the measurements** "
                    "(uvicorn's 5 s worker health check, or gunicorn's timeout, on a busy "
                    "machine): its figures are low"
                )
            if cell["failed_runs"]:
                lines.append(
                    f"- **{entry['label']}, {_n(int(u))} users: {cell['failed_runs']} run(s) "
                    "failed** (see the JSON's results)"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    peers = [p for p in all_peers() if p.key in args.peers]
    status = ["starting"]
    results: list[dict[str, Any]] = []
    versions: dict[str, dict[str, str]] = {}
    temp = Path(tempfile.mkdtemp(prefix="resetflow-peers-"))
    started = time.monotonic()
    try:
        wrk.preflight()
        with hard_timeout(args.timeout), running_sink() as sink:
            if any(p.store == "postgres" for p in peers):
                preflight_postgres(args.database_url, args.redis_url)
            for name in sorted({p.env_name for p in peers if p.env_name}):
                status.append(f"installing {name}")
                envs.ensure(name)
                versions[name] = envs.versions(name)
            script = wrk.write_script(temp)
            password_hash = hash_password()
            for users in args.users:
                home = temp / f"users-{users}"
                home.mkdir()
                run = Run(args, users, sink, home)
                try:
                    for peer in peers:
                        status.append(f"{users:,} users: preparing {peer.key}")
                        began = time.monotonic()
                        run.prepare(peer, password_hash)
                        print(
                            f"bench: {peer.key}: {users:,} users ready "
                            f"({time.monotonic() - began:.0f} s)",
                            file=sys.stderr,
                        )
                    for repetition in range(args.repetitions):
                        for peer in peers:
                            status.append(f"{users:,} users, round {repetition + 1}: {peer.key}")
                            try:
                                result = run.one(peer, script)
                            except BenchError as error:
                                # One peer failing to start or answer is reported; the
                                # rotation goes on.
                                result = {"peer": peer.key, "error": str(error)[-2000:]}
                                print(f"bench: {peer.key}: FAILED: {error}", file=sys.stderr)
                            result.update(users=users, repetition=repetition)
                            results.append(result)
                            if "error" in result:
                                continue
                            send = result.get("send", {})
                            print(
                                f"bench: {peer.key} × {users:,} (round {repetition + 1}): "
                                f"/healthz {result['healthz']['rps']:,.0f} req/s"
                                + (
                                    f", {peer.path} {send['rps']:,.0f} req/s, mail "
                                    f"{result['mail']['delivered']}/{result['mail']['known_sent']}"
                                    if send
                                    else ""
                                ),
                                file=sys.stderr,
                            )
                finally:
                    with no_timeout_during_cleanup():
                        for peer in peers:
                            run.cleanup(peer)
    except (Exception, KeyboardInterrupt) as error:
        return failed(error, status[-1])
    finally:
        if args.keep:
            print(f"bench: kept {temp}", file=sys.stderr)
        else:
            shutil.rmtree(temp, ignore_errors=True)
    info = machine()
    info["peer_versions"] = versions
    info["total_seconds"] = time.monotonic() - started
    summary = summarise(results, peers)
    print(
        f"resetflow against its peers: {info['nproc']} CPUs ({info['cpu']}), {info['wrk']}; "
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
        f"{args.repetitions} round(s), interleaved; resetflow at {info.get('git_head')}; "
        + "; ".join(
            f"{k}: {', '.join(f'{n} {v}' for n, v in vs.items())}" for k, vs in versions.items()
        )
    )
    print()
    print(table(summary, args.users))
    print(f"\n(total {info['total_seconds']:.0f} s)")
    if args.json:
        plain = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(
            json.dumps(
                {"machine": info, "args": plain, "summary": summary, "results": results},
                indent=2,
            )
        )
    return 0
