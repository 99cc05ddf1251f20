"""``templates preview``: a notification as a recipient would get it, with sample values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from jinja2 import TemplateError

from resetflow.accounts.models import Channel
from resetflow.config import Settings, load_settings
from resetflow.notify.messages import RENDERED_NOTIFICATIONS, Notification, RenderedMessage
from resetflow.notify.sms_encoding import analyse
from resetflow.services import make_renderer

app = typer.Typer(no_args_is_help=True)

NAMES = [n.value for n in RENDERED_NOTIFICATIONS]
# The notifications that carry a code (and so, with RESETFLOW_SMS_WEBOTP, the WebOTP line).
WITH_CODE = frozenset({Notification.PASSWORD_RESET_TOKEN, Notification.VERIFY_CONTACT})
SAMPLE_CODE = "123456"  # a sample for the preview, never a real code


def sample_context(
    settings: Settings, channel: Channel, *, name: str, token: str | None
) -> dict[str, Any]:
    """Every value any shipped template uses; ``token`` left out when ``None``."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    context: dict[str, Any] = {
        "name": name,
        "base_url": settings.base_url,
        "ttl_minutes": settings.code_ttl_seconds // 60,
        "contact_kind": channel.noun,
        "other_kind": channel.other.noun,
        "changed_at": now,
        "sent_at": now,
    }
    if token is not None:
        context["token"] = token
    return context


def describe(message: RenderedMessage) -> str:
    if message.channel is Channel.SMS:
        return f"{message.text}\n\n{analyse(message.text).describe()}"
    return (
        f"subject: {message.subject}\n\n"
        f"--- text ---\n{message.text.rstrip()}\n\n"
        f"--- html ---\n{(message.html or '').rstrip()}"
    )


@app.command()
def preview(
    name: Annotated[str, typer.Argument(help="Notification, e.g. password-reset-token.")],
    channel: Annotated[Channel, typer.Option(help="email or sms.")] = Channel.EMAIL,
    locale: Annotated[str, typer.Option(help="e.g. en, es, es-MX (falls back to en).")] = "en",
    user_name: Annotated[str, typer.Option("--name", help="The recipient's name.")] = "Ada",
    token: Annotated[str, typer.Option(help="The sample code shown.")] = SAMPLE_CODE,
) -> None:
    """Show a notification rendered with sample values; SMS with encoding and segments.

    RESETFLOW_TEMPLATES_DIR and RESETFLOW_SMS_WEBOTP apply, as they do when sending."""
    if name not in NAMES:
        typer.echo(f"error: unknown notification {name!r}; one of: {', '.join(NAMES)}", err=True)
        raise typer.Exit(2)
    settings = load_settings()
    renderer = make_renderer(settings)
    try:
        message = renderer.render(
            name,
            channel=channel,
            to="preview",
            locale=locale,
            context=sample_context(
                settings, channel, name=user_name, token=token if name in WITH_CODE else None
            ),
        )
    except (TemplateError, LookupError) as error:
        typer.echo(f"error: cannot render {name} ({channel.value}, {locale}): {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(describe(message))
