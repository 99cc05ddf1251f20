"""``resetflow``: the command line. One module per command group."""

from __future__ import annotations

import sys

import typer

from resetflow.cli import (
    admin_tokens,
    audit,
    deliveries,
    send_test,
    server,
    templates,
    user_import,
    users,
)
from resetflow.config import ConfigError

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.command()(server.serve)
app.command()(server.migrate)
app.command()(server.worker)
users.app.command("import")(user_import.import_file)
users.app.command("import-tutorial")(user_import.import_tutorial)
app.add_typer(users.app, name="users", help="Create and inspect accounts.")
app.add_typer(admin_tokens.app, name="admin-tokens", help="Bearer tokens for the operator API.")
app.command()(audit.audit)
app.add_typer(deliveries.app, name="deliveries", help="The delivery log: list, show, retry.")
app.add_typer(templates.app, name="templates", help="Preview notification templates.")
app.command("send-test")(send_test.send_test)


def main() -> None:
    try:
        app()
    except ConfigError as error:
        # One clear line naming the variable; no traceback for a typo in the config.
        print(f"resetflow: configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
