"""Your look: the accent colour as a generated stylesheet and the logo, from the settings.

The CSP allows no inline style (security.py), so the colour cannot go into a ``style``
attribute: ``GET /static/theme.css`` is built once from ``RESETFLOW_ACCENT_COLOR`` and
linked with a version taken from its content, so browsers may keep it for a year. Text
colours are derived so that WCAG AA contrast (4.5:1) holds whatever the accent is.
"""

from __future__ import annotations

import hashlib
import mimetypes

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from resetflow.config import Settings

router = APIRouter(include_in_schema=False)
AA_CONTRAST = 4.5
WHITE = (255, 255, 255)
INK = (17, 24, 39)  # the text colour of the pages (#111827)
PAGE = (243, 244, 246)  # the page background around the card (#f3f4f6): footer links
CACHE_FOREVER = "public, max-age=31536000, immutable"


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return (int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16))


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _luminance(rgb: tuple[int, int, int]) -> float:
    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """The WCAG contrast ratio of two colours (1 to 21)."""
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _darken_until_readable(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """``rgb`` mixed towards black in small steps until it reads on the card (white) and
    on the page around it (links)."""
    for step in range(21):
        mixed = tuple(round(v * (1 - step / 20)) for v in rgb)
        candidate = (mixed[0], mixed[1], mixed[2])
        if min(contrast(candidate, WHITE), contrast(candidate, PAGE)) >= AA_CONTRAST:
            return candidate
    return (0, 0, 0)


def theme_css(accent: str) -> str:
    """The stylesheet for one accent colour: buttons filled with it, links and focus in a
    shade of it that reads on white, button text white or ink, whichever reads better."""
    rgb = _rgb(accent)
    on_accent = WHITE if contrast(rgb, WHITE) >= contrast(rgb, INK) else INK
    link = _darken_until_readable(rgb)
    return (
        "/* Generated from RESETFLOW_ACCENT_COLOR. */\n"
        ":root {\n"
        f"  --accent: {accent};\n"
        f"  --on-accent: {_hex(on_accent)};\n"
        f"  --accent-text: {_hex(link)};\n"
        "}\n"
    )


def theme_version(settings: Settings) -> str:
    """Changes whenever the stylesheet does, so that a cached copy is never stale."""
    return hashlib.sha256(theme_css(settings.accent_color).encode()).hexdigest()[:12]


@router.get("/static/theme.css")
async def theme(request: Request) -> Response:
    settings: Settings = request.app.state.services.settings
    return Response(
        theme_css(settings.accent_color),
        media_type="text/css",
        headers={"cache-control": CACHE_FOREVER},
    )


@router.get("/static/logo")
async def logo(request: Request) -> Response:
    """The logo file named by RESETFLOW_LOGO_URL under RESETFLOW_PAGES_DIR (checked at
    start-up); 404 when the logo is an https:// URL or unset."""
    settings: Settings = request.app.state.services.settings
    path = settings.logo_file
    if path is None or not path.is_file():
        return Response(status_code=404)
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(
        path, media_type=media_type, headers={"cache-control": "public, max-age=3600"}
    )
