"""uvicorn on a thread of its own, for ``resetflow worker --metrics-port``.

A thread, not a task of the worker's event loop: off the main thread uvicorn leaves the
signal handlers alone, so SIGTERM still reaches the worker (which finishes the jobs it
holds), and a slow scrape never delays a delivery.
"""

from __future__ import annotations

import threading
import time

import uvicorn
from starlette.types import ASGIApp


class MetricsListener:
    def __init__(self, app: ASGIApp, *, host: str, port: int) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            access_log=False,
            server_header=False,
            log_config=None,  # the worker's JSON logging, already configured
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, name="resetflow-metrics", daemon=True
        )

    def start(self, *, timeout: float = 10.0) -> None:
        """Listen, or raise ``RuntimeError`` (the port taken meanwhile, among others)."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the metrics listener did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
