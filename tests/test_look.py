"""Your look (SPEC §9): RESETFLOW_PRODUCT_NAME, RESETFLOW_LOGO_URL, RESETFLOW_ACCENT_COLOR and
RESETFLOW_PAGES_DIR. Bad values fail at start-up with one line naming the variable; the
CSP stays as strict as it was (no inline style: the colour comes in a stylesheet)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from resetflow.config import ConfigError, load_settings
from resetflow.web.security import CONTENT_SECURITY_POLICY
from resetflow.web.theme import WHITE, contrast, theme_css
from tests.conftest import LiveApp
from tests.support.flow import sign_up, wait_for_dev_message

SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b'<rect width="10" height="10"/></svg>'
)


@pytest.fixture
def pages_dir(tmp_path: Path) -> Path:
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "logo.svg").write_bytes(SVG)
    (tmp_path / "outside.png").write_bytes(b"\x89PNG")
    return pages


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"product_name": ""}, "RESETFLOW_PRODUCT_NAME"),
        ({"product_name": "x" * 61}, "RESETFLOW_PRODUCT_NAME"),
        ({"product_name": "Acme\x07"}, "RESETFLOW_PRODUCT_NAME"),
        ({"accent_color": "red"}, "RESETFLOW_ACCENT_COLOR"),
        ({"accent_color": "#12345"}, "RESETFLOW_ACCENT_COLOR"),
        ({"accent_color": "#12345g"}, "RESETFLOW_ACCENT_COLOR"),
        ({"accent_color": "#123456;}"}, "RESETFLOW_ACCENT_COLOR"),
        ({"logo_url": "http://cdn.example.org/logo.png"}, "RESETFLOW_LOGO_URL"),
        ({"logo_url": "https://"}, "RESETFLOW_LOGO_URL"),
        ({"logo_url": "https://cdn.example.org/a logo.png"}, "RESETFLOW_LOGO_URL"),
        ({"logo_url": "logo.svg"}, "RESETFLOW_LOGO_URL"),  # no pages dir
        ({"logo_url": "missing.png", "pages_dir": "PAGES"}, "RESETFLOW_LOGO_URL"),
        ({"logo_url": "../outside.png", "pages_dir": "PAGES"}, "RESETFLOW_LOGO_URL"),
        ({"logo_url": "logo.txt", "pages_dir": "PAGES"}, "RESETFLOW_LOGO_URL"),
        ({"pages_dir": "/no/such/directory"}, "RESETFLOW_PAGES_DIR"),
        ({"cookie_path": "auth"}, "RESETFLOW_COOKIE_PATH"),
        ({"cookie_path": "/auth; Domain=evil.example"}, "RESETFLOW_COOKIE_PATH"),
    ],
)
def test_bad_look_fails_at_start_up_with_one_line(
    tmp_path: Path, pages_dir: Path, overrides: dict[str, Any], variable: str
) -> None:
    (pages_dir / "logo.txt").write_text("not a picture")
    values = {k: (str(pages_dir) if v == "PAGES" else v) for k, v in overrides.items()}
    with pytest.raises(ConfigError) as caught:
        load_settings(data_dir=tmp_path, _env_file=None, **values)
    message = str(caught.value)
    assert message.startswith(f"{variable}:"), message
    assert "\n" not in message


def test_accent_colour_comes_in_a_cacheable_stylesheet(live_app: Callable[..., LiveApp]) -> None:
    app = live_app(accent_color="#FFCC00")
    with app.client() as client:
        page = client.get("/login")
        link = re.search(r'href="(/static/theme\.css\?v=[0-9a-f]+)"', page.text)
        assert link, "the pages link the generated stylesheet"
        theme = client.get(link.group(1))
    assert theme.status_code == 200
    assert theme.headers["content-type"].startswith("text/css")
    assert "immutable" in theme.headers["cache-control"]
    assert "--accent: #ffcc00;" in theme.text
    # No inline style anywhere, and the CSP is the strict one, unchanged.
    assert "style=" not in page.text and "<style" not in page.text
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "style-src 'self';" in CONTENT_SECURITY_POLICY


@pytest.mark.parametrize("accent", ["#ffcc00", "#2563eb", "#00ff00", "#000000", "#ffffff"])
def test_theme_text_colours_read_whatever_the_accent(accent: str) -> None:
    """Button text on the accent and links in a shade of it keep WCAG AA contrast (4.5:1)."""
    values = dict(re.findall(r"--([a-z-]+): (#[0-9a-f]{6});", theme_css(accent)))

    def rgb(hex_colour: str) -> tuple[int, int, int]:
        return (int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16))

    assert values["accent"] == accent
    assert contrast(rgb(values["on-accent"]), rgb(accent)) >= 4.5
    assert contrast(rgb(values["accent-text"]), WHITE) >= 4.5
    assert contrast(rgb(values["accent-text"]), (243, 244, 246)) >= 4.5


def test_logo_under_the_pages_dir_is_served_from_a_route(
    live_app: Callable[..., LiveApp], pages_dir: Path
) -> None:
    app = live_app(pages_dir=str(pages_dir), logo_url="logo.svg")
    with app.client() as client:
        page = client.get("/")
        assert '<img src="/static/logo" alt="" class="logo">' in page.text
        logo = client.get("/static/logo")
    assert logo.status_code == 200
    assert logo.content == SVG
    assert logo.headers["content-type"].startswith("image/svg+xml")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_https_logo_is_allowed_by_its_exact_url_only(live_app: Callable[..., LiveApp]) -> None:
    logo = "https://cdn.example.org/brand/logo.png"
    app = live_app(logo_url=logo)
    with app.client() as client:
        page = client.get("/")
        assert client.get("/static/logo").status_code == 404
    assert f'<img src="{logo}" alt="" class="logo">' in page.text
    policy = page.headers["content-security-policy"]
    assert f"img-src 'self' {logo};" in policy
    assert policy.replace(f" {logo}", "") == CONTENT_SECURITY_POLICY


def test_page_templates_from_the_pages_dir_win_file_by_file(
    live_app: Callable[..., LiveApp], pages_dir: Path
) -> None:
    (pages_dir / "login.html").write_text(
        '{% extends "base.html" %}{% block title %}Come in{% endblock %}'
        "{% block content %}<h1>Our own sign-in page</h1>"
        '<form method="post" action="{{ url("/login") }}"></form>{% endblock %}'
    )
    app = live_app(pages_dir=str(pages_dir), product_name="Acme ID")
    with app.client() as client:
        login = client.get("/login")
        forgot = client.get("/forgot-password")
    assert "<h1>Our own sign-in page</h1>" in login.text
    assert "<title>Come in · Acme ID</title>" in login.text
    assert "Forgot your password?" in forgot.text  # the shipped page fills the rest


def test_product_name_in_pages_and_messages(live_app: Callable[..., LiveApp]) -> None:
    app = live_app(product_name="Acme <ID>")
    with app.client() as client:
        page = client.get("/")
        assert "<title>Welcome · Acme &lt;ID&gt;</title>" in page.text
        assert "<h1>Acme &lt;ID&gt;</h1>" in page.text
        assert "<span>Acme &lt;ID&gt;</span>" in page.text  # the header
        assert "Acme <ID>" not in page.text
        assert sign_up(client).status_code == 201
        message = wait_for_dev_message(client, to="ada@example.com", notification="verify-contact")
    assert message["text"].rstrip().endswith("— Acme <ID>")
    assert "— Acme &lt;ID&gt;" in message["html"]
