"""The whole flow in Chromium, unmounted and mounted in a host app at /auth, with an axe-core
audit (WCAG 2.2 A/AA rules) of every page it passes through, errors shown included.

axe-core comes bundled in axe-playwright-python (no network). It is injected by Playwright's
evaluate; the context bypasses the CSP only so that the audit can run, the pages themselves
carry no script.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import BrowserContext, Page, expect

from resetflow.config import Settings
from tests.conftest import LiveApp
from tests.support.browser import LaunchedBrowser, launched_chromium, submit
from tests.support.flow import NEW_PASSWORD, PASSWORD, find_code, wait_for_dev_message
from tests.support.mounted import PREFIX, mounted, page_urls
from tests.support.processes import clean_env, run_resetflow

pytestmark = pytest.mark.browser

WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
NAME = "Ada Lovelace"
EMAIL = "ada@example.com"
PHONE = "+14155550100"


@pytest.fixture(scope="module")
def chromium() -> Iterator[LaunchedBrowser]:
    with launched_chromium() as launched:
        yield launched


@pytest.fixture
def context(chromium: LaunchedBrowser) -> Iterator[BrowserContext]:
    context = chromium.browser.new_context(viewport={"width": 1024, "height": 800}, bypass_csp=True)
    context.set_default_timeout(15_000)
    try:
        yield context
    finally:
        context.close()


class Audited:
    """A page that is audited by axe, and whose links are checked for the prefix, each
    time it lands somewhere."""

    def __init__(self, page: Page, *, origin: str, prefix: str) -> None:
        self.page = page
        self.origin = origin
        self.prefix = prefix
        self.axe = Axe()
        self.audited: list[str] = []

    def at(self, path: str, what: str = "") -> None:
        expect(self.page).to_have_url(f"{self.origin}{self.prefix}{path}")
        self.audit(what or path)

    def audit(self, what: str) -> None:
        html = self.page.content()
        for url in page_urls(html):
            assert url.startswith(f"{self.prefix}/"), f"{what}: {url!r} lacks {self.prefix!r}"
        results = self.axe.run(
            self.page,
            options={
                "runOnly": {"type": "tag", "values": WCAG_TAGS},
                "resultTypes": ["violations"],
            },
        )
        assert results.violations_count == 0, f"{what}:\n{results.generate_report()}"
        self.audited.append(what)


def walk_the_flow(page: Page, *, origin: str, prefix: str, data_dir: Path) -> list[str]:
    """Sign up, verify, sign out, forgot password, code, new password, sign in, account;
    a wrong entry at each form first, so that every error state is audited too; then, made
    an operator, the delivery log."""
    web = Audited(page, origin=origin, prefix=prefix)
    mailbox = httpx.Client(base_url=f"{origin}{prefix}", timeout=30)
    try:
        page.goto(f"{origin}{prefix}/")
        web.at("/", "home")
        page.get_by_role("link", name="Create an account").click()
        web.at("/new-user")
        submit(page, "Create account")  # everything empty: field errors
        web.audit("/new-user with field errors")
        page.get_by_label("Name").fill(NAME)
        page.get_by_role("textbox", name="Email").fill(EMAIL)
        page.get_by_label("Mobile number").fill(PHONE)
        page.get_by_label("Password").fill(PASSWORD)
        submit(page, "Create account")
        web.at("/verify-contact")

        code = find_code(
            wait_for_dev_message(mailbox, to=EMAIL, notification="verify-contact")["text"]
        )
        page.get_by_label("6-digit code").fill(f"{(int(code) + 1) % 1_000_000:06d}")
        submit(page, "Confirm")
        expect(page.get_by_role("alert")).to_be_visible()
        web.audit("/verify-contact with an error")
        page.get_by_label("6-digit code").fill(code)
        submit(page, "Confirm")
        web.at("/", "home, signed in")

        submit(page, "Sign out")
        web.at("/", "home, signed out")
        page.get_by_role("link", name="Forgot your password?").click()
        web.at("/forgot-password")
        page.get_by_label("Email").fill("not an email")
        submit(page, "Send me a code")
        expect(page.get_by_role("alert")).to_be_visible()
        web.audit("/forgot-password with an error")
        page.get_by_label("Email").fill(EMAIL)
        submit(page, "Send me a code")
        web.at("/enter-token")

        code = find_code(
            wait_for_dev_message(mailbox, to=EMAIL, notification="password-reset-token")["text"]
        )
        page.get_by_label("6-digit code").fill(f"{(int(code) + 1) % 1_000_000:06d}")
        submit(page, "Continue")
        expect(page.get_by_role("alert")).to_be_visible()
        web.audit("/enter-token with an error")
        page.get_by_label("6-digit code").fill(code)
        submit(page, "Continue")
        web.at("/new-password")

        page.get_by_label("New password").fill(NEW_PASSWORD)
        page.get_by_label("Type it again").fill(NEW_PASSWORD + " but different")
        submit(page, "Change password")
        expect(page.get_by_role("alert")).to_be_visible()
        web.audit("/new-password with an error")
        page.get_by_label("New password").fill(NEW_PASSWORD)
        page.get_by_label("Type it again").fill(NEW_PASSWORD)
        submit(page, "Change password")
        web.at("/login")

        page.get_by_label("Email").fill(EMAIL)
        page.get_by_label("Password").fill(PASSWORD)  # the old one
        submit(page, "Sign in")
        expect(page.get_by_role("alert")).to_be_visible()
        web.audit("/login with an error")
        page.get_by_label("Email").fill(EMAIL)
        page.get_by_label("Password").fill(NEW_PASSWORD)
        submit(page, "Sign in")
        web.at("/account")
        expect(page.get_by_role("heading", level=1)).to_have_text("Your account")

        page.get_by_text("Change email address").click()
        page.get_by_label("New email address").fill("ada@example.net")
        page.locator("#password-email").fill("not the password at all")
        submit(page, "Send a code to the new email address")
        expect(page.get_by_role("alert")).to_be_visible()
        web.audit("/account with an error")
        page.get_by_label("New email address").fill("ada@example.net")
        page.locator("#password-email").fill(NEW_PASSWORD)
        submit(page, "Send a code to the new email address")
        web.at("/account/confirm-contact")

        page.goto(f"{origin}{prefix}/dev/outbox")
        web.at("/dev/outbox")

        granted = run_resetflow(
            "users",
            "grant-admin",
            EMAIL,
            env=clean_env(RESETFLOW_DATA_DIR=str(data_dir)),
            cwd=data_dir.parent,
        )
        assert granted.returncode == 0, granted.stderr
        page.goto(f"{origin}{prefix}/admin/deliveries")
        expect(page.get_by_role("heading", level=1)).to_have_text("Deliveries")
        web.at("/admin/deliveries")
    finally:
        mailbox.close()
    return web.audited


def test_unmounted_flow_passes_axe(
    live_app: Callable[..., LiveApp], context: BrowserContext
) -> None:
    app = live_app()
    audited = walk_the_flow(
        context.new_page(), origin=app.url, prefix="", data_dir=app.settings.data_dir
    )
    assert len(audited) == 20


def test_mounted_flow_passes_axe(
    make_settings: Callable[..., Settings], context: BrowserContext, tmp_path: Path
) -> None:
    """The same flow through a host app that mounts resetflow at /auth: every page, link
    and redirect stays under /auth (the session cookie is scoped to it)."""
    data_dir = tmp_path / "data"  # make_settings' data directory
    with mounted(make_settings, data_dir=data_dir) as host:
        audited = walk_the_flow(context.new_page(), origin=host, prefix=PREFIX, data_dir=data_dir)
    assert len(audited) == 20
    assert {c["path"] for c in context.cookies()} == {PREFIX}
