"""``resetflow.cli.heap.settle``: what ``serve`` and ``worker`` do to the collector once
started (docs/performance.md has what it saves). In a child process, since it changes
the collector of the whole process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from resetflow.cli.heap import YOUNG_GENERATION_THRESHOLD

PROBE = """
import gc, json
from resetflow.app import create_app
from resetflow.cli import heap

before = (gc.get_freeze_count(), gc.get_threshold())
app = create_app()
heap.settle()
cycle = []
cycle.append(cycle)
del cycle
print(json.dumps({
    "before": before,
    "frozen": gc.get_freeze_count(),
    "threshold": gc.get_threshold(),
    "cycle_collected": gc.collect() >= 1,
}))
"""


def test_settle_freezes_what_start_up_built_and_still_collects_new_cycles(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "RESETFLOW_DATA_DIR": str(tmp_path / "data")},
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    frozen_before, (_, middle, oldest) = found["before"]
    assert frozen_before == 0
    # The app's modules, routes, tables and templates: tens of thousands of objects.
    assert found["frozen"] > 10_000
    # Only the young generation's threshold changes.
    assert found["threshold"] == [YOUNG_GENERATION_THRESHOLD, middle, oldest]
    assert found["cycle_collected"]
