"""Operators' pages (read-only): ``GET /admin/deliveries``, the delivery log.

Only a signed-in account with the ``admin`` role (``resetflow users grant-admin``) sees
them. Everyone else, signed in or not, gets the same ``404`` as a path that does not
exist: the page does not tell anyone but operators that it is there. The role is read
from the database on every request, so ``revoke-admin`` takes effect at once.

The page shows the newest 100 jobs (filtered by status, channel and provider, each from
a fixed list) and the number of jobs per status created in the last hour and day. It
shows masked destinations and provider errors, never a message or a code: it does not
open sealed payloads at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import APIRouter
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from resetflow.accounts.models import Channel
from resetflow.storage.deliveries import (
    EVENT_CHANNEL,
    JOB_STATUSES,
    PROVIDERS,
    JobStatus,
)
from resetflow.web.edge import services_of
from resetflow.web.render import page

router = APIRouter(include_in_schema=False)

LIMIT = 100
CHANNELS = (*(channel.value for channel in Channel), EVENT_CHANNEL)
FILTERS = {"status": JOB_STATUSES, "channel": CHANNELS, "provider": PROVIDERS}


@dataclass(frozen=True, slots=True)
class Row:
    created_at: datetime
    notification: str
    channel: str | None
    provider: str | None
    destination: str | None
    status: str
    last_error: str | None


def require_admin(request: Request) -> None:
    user = request.scope["state"].get("user")
    if user is None or not user.is_admin:
        raise HTTPException(404)


@router.get("/admin/deliveries")
async def deliveries(request: Request) -> Response:
    require_admin(request)
    services = services_of(request)
    chosen: dict[str, str | None] = {}
    ignored: list[str] = []
    for name, allowed in FILTERS.items():
        value = request.query_params.get(name) or None
        if value is not None and value not in allowed:
            ignored.append(name)
            value = None
        chosen[name] = value
    logged = await services.delivery_log.search(
        limit=LIMIT,
        status=JobStatus(chosen["status"]) if chosen["status"] else None,
        channel=chosen["channel"],
        provider=chosen["provider"],
    )
    last_hour, last_day = await services.delivery_log.status_counts(
        timedelta(hours=1), timedelta(days=1)
    )
    rows = [
        Row(
            created_at=entry.job.created_at,
            notification=entry.job.notification,
            channel=entry.job.channel,
            provider=entry.job.provider,
            destination=entry.destination,
            status=entry.job.status,
            last_error=entry.job.last_error,
        )
        for entry in logged
    ]
    counts = [
        (status, last_hour.get(status, 0), last_day.get(status, 0)) for status in JOB_STATUSES
    ]
    return page(
        request,
        "admin_deliveries.html",
        rows=rows,
        counts=counts,
        filters=FILTERS,
        chosen=chosen,
        limit=LIMIT,
        error=(
            f"Unknown {' and '.join(ignored)} ignored: choose from the lists." if ignored else None
        ),
    )
