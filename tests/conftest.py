"""Shared fixtures. Everything runs against real parts on loopback: SQLite files, uvicorn,
aiosmtpd; PostgreSQL and Chromium where the machine has them (required when CI=true)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from resetflow.app import create_app
from resetflow.config import Settings, load_settings
from tests.support.servers import SmtpSink, serve_in_thread, smtp_server

IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No RESETFLOW_* or COURIER_* variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith(("RESETFLOW_", "COURIER_")):
            monkeypatch.delenv(name)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "worker_poll_seconds": 0.2,
            "delivery_backoff_seconds": 0.1,
            "_env_file": None,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpSink, int]]:
    with smtp_server() as server:
        yield server


class LiveApp:
    """A running resetflow: its URL, settings and a JSON client with a cookie jar."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


@pytest.fixture
def live_app(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., LiveApp]]:
    """Start resetflow under uvicorn on a free port; call with settings overrides."""
    started: list[Any] = []

    def start(**overrides: Any) -> LiveApp:
        from tests.support.servers import free_port

        port = free_port()
        overrides.setdefault("base_url", f"http://127.0.0.1:{port}")
        settings = make_settings(**overrides)
        context = serve_in_thread(create_app(settings), port=port)
        url = context.__enter__()
        started.append(context)
        return LiveApp(url, settings)

    yield start
    for context in reversed(started):
        context.__exit__(None, None, None)
