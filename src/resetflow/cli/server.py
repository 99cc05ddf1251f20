"""``serve``, ``migrate`` and ``worker``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from resetflow.cli import heap
from resetflow.cli.metrics_listener import MetricsListener
from resetflow.cli.sockets import ListenError, check_can_listen, display_address
from resetflow.config import Settings, load_settings
from resetflow.logs import configure_logging, logging_config
from resetflow.notify.listener import OutboxListener
from resetflow.notify.worker import GATHER_SECONDS
from resetflow.services import build_services
from resetflow.storage.migrate import upgrade
from resetflow.web.worker_metrics import worker_metrics_app

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("resetflow")

# uvicorn's exit status when it cannot start (a port taken, among others): kept for ours.
STARTUP_FAILURE = 3


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Web processes (each with its own event loop).")
    ] = 1,
) -> None:
    """Run the web service (and, in dev, the in-process delivery worker)."""
    import uvicorn

    from resetflow.app import create_app
    from resetflow.web.nodelay import HTTP_PROTOCOL

    settings = load_settings()
    try:
        check_can_listen(host, port)  # a taken port: one line now, not a log line later
    except ListenError as error:
        typer.echo(f"resetflow: {error}", err=True)
        raise typer.Exit(STARTUP_FAILURE) from None
    if workers > 1 and not settings.redis_url:
        _refuse_or_warn_local_limits(settings, workers)
    if not settings.is_prod:
        upgrade(settings.resolved_database_url)  # once, before any web process starts
    url = f"http://{display_address(host, port)}"
    typer.echo(
        f"resetflow ({settings.env.value}) on {url} with {workers} process(es); "
        f"data: {settings.data_dir}"
    )
    if not settings.is_prod:
        typer.echo(f"dev mailbox: {url}/dev/outbox (messages are also printed here)")
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        # uvicorn's own protocol ("auto": httptools or h11) with TCP_NODELAY on every
        # connection, which uvicorn leaves off with --workers (resetflow/web/nodelay.py).
        "http": HTTP_PROTOCOL,
        # X-Forwarded-* are believed only from RESETFLOW_TRUSTED_PROXIES, by resetflow.
        "proxy_headers": False,
        "server_header": False,
        "log_config": logging_config(),
    }
    if workers == 1:
        app = create_app(settings, migrate=False)
        heap.settle()
        uvicorn.run(app, **options)
        return
    with _shared_metrics(settings):
        # Each process builds its own app (and reads the same settings).
        uvicorn.run(
            "resetflow.cli.server:web_process_app",
            factory=True,
            workers=workers,
            # uvicorn kills and restarts a process that does not answer its supervisor's
            # ping within this (default 5 s), start-up included: on a loaded 2-core
            # machine importing and building the app took ~9 s, so processes were killed
            # over and over (found by the peers benchmark, docs/performance.md).
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
            **options,
        )


# How long a web process of ``serve --workers N`` may take to start or to answer
# uvicorn's liveness ping before uvicorn replaces it.
WORKER_HEALTHCHECK_SECONDS = 60


def _refuse_or_warn_local_limits(settings: Settings, workers: int) -> None:
    """Without Redis, each web process keeps its own rate-limit windows and SMS budget in
    memory: N processes would allow N times every limit (R16). Prod refuses to start; dev
    says so once."""
    if settings.is_prod:
        typer.echo(
            f"resetflow: RESETFLOW_REDIS_URL: required with --workers {workers} in prod "
            "(without it each process counts rate limits and the SMS budget apart)",
            err=True,
        )
        raise typer.Exit(2)
    configure_logging()
    log.warning(
        "limits_per_process",
        extra={
            "workers": workers,
            "reason": "RESETFLOW_REDIS_URL is not set: each process counts rate limits and "
            "the SMS budget apart, so they allow up to workers times as much",
        },
    )


def web_process_app() -> FastAPI:
    """The app of one process of ``serve --workers N`` (uvicorn calls this in each): the
    settings are read again there, the database is already migrated (``serve`` did it)."""
    from resetflow.app import create_app

    app = create_app(migrate=False)
    heap.settle()
    return app


@contextlib.contextmanager
def _shared_metrics(settings: Settings) -> Iterator[None]:
    """The web processes of one ``serve --workers N`` count into one directory, so that
    ``/metrics`` answers the same totals whichever of them takes the scrape: a temporary
    one (gone when ``serve`` ends) unless ``RESETFLOW_METRICS_DIR`` names one."""
    if settings.metrics_dir is not None:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="resetflow-metrics-") as directory:
        os.environ["RESETFLOW_METRICS_DIR"] = directory  # read by each process's settings
        try:
            yield
        finally:
            os.environ.pop("RESETFLOW_METRICS_DIR", None)


def migrate() -> None:
    """Apply database migrations (safe to run again)."""
    settings = load_settings()
    upgrade(settings.resolved_database_url)
    typer.echo("database is up to date")


def worker(
    drain: Annotated[bool, typer.Option("--drain", help="Deliver what is due, then exit.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Serve this worker's /metrics and /healthz on this port (for a host or "
            "container without a web process; RESETFLOW_METRICS_TOKEN as for the web).",
        ),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Interface for --metrics-port.")] = "127.0.0.1",
) -> None:
    """Run a delivery worker: claims outbox jobs and sends them. Stops on SIGTERM/SIGINT."""
    settings = load_settings()
    configure_logging()
    listen = None
    if metrics_port is not None and not drain:
        problem = _metrics_port_problem(settings)
        if problem is not None:
            typer.echo(f"resetflow: --metrics-port: {problem}", err=True)
            raise typer.Exit(2)
        try:
            check_can_listen(metrics_host, metrics_port)
        except ListenError as error:
            typer.echo(f"resetflow: --metrics-port: {error}", err=True)
            raise typer.Exit(STARTUP_FAILURE) from None
        listen = (metrics_host, metrics_port)
    run_on_fastest_loop(_work(settings, drain=drain, metrics_address=listen))


def _metrics_port_problem(settings: Settings) -> str | None:
    if settings.metrics_dir is not None:
        return (
            "RESETFLOW_METRICS_DIR is set, so this host's web processes report this "
            "worker's counts; serving them here too would count them twice"
        )
    if settings.is_prod and settings.metrics_token is None:
        return "set RESETFLOW_METRICS_TOKEN: in prod, metrics are served only behind it"
    return None


def run_on_fastest_loop(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` on uvloop when it is installed (as uvicorn does for ``serve``)."""
    try:
        import uvloop
    except ImportError:  # not on every platform (Windows, PyPy)
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


