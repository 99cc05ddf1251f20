"""``admin-tokens create|list|revoke``: bearer tokens for the operator API (R60).

A token is printed once, by ``create``; only its SHA-256 is stored. While no live token
exists, ``/admin/api/v1/`` answers 404 as if it did not exist.
"""

from __future__ import annotations

import re
from typing import Annotated

import typer

from resetflow.audit import AuditEvent
from resetflow.cli.users import run_with_services
from resetflow.services import Services
from resetflow.storage.admin_tokens import (
    AdminToken,
    AdminTokenRepository,
    TokenNameTaken,
    new_admin_token,
)

app = typer.Typer(no_args_is_help=True)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def _when(value: object) -> str:
    return value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else "-"


@app.command()
def create(
    name: Annotated[str, typer.Option(help="Who uses it (unique; shown in the audit trail).")],
) -> None:
    """Make a token and print it once. Store it in your secret manager now."""
    if not re.fullmatch(NAME_PATTERN, name):
        typer.echo("error: a name is 1-64 letters, digits, '.', '_' or '-'", err=True)
        raise typer.Exit(2)
    token = new_admin_token()

    async def work(services: Services) -> bool:
        try:
            async with services.database.write() as conn:
                await AdminTokenRepository(conn).create(name, token, now=services.clock.now())
                await services.audit.record(
                    AuditEvent.ADMIN_CHANGE,
                    outcome="token_created",
                    client=None,
                    conn=conn,
                    admin_token=name,
                )
        except TokenNameTaken:
            return False
        return True

    if not run_with_services(work):
        typer.echo(f"error: a token named {name!r} exists (revoke it or pick another)", err=True)
        raise typer.Exit(1)
    typer.echo(token)


@app.command("list")
def list_tokens() -> None:
    """Names and dates; never the tokens (they are not stored)."""

    async def work(services: Services) -> list[AdminToken]:
        async with services.database.read() as conn:
            return await AdminTokenRepository(conn).list()

    for token in run_with_services(work):
        state = f"revoked {_when(token.revoked_at)}" if token.revoked_at else "active"
        typer.echo(
            f"{token.name}  created {_when(token.created_at)}  "
            f"last used {_when(token.last_used_at)}  {state}"
        )


@app.command()
def revoke(name: Annotated[str, typer.Argument(help="The token's name.")]) -> None:
    """Stop a token from working, at once."""

    async def work(services: Services) -> bool:
        async with services.database.write() as conn:
            done = await AdminTokenRepository(conn).revoke(name, now=services.clock.now())
            if done:
                await services.audit.record(
                    AuditEvent.ADMIN_CHANGE,
                    outcome="token_revoked",
                    client=None,
                    conn=conn,
                    admin_token=name,
                )
            return done

    if not run_with_services(work):
        typer.echo(f"error: no active token named {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {name}")
