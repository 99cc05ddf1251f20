"""resetflow: self-hosted password reset and account recovery with email and SMS codes."""

from __future__ import annotations

__version__ = "0.1.0"
