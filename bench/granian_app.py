"""resetflow's app under granian instead of uvicorn, for the server comparison in
docs/performance.md ("Server: granian against uvicorn"). Benchmark only: ``resetflow
serve`` still runs uvicorn. It does what ``serve --workers N`` does around the server
(the metrics shared in one temporary directory, resetflow's JSON logging with the access
log on, each process building its own app with ``web_process_app``), and runs from a
virtual environment of its own with granian installed (granian is not a dependency):

    python3 -m venv /tmp/granian-venv
    /tmp/granian-venv/bin/pip install -c requirements/constraints.txt -e . granian
    /tmp/granian-venv/bin/python -m bench.granian_app --port 8002 --workers 2
"""

from __future__ import annotations

import os
import tempfile

from granian import Granian  # type: ignore[import-not-found]

from bench.common import server_arguments
from resetflow.logs import logging_config


def main() -> None:
    args = server_arguments(__doc__.split("\n\n")[0])
    with tempfile.TemporaryDirectory(prefix="resetflow-metrics-") as directory:
        os.environ.setdefault("RESETFLOW_METRICS_DIR", directory)
        Granian(
            "resetflow.cli.server:web_process_app",
            factory=True,
            address=args.host,
            port=args.port,
            interface="asgi",
            workers=args.workers,
            loop="uvloop",
            log_dictconfig=logging_config(),
            log_access=True,
        ).serve()


if __name__ == "__main__":
    main()
