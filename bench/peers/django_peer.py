"""The Django peer: ``django.contrib.auth``'s ``PasswordResetView`` as a project would
ship it (Django's default middleware, the SMTP e-mail backend, the default password
hasher), in one module, run by gunicorn with sync workers in the ``django``
environment (bench/peers/envs.py). Settings from the environment:

- ``PEER_DATABASE_URL``: ``sqlite:////abs/path.db`` or ``postgresql://user@host:port/db``
- ``PEER_SMTP_PORT``: the SMTP sink on 127.0.0.1

    gunicorn --workers 2 --bind 127.0.0.1:8001 django_peer:application
    python django_peer.py setup EMAILS_FILE     # migrate, then one user per address

``POST /forgot-password`` (a form with ``email``, and the CSRF token and cookie a browser
gets from ``GET /forgot-password``: the view is CSRF-protected by Django itself) answers
302 whether the address is known or not; ``GET /healthz`` answers a constant JSON body
through the same middleware.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import django
from django.conf import settings

HERE = Path(__file__).resolve().parent
PASSWORD = "bench password, never used to sign in"


def database() -> dict[str, Any]:
    url = urlsplit(os.environ["PEER_DATABASE_URL"])
    if url.scheme == "sqlite":
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": url.path,
            "OPTIONS": {"timeout": 30},
        }
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": url.path.lstrip("/"),
        "USER": url.username or "postgres",
        "PASSWORD": url.password or "",
        "HOST": url.hostname or "127.0.0.1",
        "PORT": url.port or 5432,
        "CONN_MAX_AGE": None,  # a connection per worker, kept (the usual production set-up)
    }


settings.configure(
    DEBUG=False,
    SECRET_KEY=os.environ.get("PEER_SECRET_KEY", "bench-peer-not-a-secret-" + "x" * 40),
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
    ],
    MIDDLEWARE=[
        "django.middleware.security.SecurityMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    ],
    DATABASES={"default": database()},
    TEMPLATES=[
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "DIRS": [str(HERE / "django_templates")],
        }
    ],
    EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
    EMAIL_HOST="127.0.0.1",
    EMAIL_PORT=int(os.environ.get("PEER_SMTP_PORT", "25")),
    DEFAULT_FROM_EMAIL="accounts@example.com",
    USE_TZ=True,
)
django.setup()

from django.contrib.auth import views as auth_views  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("healthz", healthz),
    path(
        "forgot-password",
        auth_views.PasswordResetView.as_view(success_url="/forgot-password/done"),
    ),
    path(
        "reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
]

application = get_wsgi_application()


def setup(emails_file: str) -> None:
    """Migrate, then one active user with a usable password per address (bulk)."""
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    hashed = make_password(PASSWORD)
    emails = Path(emails_file).read_text().split()
    for start in range(0, len(emails), 10_000):
        User.objects.bulk_create(
            User(username=f"u{start + i}", email=address, password=hashed)
            for i, address in enumerate(emails[start : start + 10_000])
        )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM" if connection.vendor == "sqlite" else "VACUUM ANALYZE auth_user")


if __name__ == "__main__" and sys.argv[1:2] == ["setup"]:
    setup(sys.argv[2])
