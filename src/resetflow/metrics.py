"""Prometheus metrics: one :class:`Metrics` (and so one registry) per app instance.

Built by :func:`resetflow.services.build_services`, never at import time, so that many
apps in one process (the tests) never share or double-register a series. Exposed as
Prometheus text at ``GET /metrics`` (see :mod:`resetflow.web.metrics`).

This module imports nothing of resetflow, so that any service may take a :class:`Metrics`.
"""

from __future__ import annotations

import re

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

#: The code purposes counted by name (``recovery.codes``: ``RESET``, ``verify_purpose``).
PURPOSES = ("reset", "verify-email", "verify-sms", "change-email", "change-sms")
CHANNELS = frozenset({"email", "sms"})
#: Statuses of one delivery attempt, as written to the delivery log by the worker.
DELIVERY_STATUSES = frozenset({"sent", "retry", "failed"})
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The ``route`` label of a request that matched no route (404, early refusals).
UNMATCHED = "unmatched"
#: Any value outside a label's known set is counted under this one.
OTHER = "other"
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

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
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
        )
        self._outbox_oldest = Gauge(
            "resetflow_outbox_oldest_queued_age_seconds",
            "Age in seconds of the oldest queued outbox job (0 when none), read when scraped.",
            registry=self.registry,
        )
        # Known purposes start at 0, so rates work before the first code.
        for purpose in PURPOSES:
            for counter in (self._issued, self._accepted, self._rejected):
                counter.labels(purpose=purpose)

    # HTTP --------------------------------------------------------------------------

    def observe_request(self, *, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request; ``route`` must be a route template or UNMATCHED."""
        method = method.upper()
        self._requests.labels(
            route=route,
            method=method if method in METHODS else OTHER,
            status=str(status) if 100 <= status <= 599 else OTHER,
        ).inc()
        self._latency.labels(route=route).observe(seconds)

    # One-time codes ----------------------------------------------------------------

    def code_issued(self, purpose: str) -> None:
        self._issued.labels(purpose=_purpose(purpose)).inc()

    def code_accepted(self, purpose: str) -> None:
        self._accepted.labels(purpose=_purpose(purpose)).inc()

    def code_rejected(self, purpose: str) -> None:
        self._rejected.labels(purpose=_purpose(purpose)).inc()

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

    def render(self) -> bytes:
        """Every metric of this registry in the Prometheus text format."""
        return generate_latest(self.registry)


def _purpose(purpose: str) -> str:
    return purpose if purpose in PURPOSES else OTHER
