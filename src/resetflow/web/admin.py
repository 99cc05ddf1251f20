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
    DeliveryRepository,
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
    now = services.clock.now()
    async with services.database.read() as conn:
        repo = DeliveryRepository(conn)
        jobs = await repo.list_jobs(
            limit=LIMIT,
            status=chosen["status"],
            channel=chosen["channel"],
            provider=chosen["provider"],
        )
        destinations = await repo.last_destinations([job.id for job in jobs])
        last_hour = await repo.count_by_status(since=now - timedelta(hours=1))
        last_day = await repo.count_by_status(since=now - timedelta(days=1))
    rows = [
        Row(
            created_at=job.created_at,
            notification=job.notification,
            channel=job.channel,
            provider=job.provider,
            destination=destinations.get(job.id),
            status=job.status,
            last_error=job.last_error,
        )
        for job in jobs
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
