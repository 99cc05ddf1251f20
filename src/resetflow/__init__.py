"""resetflow: self-hosted password reset and account recovery with email and SMS codes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resetflow.app import ResetflowApp

__version__ = "0.1.0"


def create_app(*args: Any, **kwargs: Any) -> ResetflowApp:
    """``from resetflow import create_app``: see :func:`resetflow.app.create_app`."""
    from resetflow.app import create_app as build

    return build(*args, **kwargs)
