"""The mount prefix: where resetflow's paths start in the browser's address bar.

resetflow's routes are ``/login``, ``/static/…``; a browser may reach them as
``/auth/login`` in two ways:

- a host app mounts it (``app.mount("/auth", create_app())``): Starlette then sets the
  ASGI ``root_path`` to ``/auth``;
- a reverse proxy strips ``/auth`` before passing the request on: nothing in the request
  says so, only ``RESETFLOW_BASE_URL`` (``https://example.org/auth``) does.

So the path of ``RESETFLOW_BASE_URL`` wins when it has one (it is also what messages link
to, so pages and messages agree); without one, the ``root_path`` is the prefix. Every
link, form action, redirect and asset URL resetflow writes goes through :func:`url`.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection
from starlette.responses import RedirectResponse
from starlette.types import Scope


def prefix_of(scope: Scope, base_path: str) -> str:
    """The prefix for this request: ``base_path`` (``RESETFLOW_BASE_URL``'s path, no
    trailing slash) when set, else the ASGI ``root_path``; ``""`` when neither."""
    if base_path:
        return base_path
    root: str = scope.get("root_path", "")
    return root.rstrip("/")


def route_path(scope: Scope) -> str:
    """The request's path as resetflow's routes see it: without the mount's ``root_path``
    (Starlette keeps the full path in ``scope["path"]`` when it mounts an app)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "").rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root) :] or "/"
    return path


def url(conn: HTTPConnection, path: str) -> str:
    """``path`` as the browser must ask for it: one of resetflow's own (``/login``) gets
    the mount prefix; an absolute URL (a ``return_to`` target) is left as it is."""
    if not path.startswith("/") or path.startswith("//"):
        return path
    return prefix_of(conn.scope, conn.app.state.services.settings.base_path) + path


def redirect(conn: HTTPConnection, path: str, *, status_code: int = 303) -> RedirectResponse:
    """A redirect to one of resetflow's own paths, under the mount prefix."""
    return RedirectResponse(url(conn, path), status_code=status_code)
