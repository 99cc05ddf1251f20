"""What a production configuration refuses or hides: the developer providers and pages
(R58), limits that would multiply over web processes (R16), /readyz figures that tell a
known contact from an unknown one (R19), and the https redirect's host (R40, R49)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from resetflow.config import ConfigError
from resetflow.config import Settings as ResetflowSettings
from tests.conftest import LiveApp
from tests.support.flow import PASSWORD, create_verified_account, find_code
from tests.support.processes import ProcessSet, run_resetflow
from tests.support.prod import prod_environment, prod_settings
from tests.support.servers import SmtpSink, free_port

HTTPS = {"X-Forwarded-Proto": "https"}
METRICS_TOKEN = "m" * 40


# R58: no developer providers or pages in prod -------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"sms_provider": "outbox"}, "RESETFLOW_SMS_PROVIDER"),
        ({"sms_provider": "mailbox"}, "RESETFLOW_SMS_PROVIDER"),
        ({"sms_provider": "console"}, "RESETFLOW_SMS_PROVIDER"),
        ({"email_provider": "outbox"}, "RESETFLOW_EMAIL_PROVIDER"),
        ({"email_provider": "mailbox"}, "RESETFLOW_EMAIL_PROVIDER"),
        ({"email_provider": "console"}, "RESETFLOW_EMAIL_PROVIDER"),
        ({"email_providers": "smtp,console"}, "RESETFLOW_EMAIL_PROVIDERS"),
        ({"email_providers": "smtp,mailbox"}, "RESETFLOW_EMAIL_PROVIDERS"),
        ({"sms_providers": "twilio,outbox"}, "RESETFLOW_SMS_PROVIDERS"),
    ],
)
def test_r58_prod_refuses_the_development_providers(
    make_settings: Callable[..., ResetflowSettings], overrides: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        make_settings(**prod_settings(**overrides))
    message = str(refused.value)
    assert message.startswith(f"{variable}:") and "\n" not in message
    # The same providers are fine in dev, where they are the default.
    make_settings(**{**prod_settings(**overrides), "env": "dev"})


@pytest.mark.parametrize("name", ["mailbox", "outbox"])
def test_r58_prod_refuses_the_dev_mailbox_under_both_names(
    make_settings: Callable[..., ResetflowSettings], name: str
) -> None:
    """``outbox`` is the dev mailbox's old name (SPEC's): the refusal says both, whichever
    was typed, so that it reads right next to SPEC and next to the current docs."""
    with pytest.raises(ConfigError) as refused:
        make_settings(**prod_settings(sms_provider=name))
    assert str(refused.value).startswith(
        "RESETFLOW_SMS_PROVIDER: 'mailbox' (also spelled 'outbox') is a development provider"
    )


def test_r58_prod_with_only_email_configured_does_not_start(tmp_path: Path) -> None:
    """The default SMS provider is the dev mailbox (``outbox``): a prod configuration that
    names only its email provider would store SMS codes in clear and print them. It does
    not start."""
    env = prod_environment(data_dir=str(tmp_path / "data"))
    for name in list(env):
        if name.startswith("RESETFLOW_TWILIO") or name == "RESETFLOW_SMS_PROVIDER":
            del env[name]
    done = run_resetflow("serve", "--port", str(free_port()), env=env, cwd=tmp_path)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "RESETFLOW_SMS_PROVIDER: " in lines[0]


def test_r58_prod_has_no_docs_or_dev_pages_but_keeps_the_openapi_document(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app(**prod_settings(trusted_proxies="127.0.0.1/32"))
    with app.client() as client:
        for path in (
            "/docs",
            "/docs/oauth2-redirect",
            "/redoc",
            "/dev/outbox",
            "/dev/outbox.json",
            "/dev/mailbox",
            "/dev/mailbox.json",
        ):
            assert client.get(path, headers=HTTPS).status_code == 404, path
        openapi = client.get("/openapi.json", headers=HTTPS)
        assert openapi.status_code == 200 and "/send-token" in openapi.json()["paths"]
    dev = live_app()
    with dev.client() as client:
        assert client.get("/docs").status_code == 200
        assert client.get("/dev/outbox").status_code == 200
        assert client.get("/dev/mailbox").status_code == 200


# R16: limits in memory do not multiply over processes ------------------------------------


def test_r16_serve_with_several_processes_and_no_redis_does_not_start_in_prod(
    tmp_path: Path,
) -> None:
    env = prod_environment(data_dir=str(tmp_path / "data"))
    done = run_resetflow(
        "serve", "--port", str(free_port()), "--workers", "2", env=env, cwd=tmp_path
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "RESETFLOW_REDIS_URL" in lines[0], done.stderr
    # One process keeps its limits whole: that one starts (and is stopped at once).
    one = ProcessSet(env=env, logs=tmp_path / "one")
    try:
        one.start("web", "serve", "--port", str(port := free_port()))
        one.wait_ready("web", f"http://127.0.0.1:{port}/healthz")
    finally:
        one.stop_all()


def test_r16_serve_with_several_processes_and_no_redis_warns_in_dev(tmp_path: Path) -> None:
    processes = ProcessSet(env={"RESETFLOW_DATA_DIR": str(tmp_path / "data")}, logs=tmp_path)
    port = free_port()
    try:
        processes.start("web", "serve", "--port", str(port), "--workers", "2")
        processes.wait_ready("web", f"http://127.0.0.1:{port}/healthz", timeout=60)
        warnings = processes.events("web", "limits_per_process")
    finally:
        processes.stop_all()
    assert len(warnings) == 1, processes.log("web")
    assert warnings[0]["workers"] == 2
    assert "RESETFLOW_REDIS_URL" in str(warnings[0]["reason"])


# R19: /readyz answers up or down to the public ------------------------------------------


def test_r19_readyz_outbox_figures_move_alike_for_known_and_unknown_contacts(
    live_app: Callable[..., LiveApp],
) -> None:
    """R19: /readyz is public. A request for a known contact queues a real job, one for
    an unknown contact a decoy. The public answer carries no figures at all (it did: the
    pending count moved for a known contact right after /send-token); the metrics token's
    holder sees them, and they move alike for both (decoys count as well)."""
    app = live_app(inprocess_worker=False, metrics_token=METRICS_TOKEN)
    auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    create_verified_account(app.settings)
    with app.client() as client:
        public_before = client.get("/readyz")
        empty = client.get("/readyz", headers=auth).json()
        assert (empty["outbox_pending"], empty["outbox_lag_seconds"]) == (0, 0.0)
        assert client.post("/send-token", json={"email": "ada@example.com"}).status_code == 202
        time.sleep(0.05)
        public_after = client.get("/readyz")
        known = client.get("/readyz", headers=auth).json()
        wrong_token = client.get("/readyz", headers={"Authorization": "Bearer nope"})
    with app.client() as client:
        assert client.post("/send-token", json={"email": "nobody@example.com"}).status_code == 202
        both = client.get("/readyz", headers=auth).json()
    assert public_before.status_code == public_after.status_code == 200
    assert public_before.json() == public_after.json() == wrong_token.json()
    assert public_after.json() == {"status": "ok", "database": "up", "sessions": "up"}
    assert known["outbox_pending"] == 1 and known["outbox_lag_seconds"] > 0
    assert both["outbox_pending"] == 2  # the unknown contact's decoy counts as well


def test_r19_prod_readyz_without_a_metrics_token_shows_no_figures(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app(**prod_settings(inprocess_worker=False))
    with app.client() as client:
        ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "database": "up", "sessions": "up"}


# R40, R49: the https redirect goes to the base URL's host --------------------------------


def test_r49_https_redirect_goes_to_the_base_url_host_not_the_host_header(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app(**prod_settings(base_url="https://auth.example.org:8443/ignored"))
    with app.client() as client:
        for host in ("evil.example", "auth.example.org.evil.example", "evil.example:443"):
            answer = client.get(
                "/forgot-password?lang=es&x=%2F", headers={"Host": host}, follow_redirects=False
            )
            assert answer.status_code == 308
            assert (
                answer.headers["location"]
                == "https://auth.example.org:8443/forgot-password?lang=es&x=%2F"
            )
        forwarded = client.get(
            "/login", headers={"X-Forwarded-Host": "evil.example"}, follow_redirects=False
        )
        assert forwarded.headers["location"] == "https://auth.example.org:8443/login"


# An email-only deployment: RESETFLOW_SMS_PROVIDER=none -----------------------------------


def test_r58_an_email_only_prod_deployment_switches_sms_off_with_none(
    make_settings: Callable[..., ResetflowSettings],
    live_app: Callable[..., LiveApp],
    smtp: tuple[SmtpSink, int],
) -> None:
    """Prod refuses the dev mailbox for SMS; a deployment without an SMS provider says
    ``none``: sign-up with SMS codes is then refused on its ``preference`` field, and
    email works as before."""
    sink, port = smtp
    email_only = {
        name: value for name, value in prod_settings().items() if not name.startswith("twilio")
    }
    email_only.update(sms_provider="none", smtp_port=port, inprocess_worker=True)
    with pytest.raises(ConfigError, match=r"^RESETFLOW_SMS_PROVIDERS:"):
        make_settings(**{**email_only, "sms_providers": "twilio,none"})
    app = live_app(**email_only, trusted_proxies="127.0.0.1/32")
    assert not app.settings.sms_enabled
    with app.client() as client:
        details = {
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "phone": "+14155550100",
            "password": PASSWORD,
        }
        by_sms = client.post("/create-user", json={**details, "preference": "sms"}, headers=HTTPS)
        assert by_sms.status_code == 422
        assert by_sms.json()["code"] == "invalid_input"
        assert "does not send text messages" in by_sms.json()["fields"]["preference"]
        by_email = client.post(
            "/create-user", json={**details, "preference": "email"}, headers=HTTPS
        )
        assert by_email.status_code == 201
    assert find_code(sink.wait_for("ada@example.com")[0].text)
