"""``resetflow send-test``: a test message straight through the configured provider, run
as an operator would (a subprocess), against a real SMTP server on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.flow import CODE
from tests.support.servers import SmtpSink, free_port


def _cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RESETFLOW_", "COURIER_"))}
    clean.update(RESETFLOW_DATA_DIR=str(cwd / "data"), **env)
    return subprocess.run(
        [sys.executable, "-m", "resetflow", "send-test", *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def _smtp_env(port: int) -> dict[str, str]:
    return {
        "RESETFLOW_EMAIL_PROVIDER": "smtp",
        "RESETFLOW_SMTP_HOST": "127.0.0.1",
        "RESETFLOW_SMTP_PORT": str(port),
        "RESETFLOW_EMAIL_FROM": "resetflow@example.org",
        "RESETFLOW_BASE_URL": "https://auth.example.org",
    }


def test_send_test_email_through_smtp(tmp_path: Path, smtp: tuple[SmtpSink, int]) -> None:
    sink, port = smtp
    done = _cli("--channel", "email", "--to", "Ada@Example.com", cwd=tmp_path, **_smtp_env(port))
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith("sent via smtp: message id ")
    message_id = line.removeprefix("sent via smtp: message id ")

    [mail] = sink.wait_for("ada@example.com")
    assert mail.sender == "resetflow@example.org"
    assert mail.message["Subject"] == "resetflow test message"
    assert mail.message["Message-ID"] == f"<{message_id}>"
    assert "email delivery works" in mail.text and "https://auth.example.org" in mail.text
    assert mail.html is not None
    # Nothing in it could pass for a code.
    for part in (mail.text, mail.html, str(mail.message["Subject"])):
        assert CODE.search(part) is None


def test_send_test_in_spanish(tmp_path: Path, smtp: tuple[SmtpSink, int]) -> None:
    sink, port = smtp
    done = _cli(
        "--channel",
        "email",
        "--to",
        "ada@example.com",
        "--locale",
        "es",
        cwd=tmp_path,
        **_smtp_env(port),
    )
    assert done.returncode == 0, done.stderr
    [mail] = sink.wait_for("ada@example.com")
    assert mail.message["Subject"] == "Mensaje de prueba de resetflow"
    assert "el envío de correo funciona" in mail.text


def test_send_test_reports_a_refused_recipient_and_exits_1(
    tmp_path: Path, smtp: tuple[SmtpSink, int]
) -> None:
    sink, port = smtp
    sink.refuse["nobody@example.com"] = "550 5.1.1 no such user"
    done = _cli("--channel", "email", "--to", "nobody@example.com", cwd=tmp_path, **_smtp_env(port))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip() == "failed via smtp: recipient refused ([550])"
    assert sink.to("nobody@example.com") == []


def test_send_test_reports_an_unreachable_server_and_exits_1(tmp_path: Path) -> None:
    done = _cli(
        "--channel", "email", "--to", "ada@example.com", cwd=tmp_path, **_smtp_env(free_port())
    )
    assert done.returncode == 1
    assert done.stderr.strip().startswith("failed via smtp: SMTP unavailable")
    assert "Traceback" not in done.stderr


def test_send_test_sms_through_the_configured_provider(tmp_path: Path) -> None:
    """SMS goes to the SMS provider (here the dev mailbox), even when email uses another."""
    done = _cli(
        "--channel",
        "sms",
        "--to",
        "+1 415 555 0100",
        cwd=tmp_path,
        RESETFLOW_EMAIL_PROVIDER="console",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "sent via outbox: message id outbox-1"
    # The mailbox provider prints what it keeps: the SMS, to the normalised number.
    assert "sms to +14155550100" in done.stdout
    assert "resetflow test message (http://127.0.0.1:8000): SMS delivery works." in done.stdout


def test_send_test_refuses_a_bad_address_with_exit_2(tmp_path: Path) -> None:
    done = _cli("--channel", "sms", "--to", "not a number", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: --to: ")
    done = _cli("--channel", "email", "--to", "+14155550100", cwd=tmp_path)
    assert done.returncode == 2
