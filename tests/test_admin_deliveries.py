"""The operators' delivery log: ``resetflow users grant-admin|revoke-admin``, the
read-only page ``/admin/deliveries`` (operators only; everyone else gets the 404 of a path
that does not exist) and ``resetflow deliveries list|show|retry``. Neither ever shows a
message or a code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from resetflow.accounts.models import Channel
from tests.conftest import LiveApp
from tests.support.deliveries import put_job, read_job
from tests.support.flow import PASSWORD, create_verified_account, find_code, wait_for_dev_message

ADMIN = "grace@example.com"
USER = "ada@example.com"
SMS_USER_PHONE = "+14155550122"


def _cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RESETFLOW_", "COURIER_"))}
    clean["RESETFLOW_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "resetflow", *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=data_dir.parent,
    )


@contextmanager
def _signed_in(app: LiveApp, email: str) -> Iterator[httpx.Client]:
    with app.client() as client:
        answer = client.post("/login", json={"email": email, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        yield client


def _counts(page: str, status: str) -> tuple[int, int]:
    match = re.search(
        rf'status-{status}">{status}</span></td><td class="number">(\d+)</td>'
        rf'<td class="number">(\d+)</td>',
        page,
    )
    assert match, f"no count row for {status}"
    return int(match.group(1)), int(match.group(2))


def _rows(page: str) -> int:
    return len(re.findall(r'<td class="nowrap">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</td>', page))


def test_admin_page_for_operators_only_with_filters_and_counts(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app()
    create_verified_account(app.settings, name="Grace", email=ADMIN, phone="+14155550111")
    create_verified_account(app.settings, name="Ada", email=USER, phone="+14155550100")
    create_verified_account(
        app.settings,
        name="Carol",
        email="carol@example.com",
        phone=SMS_USER_PHONE,
        preference=Channel.SMS,
    )
    granted = _cli("users", "grant-admin", ADMIN, data_dir=app.settings.data_dir)
    assert granted.returncode == 0, granted.stderr
    assert granted.stdout.strip().endswith("is now an operator (admin)")
    assert "role=admin" in _cli("users", "show", ADMIN, data_dir=app.settings.data_dir).stdout

    # Two real deliveries (dev mailbox: email and SMS) and three written in other states.
    with app.client() as client:
        assert client.post("/send-token", json={"email": USER}).status_code == 202
        assert client.post("/send-token", json={"phone": SMS_USER_PHONE}).status_code == 202
        codes = [
            find_code(
                wait_for_dev_message(client, to=to, notification="password-reset-token")["text"]
            )
            for to in (USER, SMS_USER_PHONE)
        ]
    put_job(
        app.settings,
        status="failed",
        channel="sms",
        provider="twilio",
        destination="+4*******1234",
        last_error="twilio: Twilio 400 code 21610",
    )
    put_job(
        app.settings,
        status="undeliverable",
        provider_message_id="m-1",
        last_error="postmark: bounce HardBounce",
    )
    put_job(app.settings, status="delivered", provider_message_id="m-2", age=timedelta(hours=3))

    # Nobody but an operator learns that the page exists.
    with app.client() as anonymous:
        missing = anonymous.get("/admin/no-such-page")
        assert missing.status_code == 404
        for path in ("/admin/deliveries", "/admin/deliveries?status=failed"):
            hidden = anonymous.get(path, follow_redirects=False)
            assert (hidden.status_code, hidden.text) == (404, missing.text)
    with _signed_in(app, USER) as user:
        hidden = user.get("/admin/deliveries", follow_redirects=False)
        assert (hidden.status_code, hidden.text) == (404, missing.text)

    with _signed_in(app, ADMIN) as admin:
        shown = admin.get("/admin/deliveries")
        assert shown.status_code == 200
        assert shown.headers["cache-control"] == "no-store"
        assert "<script" not in shown.text
        page = shown.text
        assert _rows(page) == 5
        for masked in ("a***@example.com", "+1******0122", "+4*******1234"):
            assert masked in page
        for clear in (USER, SMS_USER_PHONE, *codes):
            assert clear not in page
        assert "twilio: Twilio 400 code 21610" in page
        assert "postmark: bounce HardBounce" in page
        assert _counts(page, "sent") == (2, 2)
        assert _counts(page, "failed") == (1, 1)
        assert _counts(page, "undeliverable") == (1, 1)
        assert _counts(page, "delivered") == (0, 1)
        assert _counts(page, "queued") == (0, 0)

        sms = admin.get("/admin/deliveries", params={"channel": "sms"}).text
        assert _rows(sms) == 2 and "+1******0122" in sms and "a***@example.com" not in sms
        assert '<option value="sms" selected>' in sms
        twilio = admin.get("/admin/deliveries", params={"provider": "twilio"}).text
        assert _rows(twilio) == 1 and "+4*******1234" in twilio
        failed = admin.get("/admin/deliveries", params={"status": "failed", "channel": "sms"}).text
        assert _rows(failed) == 1 and "code 21610" in failed
        mailbox_email = admin.get(
            "/admin/deliveries", params={"provider": "outbox", "channel": "email"}
        ).text
        assert _rows(mailbox_email) == 1 and "a***@example.com" in mailbox_email
        nothing = admin.get("/admin/deliveries", params={"status": "queued"}).text
        assert _rows(nothing) == 0 and "No deliveries match these filters." in nothing
        unknown = admin.get("/admin/deliveries", params={"status": "bogus'<b>"})
        assert unknown.status_code == 200
        assert "Unknown status ignored" in unknown.text and "bogus" not in unknown.text
        assert _rows(unknown.text) == 5

        revoked = _cli("users", "revoke-admin", ADMIN, data_dir=app.settings.data_dir)
        assert revoked.returncode == 0 and "is now not an operator" in revoked.stdout
        # The same session, the very next request: the role is read every time.
        assert admin.get("/admin/deliveries").status_code == 404
    audit = _cli("audit", "--event", "role_changed", data_dir=app.settings.data_dir)
    assert [line.split()[3] for line in audit.stdout.splitlines()] == ["user", "admin"]
    assert (
        _cli(
            "users", "grant-admin", "nobody@example.com", data_dir=app.settings.data_dir
        ).returncode
        == 1
    )


def test_deliveries_cli_list_show_and_retry(live_app: Callable[..., LiveApp]) -> None:
    app = live_app()
    data = app.settings.data_dir
    create_verified_account(app.settings, name="Ada", email=USER, phone="+14155550100")
    with app.client() as client:
        assert client.post("/send-token", json={"email": USER}).status_code == 202
        code = find_code(
            wait_for_dev_message(client, to=USER, notification="password-reset-token")["text"]
        )
    app.stop()  # no worker from here on: the queued job below must stay queued
    failed = put_job(
        app.settings,
        status="failed",
        channel="sms",
        provider="twilio",
        destination="+4*******1234",
        last_error="twilio: Twilio 400 code 21610",
    )
    waiting = put_job(
        app.settings,
        status="queued",
        channel="email",
        provider="smtp",
        keep_payload=True,
        expires_in=timedelta(minutes=4),
        due_in=timedelta(minutes=10),
        last_error="smtp: SMTP unreachable",
    )
    expired = put_job(
        app.settings,
        status="queued",
        keep_payload=True,
        expires_in=timedelta(minutes=-1),
        due_in=timedelta(minutes=1),
    )

    listed = _cli("deliveries", "list", data_dir=data)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 4
    assert code not in listed.stdout and USER not in listed.stdout
    sent = next(line for line in lines if " sent " in line)
    sent_id = sent.split()[2]
    assert "a***@example.com" in sent and "outbox" in sent and "password-reset-token" in sent
    assert any(failed in line and "code 21610" in line for line in lines)

    only_sms = _cli("deliveries", "list", "--channel", "sms", data_dir=data).stdout.splitlines()
    assert len(only_sms) == 1 and failed in only_sms[0]
    only_sent = _cli(
        "deliveries", "list", "--status", "sent", "--provider", "outbox", data_dir=data
    )
    assert only_sent.stdout.splitlines() == [sent]
    bad = _cli("deliveries", "list", "--status", "lost", data_dir=data)
    assert bad.returncode == 2

    shown = _cli("deliveries", "show", sent_id, data_dir=data)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^status +sent$", shown.stdout, re.M)
    assert re.search(r"^sealed message +erased$", shown.stdout, re.M)
    assert "attempts (1):" in shown.stdout and "a***@example.com" in shown.stdout
    assert code not in shown.stdout and USER not in shown.stdout
    assert _cli("deliveries", "show", "f" * 32, data_dir=data).returncode == 1

    # Ended jobs cannot be retried, and the refusal says why.
    for job_id, why in ((sent_id, "nothing to retry"), (failed, "cannot be retried")):
        refused = _cli("deliveries", "retry", job_id, data_dir=data)
        assert refused.returncode == 1
        assert why in refused.stderr and "erased" in refused.stderr
    too_late = _cli("deliveries", "retry", expired, data_dir=data)
    assert too_late.returncode == 1 and "expired" in too_late.stderr

    # A job still waiting out its backoff is made due now.
    before = datetime.now(UTC)
    retried = _cli("deliveries", "retry", waiting, data_dir=data)
    assert retried.returncode == 0, retried.stderr
    assert "is due now" in retried.stdout
    job, _ = read_job(app.settings, waiting)
    assert job.status == "queued" and job.next_attempt_at is not None
    assert before - timedelta(seconds=5) <= job.next_attempt_at <= datetime.now(UTC)
    details = _cli("deliveries", "show", waiting, data_dir=data).stdout
    assert re.search(r"^sealed message +kept until the job ends$", details, re.M)
    assert re.search(r"^next attempt +\d{4}-", details, re.M)
