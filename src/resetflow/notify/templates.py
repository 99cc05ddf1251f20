"""Rendering notification templates in a Jinja2 sandbox.

Layout: ``<root>/<locale>/<notification>/{email_subject.txt,email.txt,email.html,sms.txt}``.
A locale that lacks a file falls back to ``en``. Only ``.html`` files are auto-escaped;
the sandbox stops a template (which an operator may override) from reaching Python
internals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from resetflow.accounts.models import Channel
from resetflow.notify.messages import RenderedMessage

SHIPPED_TEMPLATES = Path(__file__).parent / "templates"
DEFAULT_LOCALE = "en"


class TemplateRenderer:
    def __init__(
        self,
        *,
        directories: list[Path] | None = None,
        webotp_host: str | None = None,
        product_name: str = "resetflow",
        reload: bool = True,
    ) -> None:
        """``reload``: look at each template file's time on every render (edits show at
        once, for development); without it a file is read once per process (prod: three
        ``stat`` calls fewer per message)."""
        # Every template may name the product (RESETFLOW_PRODUCT_NAME) as {{ product_name }}.
        self._product_name = product_name
        # With webotp_host, an SMS whose context holds a ``token`` ends with the WebOTP
        # line ``@host #code`` (see :func:`webotp_line`).
        self._webotp_host = webotp_host
        search_path = [str(d) for d in (directories or [])] + [str(SHIPPED_TEMPLATES)]
        self._env = SandboxedEnvironment(
            loader=FileSystemLoader(search_path),
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            undefined=StrictUndefined,
            keep_trailing_newline=False,
            auto_reload=reload,
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
            text = self._render(notification, "sms.txt", locale, context).strip()
            if self._webotp_host and context.get("token"):
                text = f"{text}\n\n{webotp_line(self._webotp_host, str(context['token']))}"
            return RenderedMessage(
                notification=notification,
                channel=channel,
                to=to,
                text=text,
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
            return template.render(**{"product_name": self._product_name, **context})
        raise LookupError(f"no template {notification}/{filename} for locale {locale}")


def webotp_host(base_url: str) -> str:
    """The host of ``base_url`` as the WebOTP line names it: no scheme and no port (the
    format binds the code to the origin ``("https", host, null, null)``, so a port cannot
    be expressed), lowercase, internationalised names in their ASCII (IDNA) form."""
    host = urlsplit(base_url).hostname or ""
    return host.encode("idna").decode("ascii") if not host.isascii() else host


def webotp_line(host: str, code: str) -> str:
    """The last line of an origin-bound one-time code message
    (https://wicg.github.io/sms-one-time-codes/): ``@host #code``, one space between."""
    return f"@{host} #{code}"
