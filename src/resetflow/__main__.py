from __future__ import annotations

from resetflow.cli import main

main()
