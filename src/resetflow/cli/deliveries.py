"""``deliveries list|show|retry``: the delivery log (outbox jobs and their attempts).

Destinations are shown masked, as the log stores them; the sealed payload (the message
context, with the code in it) is never opened or printed.

``retry`` cannot bring back a job that has ended. When a job ends (``sent``, ``failed``)
the worker erases its sealed payload on purpose, so that no code outlives its delivery;
``delivered`` and ``undeliverable`` come later, from the provider. There is nothing left
to send again: a person whose code did not arrive asks for a new one. What ``retry`` can
do is make a job that is still ``queued`` (waiting out its backoff after a provider
failure, payload intact, code not expired) due at once, instead of at its next attempt.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

import typer

from resetflow.accounts.models import Channel
from resetflow.cli.users import run_with_services
from resetflow.notify.delivery_log import JobRecord, LoggedJob, RetryRefusal, RetryRefused
from resetflow.services import Services
from resetflow.storage import deliveries
from resetflow.storage.deliveries import DeliveryJob, JobStatus

app = typer.Typer(no_args_is_help=True)


def _time(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}Z" if value is not None else "-"


ProviderName = StrEnum(  # type: ignore[misc]
    "ProviderName", {name.upper(): name for name in deliveries.PROVIDERS}
)


# The channels a job can name: a message's, or webhook (events for the host app).
JobChannel = StrEnum(  # type: ignore[misc]
    "JobChannel", {name.upper(): name for name in (*Channel, deliveries.EVENT_CHANNEL)}
)


@app.command("list")
def list_deliveries(
    status: Annotated[JobStatus | None, typer.Option(help="Only jobs in this status.")] = None,
    channel: Annotated[
        JobChannel | None, typer.Option(help="Only jobs sent on this channel.")
    ] = None,
    provider: Annotated[
        ProviderName | None, typer.Option(help="Only jobs this provider took.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
) -> None:
    """List delivery jobs, newest first.

    Columns: time (UTC), job id, status, channel, provider, masked destination,
    notification, last error.
    """

    async def work(services: Services) -> list[LoggedJob]:
        return await services.delivery_log.search(
            limit=limit,
            status=status,
            channel=channel.value if channel else None,
            provider=provider.value if provider else None,
        )

    for entry in run_with_services(work):
        job, destination = entry.job, entry.destination
        typer.echo(
            f"{_time(job.created_at)}  {job.id}  {job.status:<13} {job.channel or '-':<5} "
            f"{job.provider or '-':<8} {destination or '-':<24} {job.notification:<22} "
            f"{job.last_error or ''}".rstrip()
        )


@app.command()
def show(
    job_id: Annotated[str, typer.Argument(help="The job id (from `deliveries list`).")],
) -> None:
    """Show one job and every attempt on it (the message itself is never shown)."""

    async def work(services: Services) -> JobRecord | None:
        return await services.delivery_log.read(job_id)

    found = run_with_services(work)
    if found is None:
        typer.echo("no such job", err=True)
        raise typer.Exit(1)
    job, attempts = found.job, found.attempts
    facts = [
        ("job", job.id),
        ("created", _time(job.created_at)),
        ("updated", _time(job.updated_at)),
        ("notification", job.notification),
        ("account", job.user_id or "-"),
        ("status", job.status),
        ("channel", job.channel or "-"),
        ("provider", job.provider or "-"),
        ("message id", job.provider_message_id or "-"),
        ("tries", f"{job.tries} on route {job.route_index + 1}"),
        ("code expires", _time(job.expires_at) if job.expires_at else "- (no code)"),
        ("last error", job.last_error or "-"),
        (
            "sealed message",
            "kept until the job ends" if job.sealed_payload is not None else "erased",
        ),
    ]
    if job.status == JobStatus.QUEUED:
        facts.insert(6, ("next attempt", _time(job.next_attempt_at)))
    for name, value in facts:
        typer.echo(f"{name:<15}{value}")
    typer.echo(f"attempts ({len(attempts)}):")
    for attempt in attempts:
        typer.echo(
            f"  {_time(attempt.created_at)}  {attempt.status:<11} {attempt.channel:<5} "
            f"{attempt.provider:<8} {attempt.destination:<24} "
            f"{attempt.provider_message_id or '-':<36} {attempt.error or ''}".rstrip()
        )


def _refusal(refused: RetryRefused) -> str:
    """What ``deliveries retry`` says when the delivery log refused the retry."""
    job = refused.job
    if job is None:
        return "no such job"
    ended = "its sealed message (and any code in it) was erased when the job ended"
    match refused.reason:
        case RetryRefusal.FAILED:
            return (
                f"job {job.id} failed ({job.last_error or 'no reason recorded'}) and cannot be "
                f"retried: {ended}, by design. The person should ask for a new code."
            )
        case RetryRefusal.ACCEPTED:
            return (
                f"job {job.id} is {job.status}: {job.provider or 'the provider'} accepted it, "
                f"so there is nothing to retry, and {ended}. The person should ask for a new "
                "code."
            )
        case RetryRefusal.SENDING:
            return f"job {job.id} is being sent by a worker right now; see `deliveries show`."
        case RetryRefusal.NO_PAYLOAD:
            return f"job {job.id} has no sealed message left to send."
        case RetryRefusal.CODE_EXPIRED:
            return (
                f"the code in job {job.id} expired at {_time(job.expires_at)}; the worker will "
                "close the job as failed rather than send a dead code."
            )
        case _:
            return f"job {job.id} changed meanwhile; see `deliveries show`."


@app.command()
def retry(
    job_id: Annotated[str, typer.Argument(help="The job id (from `deliveries list`).")],
) -> None:
    """Send a queued job now instead of after its backoff.

    Jobs that ended (sent, failed, delivered, undeliverable) cannot be retried: their
    sealed message was erased when they ended.
    """

    async def work(services: Services) -> DeliveryJob:
        return await services.delivery_log.retry(job_id)

    try:
        job = run_with_services(work)
    except RetryRefused as refused:
        typer.echo(f"cannot retry: {_refusal(refused)}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"job {job.id} is due now (it was due at {_time(job.next_attempt_at)}); a "
        "worker will try it within its poll interval."
    )
