"""``users create|list|show``: accounts from the command line (operators, scripts)."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from resetflow.accounts.models import ADMIN_ROLE, USER_ROLE, Channel, User
from resetflow.accounts.service import NewAccount
from resetflow.audit import AuditEvent
from resetflow.config import load_settings
from resetflow.crypto import new_token
from resetflow.errors import ResetflowError
from resetflow.notify.events import SessionsRevokedReason
from resetflow.services import Services, build_services
from resetflow.storage.migrate import upgrade
from resetflow.storage.users import DECOY_USER_ID, UserRepository

app = typer.Typer(no_args_is_help=True)
T = TypeVar("T")


def run_with_services(work: Callable[[Services], Awaitable[T]]) -> T:
    settings = load_settings()
    if not settings.is_prod:
        upgrade(settings.resolved_database_url)

    async def go() -> T:
        services = build_services(settings)
        try:
            return await work(services)
        finally:
            await services.close()

    return asyncio.run(go())


async def find_user(services: Services, who: str) -> User | None:
    """By id, or by the email / phone as typed (normalised first)."""
    async with services.database.read() as conn:
        repo = UserRepository(conn)
        user = await repo.get(who)
        if user is None and "@" in who:
            user = await repo.by_email(who.strip().lower())
        if user is None and who.strip().startswith("+"):
            user = await repo.by_phone("+" + "".join(ch for ch in who if ch.isdigit()))
        return user


def _describe(user: User) -> str:
    verified = ",".join(c.value for c in user.verified_channels) or "none"
    return (
        f"{user.id}  {user.name!r}  {user.email or '-'}  {user.phone or '-'}  "
        f"prefers={user.preference.value}  verified={verified}"
        + ("  role=admin" if user.is_admin else "")
    )


@app.command()
def create(
    name: Annotated[str, typer.Option(help="Display name.")],
    email: Annotated[str, typer.Option(help="Email address.")],
    phone: Annotated[str, typer.Option(help="Mobile number in international form, +...")],
    preference: Annotated[Channel, typer.Option(help="Where codes go.")] = Channel.EMAIL,
    password: Annotated[
        str | None, typer.Option(help="Read from a prompt when left out (safer than argv).")
    ] = None,
    verified: Annotated[
        bool, typer.Option("--verified/--unverified", help="Mark both contacts verified.")
    ] = True,
) -> None:
    """Create an account. By default its contacts count as verified (an operator vouches)."""
    secret = password if password is not None else getpass.getpass("Password: ")

    async def work(services: Services) -> str | None:
        return await services.accounts.sign_up(
            NewAccount(name=name, email=email, phone=phone, password=secret, preference=preference),
            attempt_id=new_token(),
            verify=not verified,
        )

    try:
        user_id = run_with_services(work)
    except ResetflowError as error:
        details = "; ".join(f"{k}: {v}" for k, v in error.fields.items())
        typer.echo(f"error: {error.message} {details}".strip(), err=True)
        raise typer.Exit(1) from None
    if user_id is None:
        typer.echo("error: that email or phone already has an account", err=True)
        raise typer.Exit(1)
    typer.echo(user_id)


@app.command("list")
def list_users(limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100) -> None:
    """List accounts, oldest first."""

    async def work(services: Services) -> list[User]:
        async with services.database.read() as conn:
            return await UserRepository(conn).list(limit=limit)

    for user in run_with_services(work):
        typer.echo(_describe(user))


@app.command()
def show(who: Annotated[str, typer.Argument(help="Account id, email or phone.")]) -> None:
    """Show one account."""

    async def work(services: Services) -> User | None:
        return await find_user(services, who)

    user = run_with_services(work)
    if user is None:
        typer.echo("no such account", err=True)
        raise typer.Exit(1)
    typer.echo(_describe(user))


@app.command("end-sessions")
def end_sessions(who: Annotated[str, typer.Argument(help="Account id, email or phone.")]) -> None:
    """Sign an account out everywhere (every session of it ends at once)."""

    async def work(services: Services) -> int | None:
        user = await find_user(services, who)
        if user is None:
            return None
        # Void in the database first (as a reset does, R27), with the event for the host app.
        async with services.database.write() as conn:
            await UserRepository(conn).void_sessions(user.id, now=services.clock.now())
            await services.events.sessions_revoked(
                conn, user.id, reason=SessionsRevokedReason.OPERATOR, now=services.clock.now()
            )
        return await services.sessions.delete_user(user.id)

    ended = run_with_services(work)
    if ended is None:
        typer.echo("no such account", err=True)
        raise typer.Exit(1)
    typer.echo(f"ended {ended} session(s)")


def _set_role(who: str, role: str) -> None:
    async def work(services: Services) -> tuple[User | None, bool]:
        user = await find_user(services, who)
        if user is None or user.id == DECOY_USER_ID:
            return None, False
        async with services.database.write() as conn:
            changed = await UserRepository(conn).set_role(user.id, role, now=services.clock.now())
            if changed:
                await services.audit.record(
                    AuditEvent.ROLE_CHANGED, outcome=role, client=None, user_id=user.id, conn=conn
                )
        return user, changed

    user, changed = run_with_services(work)
    if user is None:
        typer.echo("no such account", err=True)
        raise typer.Exit(1)
    what = "an operator (admin)" if role == ADMIN_ROLE else "not an operator"
    typer.echo(f"{user.id} is {'now' if changed else 'already'} {what}")


@app.command("grant-admin")
def grant_admin(who: Annotated[str, typer.Argument(help="Account id, email or phone.")]) -> None:
    """Make an account an operator: it sees /admin/deliveries once signed in."""
    _set_role(who, ADMIN_ROLE)


@app.command("revoke-admin")
def revoke_admin(who: Annotated[str, typer.Argument(help="Account id, email or phone.")]) -> None:
    """Take the operator role away (effective on the account's next request)."""
    _set_role(who, USER_ROLE)
