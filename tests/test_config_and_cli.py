"""Configuration (SPEC §6) and the command line (SPEC §7), run as a user would."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from resetflow.config import ConfigError, load_settings
from tests.support.flow import PASSWORD


def _cli(*args: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RESETFLOW_", "COURIER_"))}
    clean.update(RESETFLOW_DATA_DIR=str(data_dir), **env)
    return subprocess.run(
        [sys.executable, "-m", "resetflow", *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=data_dir.parent,
    )


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"smtp_port": 70000}, "RESETFLOW_SMTP_PORT"),
        ({"email_provider": "carrier-pigeon"}, "RESETFLOW_EMAIL_PROVIDER"),
        ({"base_url": "not a url"}, "RESETFLOW_BASE_URL"),
        ({"code_ttl_seconds": 601}, "RESETFLOW_CODE_TTL_SECONDS"),
        ({"env": "staging"}, "RESETFLOW_ENV"),
        ({"trusted_proxies": "10.0.0.0/33"}, "RESETFLOW_TRUSTED_PROXIES"),
        ({"sms_provider": "twilio"}, "RESETFLOW_TWILIO_ACCOUNT_SID"),
        ({"env": "prod"}, "RESETFLOW_SECRET_KEY"),
        ({"env": "prod", "secret_key": "change-me"}, "RESETFLOW_SECRET_KEY"),
        ({"env": "prod", "secret_key": "short"}, "RESETFLOW_SECRET_KEY"),
    ],
)
def test_bad_configuration_fails_with_one_line_naming_the_variable(
    tmp_path: Path, overrides: dict[str, object], variable: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(data_dir=tmp_path, _env_file=None, **overrides)
    message = str(caught.value)
    assert message.startswith(variable)
    assert "\n" not in message


def test_cli_prints_configuration_errors_as_one_line(tmp_path: Path) -> None:
    done = _cli("migrate", data_dir=tmp_path / "data", RESETFLOW_SMTP_PORT="seventy")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "RESETFLOW_SMTP_PORT" in lines[0]
    assert "Traceback" not in done.stderr


def test_dev_secret_is_generated_once_into_the_data_dir(tmp_path: Path) -> None:
    first = load_settings(data_dir=tmp_path, _env_file=None)
    second = load_settings(data_dir=tmp_path, _env_file=None)
    assert first.secret() == second.secret()
    assert len(first.secret()) >= 32
    secret_file = tmp_path / "secret_key"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600


def test_tutorial_courier_variable_names_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COURIER_AUTH_TOKEN", "pk_test")
    monkeypatch.setenv("COURIER_TEMPLATE", "TEMPLATE123")
    settings = load_settings(data_dir=tmp_path, _env_file=None)
    assert settings.courier_auth_token is not None
    assert settings.courier_auth_token.get_secret_value() == "pk_test"
    assert settings.courier_template == "TEMPLATE123"


def test_default_database_is_an_sqlite_file_in_wal_mode(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert _cli("migrate", data_dir=data).returncode == 0
    import sqlite3

    database = sqlite3.connect(data / "resetflow.db")
    try:
        assert database.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {
            row[0] for row in database.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    finally:
        database.close()
    assert {
        "users",
        "one_time_codes",
        "delivery_jobs",
        "delivery_attempts",
        "sessions",
        "alembic_version",
    } <= tables
    # Migrating again is a no-op.
    assert _cli("migrate", data_dir=data).returncode == 0


def test_users_create_list_and_show(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = _cli(
        "users",
        "create",
        "--name",
        "Ada",
        "--email",
        "Ada@Example.com",
        "--phone",
        "+1 415 555 0100",
        "--preference",
        "sms",
        "--password",
        PASSWORD,
        data_dir=data,
    )
    assert created.returncode == 0, created.stderr
    user_id = created.stdout.strip()
    assert len(user_id) == 32

    listed = _cli("users", "list", data_dir=data)
    assert listed.returncode == 0
    assert (
        user_id in listed.stdout
        and "ada@example.com" in listed.stdout
        and "+14155550100" in listed.stdout
    )
    assert "verified=sms,email" in listed.stdout
    assert PASSWORD not in listed.stdout

    shown = _cli("users", "show", "ADA@example.com", data_dir=data)
    assert shown.returncode == 0 and user_id in shown.stdout
    assert user_id in _cli("users", "show", "+1 415 555 0100", data_dir=data).stdout
    assert _cli("users", "show", "nobody@example.com", data_dir=data).returncode == 1

    ended = _cli("users", "end-sessions", "ada@example.com", data_dir=data)
    assert ended.returncode == 0 and ended.stdout.strip() == "ended 0 session(s)"

    duplicate = _cli(
        "users",
        "create",
        "--name",
        "Eve",
        "--email",
        "ada@example.com",
        "--phone",
        "+14155550101",
        "--password",
        PASSWORD,
        data_dir=data,
    )
    assert duplicate.returncode == 1 and "already" in duplicate.stderr

    weak = _cli(
        "users",
        "create",
        "--name",
        "Bob",
        "--email",
        "bob@example.com",
        "--phone",
        "+14155550102",
        "--password",
        "password",
        data_dir=data,
    )
    assert weak.returncode == 1 and "15 characters" in weak.stderr


def test_openapi_document_lists_the_actions(tmp_path: Path) -> None:
    from resetflow.app import create_app

    app = create_app(load_settings(data_dir=tmp_path, _env_file=None))
    paths = app.openapi()["paths"]
    for path in (
        "/create-user",
        "/send-token",
        "/verify-token",
        "/reset-password",
        "/login",
        "/logout",
    ):
        assert "post" in paths[path]
    body = paths["/send-token"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    # return_to: where to go once the flow is done (docs/integration.md).
    assert set(body["properties"]) == {"email", "phone", "return_to"}
    for path in ("/sessions/whoami", "/auth/check"):
        assert "get" in paths[path]
