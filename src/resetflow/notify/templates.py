"""Rendering notification templates in a Jinja2 sandbox.

Layout: ``<root>/<locale>/<notification>/{email_subject.txt,email.txt,email.html,sms.txt}``.
A locale that lacks a file falls back to ``en``. Only ``.html`` files are auto-escaped;
the sandbox stops a template (which an operator may override) from reaching Python
internals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from resetflow.accounts.models import Channel
from resetflow.notify.messages import RenderedMessage

SHIPPED_TEMPLATES = Path(__file__).parent / "templates"
DEFAULT_LOCALE = "en"


class TemplateRenderer:
    def __init__(self, *, directories: list[Path] | None = None) -> None:
        search_path = [str(d) for d in (directories or [])] + [str(SHIPPED_TEMPLATES)]
        self._env = SandboxedEnvironment(
            loader=FileSystemLoader(search_path),
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            undefined=StrictUndefined,
            keep_trailing_newline=False,
        )

    def render(
        self,
        notification: str,
        *,
        channel: Channel,
        to: str,
        locale: str,
        context: dict[str, Any],
        idempotency_key: str = "",
    ) -> RenderedMessage:
        if channel is Channel.SMS:
            return RenderedMessage(
                notification=notification,
                channel=channel,
                to=to,
                text=self._render(notification, "sms.txt", locale, context).strip(),
                idempotency_key=idempotency_key,
            )
        return RenderedMessage(
            notification=notification,
            channel=channel,
            to=to,
            subject=" ".join(
                self._render(notification, "email_subject.txt", locale, context).split()
            ),
            text=self._render(notification, "email.txt", locale, context).strip() + "\n",
            html=self._render(notification, "email.html", locale, context),
            idempotency_key=idempotency_key,
        )

    def _render(
        self, notification: str, filename: str, locale: str, context: dict[str, Any]
    ) -> str:
        for candidate in dict.fromkeys([locale, locale.split("-")[0], DEFAULT_LOCALE]):
            try:
                template = self._env.get_template(f"{candidate}/{notification}/{filename}")
            except TemplateNotFound:
                continue
            return template.render(**context)
        raise LookupError(f"no template {notification}/{filename} for locale {locale}")
