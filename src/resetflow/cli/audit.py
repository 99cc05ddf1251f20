"""``audit``: read the audit trail, newest first."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from resetflow.audit import AuditEvent, AuditRecord
from resetflow.cli.users import find_user, run_with_services
from resetflow.services import Services


def audit(
    who: Annotated[
        str | None, typer.Option("--user", help="Only this account (id, email or phone).")
    ] = None,
    event: Annotated[AuditEvent | None, typer.Option(help="Only this kind of event.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Show the audit trail (every step of sign-up, sign-in and recovery)."""

    async def work(services: Services) -> list[AuditRecord] | None:
        user_id = None
        if who is not None:
            user = await find_user(services, who)
            if user is None:
                return None
            user_id = user.id
        return await services.audit.recent(
            limit=limit, user_id=user_id, event=event.value if event else None
        )

    records = run_with_services(work)
    if records is None:
        typer.echo("no such account", err=True)
        raise typer.Exit(1)
    for record in records:
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "at": record.at.isoformat(),
                        "event": record.event,
                        "outcome": record.outcome,
                        "user_id": record.user_id,
                        "ip": record.ip,
                        "user_agent": record.user_agent,
                        **record.detail,
                    },
                    ensure_ascii=True,
                )
            )
        else:
            details = " ".join(f"{k}={v}" for k, v in record.detail.items() if v is not None)
            typer.echo(
                f"{record.at:%Y-%m-%d %H:%M:%S}Z  {record.event:<26} {record.outcome:<20} "
                f"{record.user_id or '-':<32}  {record.ip:<15} {details}".rstrip()
            )
