"""The reset flow as a person does it: real Chromium, real forms, no JavaScript in the pages.

Codes are read from the dev mailbox (``/dev/outbox.json``) that the ``mailbox`` providers
write to. The browser starts once per module; every test gets a fresh context.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect

from tests.conftest import LiveApp
from tests.support.browser import LaunchedBrowser, launched_chromium, submit
from tests.support.flow import (
    NEW_PASSWORD,
    PASSWORD,
    dev_mailbox,
    find_code,
    sign_up_verified,
    wait_for_dev_message,
)

pytestmark = pytest.mark.browser

NAME = "Ada Lovelace"
EMAIL = "ada@example.com"
PHONE = "+14155550100"
RESET = "password-reset-token"
ENTER_TOKEN_SHOT = "/tmp/resetflow-enter-token.png"
ACCOUNT_SHOT = "/tmp/resetflow-account.png"


@pytest.fixture(scope="module")
def chromium() -> Iterator[LaunchedBrowser]:
    with launched_chromium() as launched:
        print(f"\nChromium started in {launched.startup_seconds:.2f}s")
        yield launched


@pytest.fixture
def context(chromium: LaunchedBrowser) -> Iterator[BrowserContext]:
    context = chromium.browser.new_context(viewport={"width": 1024, "height": 800})
    context.set_default_timeout(15_000)
    try:
        yield context
    finally:
        context.close()


def contact_for(preference: str) -> str:
    return EMAIL if preference == "email" else PHONE


def other_channel(preference: str) -> str:
    return "sms" if preference == "email" else "email"


def fact(page: Page, term: str) -> Locator:
    """The ``<dd>`` after the ``<dt>`` named ``term`` on /account."""
    return page.locator(f"xpath=//dt[normalize-space()='{term}']/following-sibling::dd[1]")


def reset_messages(client: httpx.Client) -> list[dict[str, Any]]:
    return [m for m in dev_mailbox(client) if m["notification"] == RESET]


@pytest.mark.parametrize("preference", ["email", "sms"])
def test_reset_through_the_pages(
    live_app: Callable[..., LiveApp], context: BrowserContext, preference: str
) -> None:
    app = live_app()
    base = app.url
    contact = contact_for(preference)
    page = context.new_page()

    with app.client() as mailbox:
        # 1. Create an account through the form.
        page.goto(f"{base}/")
        page.get_by_role("link", name="Create an account").click()
        expect(page).to_have_url(f"{base}/new-user")
        page.get_by_label("Name").fill(NAME)
        page.get_by_role("textbox", name="Email").fill(EMAIL)
        page.get_by_label("Mobile number").fill(PHONE)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("radio", name="SMS" if preference == "sms" else "Email").check()
        submit(page, "Create account")

        # 2. Confirm the preferred contact with the code sent to it.
        expect(page).to_have_url(f"{base}/verify-contact")
        where = "phone" if preference == "sms" else "email address"
        expect(page.locator(".notice")).to_contain_text(f"We sent a 6-digit code to your {where}")
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Confirm your {where}")
        # Nobody is signed in before the code is typed (R54).
        expect(page.get_by_text(f"Signed in as {NAME}")).to_have_count(0)
        welcome = wait_for_dev_message(mailbox, to=contact, notification="verify-contact")
        assert welcome["channel"] == preference
        page.get_by_label("6-digit code").fill(find_code(welcome["text"]))
        submit(page, "Confirm")
        expect(page).to_have_url(f"{base}/")
        expect(page.locator(".notice")).to_contain_text(
            "is verified. It can now be used to recover your account"
        )
        expect(page.get_by_text(f"Signed in as {NAME}")).to_be_visible()

        # 3. Sign out, then ask for a reset code. The other contact is typed on purpose:
        # the code must still go to the preferred (and only verified) contact.
        submit(page, "Sign out")
        expect(page).to_have_url(f"{base}/")
        expect(page.locator(".notice")).to_contain_text("You are signed out.")
        page.get_by_role("link", name="Forgot your password?").click()
        expect(page).to_have_url(f"{base}/forgot-password")
        if preference == "email":
            page.get_by_label("Mobile number").fill(PHONE)
        else:
            page.get_by_label("Email").fill(EMAIL)
        submit(page, "Send me a code")
        expect(page).to_have_url(f"{base}/enter-token")
        expect(page.locator("main")).to_contain_text("we sent it a 6-digit code")
        page.screenshot(path=ENTER_TOKEN_SHOT, full_page=True)

        # 4. The code went to the preferred channel only; a wrong code first.
        message = wait_for_dev_message(mailbox, to=contact, notification=RESET)
        assert message["channel"] == preference
        assert all(m["channel"] == preference for m in reset_messages(mailbox))
        code = find_code(message["text"])
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        page.get_by_label("6-digit code").fill(wrong)
        submit(page, "Continue")
        expect(page.get_by_role("alert")).to_contain_text("That code is not valid")
        code_box = page.get_by_label("6-digit code")
        expect(code_box).to_be_editable()
        expect(code_box).to_have_value("")
        code_box.fill(code)
        submit(page, "Continue")
        expect(page).to_have_url(f"{base}/new-password")

        # 5. Two different passwords, then the new one twice.
        page.get_by_label("New password").fill(NEW_PASSWORD)
        page.get_by_label("Type it again").fill(NEW_PASSWORD + " but different")
        submit(page, "Change password")
        expect(page.get_by_role("alert")).to_contain_text("The two passwords do not match.")
        expect(page.locator("#newPasswordConfirm-error")).to_be_visible()
        page.get_by_label("New password").fill(NEW_PASSWORD)
        page.get_by_label("Type it again").fill(NEW_PASSWORD)
        submit(page, "Change password")
        expect(page).to_have_url(f"{base}/login")
        expect(page.locator(".notice")).to_contain_text("Your password was changed.")

        # 6. The old password no longer works; the new one does.
        identifier = "Email" if preference == "email" else "Mobile number"
        page.get_by_label(identifier).fill(contact)
        page.get_by_label("Password").fill(PASSWORD)
        submit(page, "Sign in")
        expect(page.get_by_role("alert")).to_contain_text("password is not right")
        expect(page).not_to_have_url(re.compile(r"/account$"))
        page.get_by_label(identifier).fill(contact)
        page.get_by_label("Password").fill(NEW_PASSWORD)
        submit(page, "Sign in")
        expect(page).to_have_url(f"{base}/account")
        expect(page.get_by_role("heading", level=1)).to_have_text("Your account")
        expect(fact(page, "Name")).to_have_text(NAME)
        preferred, other = ("Email", "Mobile") if preference == "email" else ("Mobile", "Email")
        shown = {"Email": EMAIL, "Mobile": "+1 415-555-0100"}  # phones in international form
        expect(fact(page, preferred)).to_contain_text(shown[preferred])
        expect(fact(page, preferred).locator(".badge")).to_have_text("verified")
        expect(fact(page, other).locator(".badge")).to_have_text("not verified")
        expect(fact(page, "Codes go to")).to_have_text("SMS" if preference == "sms" else "Email")
        page.screenshot(path=ACCOUNT_SHOT, full_page=True)

        # Still one reset message, on the preferred channel, whatever the worker did since.
        resets = reset_messages(mailbox)
        assert [m["channel"] for m in resets] == [preference]
        assert not [m for m in resets if m["channel"] == other_channel(preference)]


def test_new_password_page_needs_a_verified_code(
    live_app: Callable[..., LiveApp], context: BrowserContext
) -> None:
    app = live_app()
    base = app.url
    with app.client() as client:
        sign_up_verified(client, name=NAME, email=EMAIL, phone=PHONE)

    # A fresh context, straight to /new-password: sent to ask for a code.
    page = context.new_page()
    page.goto(f"{base}/new-password")
    expect(page).to_have_url(f"{base}/forgot-password")
    expect(page.locator(".notice")).to_contain_text("Enter the code we sent you")

    # Made-up cookies grant nothing.
    context.clear_cookies()
    context.add_cookies(
        [
            {"name": "user_id", "value": "1", "url": base},
            {"name": "authenticated", "value": "true", "url": base},
            {"name": "resetflow_session", "value": "made-up-session-id-0123456789", "url": base},
        ]
    )
    page.goto(f"{base}/new-password")
    expect(page).to_have_url(f"{base}/forgot-password")
    session = [c for c in context.cookies(base) if c["name"] == "resetflow_session"]
    assert [c["value"] for c in session] != ["made-up-session-id-0123456789"]

    # A form post with this context's real CSRF token is still refused.
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert csrf
    answer = context.request.post(
        f"{base}/reset-password",
        form={"csrf_token": csrf, "newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
        max_redirects=0,
    )
    assert answer.status == 403, answer.text()
    assert "Enter the code we sent you before choosing a new password." in answer.text()

    with app.client() as client:
        new = client.post("/login", json={"email": EMAIL, "password": NEW_PASSWORD})
        assert new.status_code == 401
        old = client.post("/login", json={"email": EMAIL, "password": PASSWORD})
        assert old.status_code == 200
        assert old.json() == {"redirect": "/account"}
