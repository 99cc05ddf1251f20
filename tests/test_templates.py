"""Templates: the override directory, locales and their fallback, Spanish end to end, the
WebOTP line, and ``resetflow templates preview``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from resetflow.accounts.models import Channel
from resetflow.cli.templates import sample_context
from resetflow.config import ConfigError, Settings, load_settings
from resetflow.notify.messages import RENDERED_NOTIFICATIONS, Notification
from resetflow.notify.templates import SHIPPED_TEMPLATES, TemplateRenderer, webotp_host
from resetflow.services import make_renderer
from tests.conftest import LiveApp
from tests.support.flow import (
    CODE,
    NEW_PASSWORD,
    PASSWORD,
    find_code,
    wait_for_dev_message,
)

FILES = ("email_subject.txt", "email.txt", "email.html", "sms.txt")
CONTEXT = {
    "name": "Ada",
    "token": "123456",
    "base_url": "https://auth.example.org",
    "ttl_minutes": 5,
    "contact_kind": "email address",
    "other_kind": "phone number",
    "changed_at": "2026-01-01 12:00",
    "sent_at": "2026-01-01 12:00",
}


def _cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RESETFLOW_", "COURIER_"))}
    clean.update(RESETFLOW_DATA_DIR=str(cwd / "data"), **env)
    return subprocess.run(
        [sys.executable, "-m", "resetflow", *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


# Shipped locales ----------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["en", "es"])
@pytest.mark.parametrize("notification", [n.value for n in RENDERED_NOTIFICATIONS])
def test_every_notification_ships_every_file_in_en_and_es(locale: str, notification: str) -> None:
    for filename in FILES:
        assert (SHIPPED_TEMPLATES / locale / notification / filename).is_file()
    renderer = TemplateRenderer()
    settings = Settings(_env_file=None)
    for channel in Channel:
        message = renderer.render(
            notification,
            channel=channel,
            to="x",
            locale=locale,
            context=sample_context(settings, channel, name="Ada", token="123456"),
        )
        assert message.text.strip()
        if channel is Channel.EMAIL:
            assert message.subject and "\n" not in message.subject
            assert message.html and f'<html lang="{locale}">' in message.html


def test_test_message_carries_no_code() -> None:
    renderer = TemplateRenderer(webotp_host="auth.example.org")
    context = {"base_url": "https://auth.example.org", "sent_at": "2026-01-01 12:00"}
    for locale in ("en", "es"):
        for channel in Channel:
            message = renderer.render(
                Notification.TEST_MESSAGE, channel=channel, to="x", locale=locale, context=context
            )
            for part in (message.text, message.subject or "", message.html or ""):
                assert CODE.search(part) is None
            assert "@auth.example.org" not in message.text


@pytest.mark.parametrize(
    ("locale", "subject"),
    [
        ("es-MX", "Tu código para restablecer la contraseña"),  # es-MX -> es
        ("es", "Tu código para restablecer la contraseña"),
        ("fr-CA", "Your password reset token"),  # fr-CA -> fr -> en
        ("en", "Your password reset token"),
    ],
)
def test_locale_falls_back_from_region_to_language_to_english(locale: str, subject: str) -> None:
    message = TemplateRenderer().render(
        "password-reset-token", channel=Channel.EMAIL, to="x", locale=locale, context=CONTEXT
    )
    assert message.subject == subject


def test_spanish_names_the_contact_kind_in_spanish() -> None:
    renderer = TemplateRenderer()
    subjects = {
        kind: renderer.render(
            "verify-contact",
            channel=Channel.EMAIL,
            to="x",
            locale="es",
            context={**CONTEXT, "contact_kind": kind},
        ).subject
        for kind in ("email address", "phone number", "new email address", "new phone number")
    }
    assert subjects == {
        "email address": "Confirma tu dirección de correo electrónico",
        "phone number": "Confirma tu número de teléfono",
        "new email address": "Confirma tu nueva dirección de correo electrónico",
        "new phone number": "Confirma tu nuevo número de teléfono",
    }
    changed = renderer.render(
        "contact-changed", channel=Channel.SMS, to="x", locale="es", context=CONTEXT
    )
    assert changed.text.startswith("Hola, Ada: se ha cambiado el correo de tu cuenta.")


# The override directory ---------------------------------------------------------------


def test_override_directory_wins_file_by_file(tmp_path: Path) -> None:
    overrides = tmp_path / "templates"
    (overrides / "en" / "password-reset-token").mkdir(parents=True)
    (overrides / "en" / "password-reset-token" / "sms.txt").write_text(
        "{{ token }} is your Example code, {{ name }}.\n"
    )
    (overrides / "es" / "password-changed").mkdir(parents=True)
    (overrides / "es" / "password-changed" / "email_subject.txt").write_text(
        "Contraseña cambiada (Example)\n"
    )
    settings = load_settings(data_dir=tmp_path / "data", templates_dir=overrides, _env_file=None)
    renderer = make_renderer(settings)

    def render(notification: str, channel: Channel, locale: str) -> tuple[str, str | None]:
        message = renderer.render(
            notification, channel=channel, to="x", locale=locale, context=CONTEXT
        )
        return message.text, message.subject

    # The overridden file, and the shipped ones beside it.
    assert render("password-reset-token", Channel.SMS, "en")[0] == (
        "123456 is your Example code, Ada."
    )
    assert render("password-reset-token", Channel.EMAIL, "en")[1] == "Your password reset token"
    # An override in one locale does not replace another locale's shipped file...
    assert render("password-reset-token", Channel.SMS, "es")[0].startswith("Hola, Ada 👋")
    # ...but a locale without its own file falls back to the override of en.
    assert render("password-reset-token", Channel.SMS, "de")[0].startswith("123456 is your")
    # Override of one file of a Spanish notification; its other files stay shipped.
    text, subject = render("password-changed", Channel.EMAIL, "es-MX")
    assert subject == "Contraseña cambiada (Example)"
    assert text.startswith("Hola, Ada: la contraseña de tu cuenta se cambió")


def test_missing_templates_dir_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(data_dir=tmp_path, templates_dir=tmp_path / "missing", _env_file=None)
    message = str(caught.value)
    assert message.startswith("RESETFLOW_TEMPLATES_DIR: no such directory")
    assert "\n" not in message
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match=r"^RESETFLOW_TEMPLATES_DIR"):
        load_settings(data_dir=tmp_path, templates_dir=tmp_path / "a-file", _env_file=None)
    # Empty means unset.
    assert load_settings(data_dir=tmp_path, templates_dir="", _env_file=None).templates_dir is None

    done = _cli(
        "templates",
        "preview",
        "password-reset-token",
        cwd=tmp_path,
        RESETFLOW_TEMPLATES_DIR=str(tmp_path / "missing"),
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "RESETFLOW_TEMPLATES_DIR" in done.stderr and "Traceback" not in done.stderr


# WebOTP -------------------------------------------------------------------------------


def test_webotp_host_is_the_base_url_host_without_scheme_or_port() -> None:
    """The format binds a code to the origin ("https", host, null, null): no port."""
    assert webotp_host("https://auth.example.org") == "auth.example.org"
    assert webotp_host("https://Auth.Example.ORG:8443/base") == "auth.example.org"
    assert webotp_host("http://127.0.0.1:8000") == "127.0.0.1"
    assert webotp_host("https://bücher.example") == "xn--bcher-kva.example"


def test_webotp_line_ends_sms_that_carry_a_code(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path, base_url="https://auth.example.org:8443", sms_webotp=True, _env_file=None
    )
    renderer = make_renderer(settings)
    sms = renderer.render(
        "password-reset-token", channel=Channel.SMS, to="x", locale="en", context=CONTEXT
    )
    lines = sms.text.split("\n")
    assert lines[0] == "Hi there Ada 👋 Your password reset token is: 123456"
    assert lines[-1] == "@auth.example.org #123456"  # the last line, one space between
    assert lines[-2] == ""
    # No code, no line; email never gets one.
    without_code = {k: v for k, v in CONTEXT.items() if k != "token"}
    changed = renderer.render(
        "password-changed", channel=Channel.SMS, to="x", locale="en", context=without_code
    )
    assert "@auth.example.org" not in changed.text
    email = renderer.render(
        "password-reset-token", channel=Channel.EMAIL, to="x", locale="en", context=CONTEXT
    )
    assert "#123456" not in email.text
    # Off by default.
    plain = make_renderer(load_settings(data_dir=tmp_path, _env_file=None)).render(
        "password-reset-token", channel=Channel.SMS, to="x", locale="en", context=CONTEXT
    )
    assert plain.text == "Hi there Ada 👋 Your password reset token is: 123456"


# Spanish end to end -------------------------------------------------------------------


def test_spanish_email_user_gets_spanish_messages(live_app: Callable[..., LiveApp]) -> None:
    app = live_app()
    with app.client() as client:
        created = client.post(
            "/create-user",
            json={
                "name": "Ada Lovelace",
                "email": "ada@example.com",
                "phone": "+14155550100",
                "password": PASSWORD,
                "preference": "email",
                "locale": "es",
            },
        )
        assert created.status_code == 201, created.text
        verify = wait_for_dev_message(client, to="ada@example.com", notification="verify-contact")
        assert verify["subject"] == "Confirma tu dirección de correo electrónico"
        assert verify["text"].startswith("Hola, Ada Lovelace: tu código de confirmación es ")
        assert '<html lang="es">' in verify["html"]
        client.post("/verify-contact", json={"token": find_code(verify["text"])})
        client.post("/logout", json={})

        assert client.post("/send-token", json={"email": "ada@example.com"}).status_code == 202
        reset = wait_for_dev_message(
            client, to="ada@example.com", notification="password-reset-token"
        )
        assert reset["subject"] == "Tu código para restablecer la contraseña"
        assert "Caduca en 5 minutos y solo sirve una vez." in reset["text"]


def test_spanish_mexico_sms_user_gets_spanish_sms_with_the_webotp_line(
    live_app: Callable[..., LiveApp],
) -> None:
    """es-MX falls back to es; with RESETFLOW_SMS_WEBOTP each SMS with a code ends with
    '@<host of the base URL> #<code>' (the base URL here is http://127.0.0.1:<port>)."""
    app = live_app(sms_webotp=True)
    phone = "+14155550100"
    with app.client() as client:
        created = client.post(
            "/create-user",
            json={
                "name": "Ada",
                "email": "ada@example.com",
                "phone": phone,
                "password": PASSWORD,
                "preference": "sms",
                "locale": "es-MX",
            },
        )
        assert created.status_code == 201, created.text
        verify = wait_for_dev_message(client, to=phone, notification="verify-contact")
        code = find_code(verify["text"])
        assert verify["text"] == (
            f"Hola, Ada: tu código de confirmación es {code}\n\n@127.0.0.1 #{code}"
        )
        assert client.post("/verify-contact", json={"token": code}).status_code == 200
        client.post("/logout", json={})

        assert client.post("/send-token", json={"phone": phone}).status_code == 202
        reset = wait_for_dev_message(client, to=phone, notification="password-reset-token")
        code = find_code(reset["text"])
        assert reset["text"] == (
            f"Hola, Ada 👋 Tu código para restablecer la contraseña: {code}\n\n@127.0.0.1 #{code}"
        )
        assert client.post("/verify-token", json={"token": code}).status_code == 200
        done = client.post(
            "/reset-password",
            json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
        )
        assert done.status_code == 200, done.text
        changed = wait_for_dev_message(client, to=phone, notification="password-changed")
        assert changed["text"].startswith("Hola, Ada: tu contraseña ha cambiado.")
        assert "@127.0.0.1" not in changed["text"]


# templates preview --------------------------------------------------------------------


def test_preview_sms_shows_encoding_units_and_segments(tmp_path: Path) -> None:
    done = _cli("templates", "preview", "password-reset-token", "--channel", "sms", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "Hi there Ada 👋 Your password reset token is: 123456",
        "",
        "encoding: UCS-2, units: 52, segments: 1",
    ]
    # GSM-7 (the English verification SMS), another name and code.
    done = _cli(
        "templates",
        "preview",
        "verify-contact",
        "--channel",
        "sms",
        "--name",
        "Grace",
        "--token",
        "654321",
        cwd=tmp_path,
    )
    assert done.stdout.splitlines() == [
        "Hi Grace, your confirmation code is: 654321",
        "",
        "encoding: GSM-7, characters: 43, segments: 1",
    ]
    # With WebOTP: 52 + 2 (blank line) + len('@auth.example.org #123456') = 25 -> 79 > 70.
    done = _cli(
        "templates",
        "preview",
        "password-reset-token",
        "--channel",
        "sms",
        cwd=tmp_path,
        RESETFLOW_SMS_WEBOTP="true",
        RESETFLOW_BASE_URL="https://auth.example.org",
    )
    assert done.stdout.splitlines()[-3:] == [
        "@auth.example.org #123456",
        "",
        "encoding: UCS-2, units: 79, segments: 2",
    ]


def test_preview_email_in_spanish(tmp_path: Path) -> None:
    done = _cli(
        "templates",
        "preview",
        "password-changed",
        "--channel",
        "email",
        "--locale",
        "es-MX",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("subject: Se ha cambiado tu contraseña\n")
    assert "--- text ---\nHola, Ada: la contraseña de tu cuenta se cambió el " in out
    assert '--- html ---\n<!doctype html>\n<html lang="es">' in out
    assert "http://127.0.0.1:8000/forgot-password" in out


def test_preview_unknown_name_exits_2_listing_the_names(tmp_path: Path) -> None:
    done = _cli("templates", "preview", "password-reset", "--channel", "sms", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    for name in RENDERED_NOTIFICATIONS:
        assert name.value in lines[0]