async def _work(
    settings: Settings, *, drain: bool, metrics_address: tuple[str, int] | None = None
) -> None:
    services = build_services(settings)
    heap.settle()
    metrics_listener = None
    try:
        if metrics_address is not None:
            host, port = metrics_address
            app = worker_metrics_app(metrics=services.metrics, token=settings.metrics_token)
            metrics_listener = MetricsListener(app, host=host, port=port)
            metrics_listener.start()  # before any job: a scrape sees every delivery
        if drain:
            handled = await services.worker.drain()
            typer.echo(f"delivered or settled {handled} job(s)")
            return
        # Under a steady load, let a few jobs gather per claim (notify/worker.py).
        services.worker.delay_after_wake(GATHER_SECONDS)
        loop = asyncio.get_running_loop()
        # SIGTERM: finish the jobs in hand (their leases cover them), claim no more, exit.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, services.worker.stop)
        outbox_listener = None
        if services.database.url.startswith("postgresql"):
            outbox_listener = OutboxListener(
                database_url=services.database.url, outbox=services.outbox
            )
            outbox_listener.start()
        try:
            await services.worker.run()
        finally:
            if outbox_listener is not None:
                await outbox_listener.stop()
    finally:
        if metrics_listener is not None:
            metrics_listener.stop()
        await services.close()
