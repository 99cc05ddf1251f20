"""Prometheus metrics: one :class:`Metrics` (and so one registry) per app instance.

Built by :func:`resetflow.services.build_services`, never at import time, so that many
apps in one process (the tests) never share or double-register a series. Exposed as
Prometheus text at ``GET /metrics`` (see :mod:`resetflow.web.metrics`).

Several processes (``resetflow serve --workers N``, ``resetflow worker``) each count what
they do. With a shared directory (``RESETFLOW_METRICS_DIR``; ``serve --workers N`` makes
one of its own), every process keeps its values there (prometheus_client's multiprocess
mode, one memory-mapped file per process and metric type) and ``/metrics`` of any of them
answers the sum over all: the deliveries of separate worker processes included, and the
same totals whichever web process takes the scrape. Without one, a process answers its own
values, as one process should.

This module imports nothing of resetflow, so that any service may take a :class:`Metrics`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

#: The code purposes counted by name (``recovery.codes``: ``RESET``, ``verify_purpose``).
PURPOSES = ("reset", "verify-email", "verify-sms", "change-email", "change-sms")
CHANNELS = frozenset({"email", "sms"})
#: Statuses of one delivery attempt, as written to the delivery log by the worker.
DELIVERY_STATUSES = frozenset({"sent", "retry", "failed"})
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The ``route`` label of a request that matched no route (404, early refusals).
UNMATCHED = "unmatched"
#: The gauges read from the database when scraped (web/metrics.py), by family name.
OUTBOX_GAUGES = frozenset({"resetflow_outbox_depth", "resetflow_outbox_oldest_queued_age_seconds"})
#: Any value outside a label's known set is counted under this one.
OTHER = "other"
# At most this many label sets kept looked up (routes x methods x statuses stay far below;
# a method spelled in many ways, all counted as "other", must not grow the cache).
SERIES_CACHE_LIMIT = 4096
_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")


class Metrics:
    """resetflow's metrics, in a registry of their own.

    ``resetflow_http_requests_total{route, method, status}`` (counter)
        HTTP requests answered. ``route`` is the matched route's template (``/send-token``,
        ``/static`` for static files), never the raw URL, or ``"unmatched"``; ``method`` is
        the HTTP method (``"other"`` for unusual ones); ``status`` the answer's status code.
    ``resetflow_http_request_duration_seconds{route}`` (histogram)
        Time from receiving a request until its answer was sent, by route as above.
    ``resetflow_codes_issued_total{purpose}`` (counter)
        One-time codes issued (``reset``, ``verify-email``, ``verify-sms``).
    ``resetflow_codes_accepted_total{purpose}`` (counter)
        Codes submitted and accepted.
    ``resetflow_codes_rejected_total{purpose}`` (counter)
        Code submissions refused (wrong, expired, used, too many tries, paused).
    ``resetflow_deliveries_total{channel, provider, status}`` (counter)
        Delivery attempts written to the delivery log: one per provider tried, with
        ``status`` ``sent``, ``retry`` (failed, may succeed later) or ``failed`` (failed
        for good on that provider).
    ``resetflow_outbox_depth`` (gauge)
        Outbox jobs not finished yet (queued or sending), read from the database when
        scraped; NaN when the database could not be read.
    ``resetflow_outbox_oldest_queued_age_seconds`` (gauge)
        Age of the oldest queued job (since it was written), 0 when none is queued; read
        when scraped, NaN when the database could not be read.

    Label values are only route templates, HTTP methods and status codes, purposes,
    channels, provider names and attempt statuses, each from a small fixed set (anything
    else becomes ``"other"``). They never contain codes, passwords, session ids, emails,
    phone numbers or any other value sent by a client.
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(
        self, *, registry: CollectorRegistry | None = None, shared_directory: Path | None = None
    ) -> None:
        """``shared_directory``: keep the values there, shared with the other resetflow
        processes that use it (the module's docstring). It holds for the whole process:
        a second ``Metrics`` of the process must name the same directory, or none."""
        self._shared = _share_values_in(shared_directory) if shared_directory else None
        self.registry = registry if registry is not None else CollectorRegistry()
        self._requests = Counter(
            "resetflow_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "resetflow_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["route"],
            registry=self.registry,
        )
        self._issued = Counter(
            "resetflow_codes_issued",
            "One-time codes issued, by purpose.",
            ["purpose"],
            registry=self.registry,
        )
        self._accepted = Counter(
            "resetflow_codes_accepted",
            "One-time codes accepted, by purpose.",
            ["purpose"],
            registry=self.registry,
        )
        self._rejected = Counter(
            "resetflow_codes_rejected",
            "One-time code submissions refused, by purpose.",
            ["purpose"],
            registry=self.registry,
        )
        self._deliveries = Counter(
            "resetflow_deliveries",
            "Delivery attempts, by channel, provider and status (sent, retry, failed).",
            ["channel", "provider", "status"],
            registry=self.registry,
        )
        self._outbox_depth = Gauge(
            "resetflow_outbox_depth",
            "Outbox jobs queued or sending, read when scraped.",
            registry=self.registry,
            # Read from the database by whichever process is scraped: its latest is right.
            multiprocess_mode="mostrecent",
        )
        self._outbox_oldest = Gauge(
            "resetflow_outbox_oldest_queued_age_seconds",
            "Age in seconds of the oldest queued outbox job (0 when none), read when scraped.",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        # observe_request's series by its arguments (route, method, status) and route.
        self._request_series: dict[tuple[str, str, int], Counter] = {}
        self._latency_series: dict[str, Histogram] = {}
        # Known purposes start at 0, so rates work before the first code. Their series
        # are looked up once here, not per code: labels() costs more than the increment.
        self._by_purpose = {
            counter: {purpose: counter.labels(purpose=purpose) for purpose in PURPOSES}
            for counter in (self._issued, self._accepted, self._rejected)
        }

    # HTTP --------------------------------------------------------------------------

    def observe_request(self, *, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request; ``route`` must be a route template or UNMATCHED."""
        # The labelled series, looked up once per label set: labels() checks and joins
        # its arguments on every call, which cost more than the increment itself.
        counted = self._request_series.get((route, method, status))
        if counted is None:
            upper = method.upper()
            counted = self._requests.labels(
                route=route,
                method=upper if upper in METHODS else OTHER,
                status=str(status) if 100 <= status <= 599 else OTHER,
            )
            if len(self._request_series) < SERIES_CACHE_LIMIT:
                self._request_series[(route, method, status)] = counted
        timed = self._latency_series.get(route)
        if timed is None:
            timed = self._latency.labels(route=route)
            if len(self._latency_series) < SERIES_CACHE_LIMIT:
                self._latency_series[route] = timed
        counted.inc()
        timed.observe(seconds)

    # One-time codes ----------------------------------------------------------------

    def code_issued(self, purpose: str) -> None:
        self._count_code(self._issued, purpose)

    def code_accepted(self, purpose: str) -> None:
        self._count_code(self._accepted, purpose)

    def code_rejected(self, purpose: str) -> None:
        self._count_code(self._rejected, purpose)

    def _count_code(self, counter: Counter, purpose: str) -> None:
        series = self._by_purpose[counter].get(purpose)
        (series if series is not None else counter.labels(purpose=OTHER)).inc()

    # Delivery ----------------------------------------------------------------------

    def delivery_attempt(self, *, channel: str, provider: str, status: str) -> None:
        self._deliveries.labels(
            channel=channel if channel in CHANNELS else OTHER,
            provider=provider if _PROVIDER_NAME.fullmatch(provider) else OTHER,
            status=status if status in DELIVERY_STATUSES else OTHER,
        ).inc()

    def set_outbox(self, *, depth: float, oldest_queued_age_seconds: float) -> None:
        """Record the outbox state read just before a scrape (NaN: could not be read)."""
        self._outbox_depth.set(depth)
        self._outbox_oldest.set(oldest_queued_age_seconds)

    # Exposition --------------------------------------------------------------------

    def render_own(self) -> bytes:
        """This process's own values, without the outbox gauges (only a process that
        reads the database when scraped has them): a worker's ``--metrics-port``."""
        own = CollectorRegistry(auto_describe=False)
        own.register(_Families(self.registry, leave_out=OUTBOX_GAUGES))
        return generate_latest(own)

    def render(self) -> bytes:
        """Every metric in the Prometheus text format: this registry's values, or with a
        shared directory the sums over every process that keeps its values there."""
        if self._shared is None:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        MultiProcessCollector(combined, path=str(self._shared))  # type: ignore[no-untyped-call]
        return generate_latest(combined)


class _Families(Collector):
    """The metric families of ``registry``, but those named in ``leave_out``."""

    def __init__(self, registry: CollectorRegistry, *, leave_out: frozenset[str]) -> None:
        self._registry = registry
        self._leave_out = leave_out

    def collect(self) -> Iterable[Metric]:
        return [f for f in self._registry.collect() if f.name not in self._leave_out]


def _share_values_in(directory: Path) -> Path:
    """Switch this process's metric values to memory-mapped files in ``directory``.

    prometheus_client decides where values live per process (``values.ValueClass``, and
    the directory from ``PROMETHEUS_MULTIPROC_DIR``), so this is process-wide; metrics
    created afterwards use it. Files of earlier processes are kept: their counts stay in
    the sums, so that the totals never go down when a process is replaced.
    """
    directory = directory.resolve()
    current = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if getattr(values.ValueClass, "_multiprocess", False):
        if current != str(directory):
            raise RuntimeError(f"metrics are shared in {current} already, not {directory}")
        return directory
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    return directory
