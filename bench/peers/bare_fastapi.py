"""A bare FastAPI app (one ``/healthz`` route, the same JSON as resetflow's) under the
uvicorn settings of ``resetflow serve --workers N``: the floor of the "thin edge" target.

    python -m bench.peers.bare_fastapi --port 8001 --workers 2
"""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from bench.common import server_arguments
from resetflow.logs import logging_config
from resetflow.web.nodelay import HTTP_PROTOCOL

app = FastAPI()


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    args = server_arguments(__doc__.split("\n\n")[0])
    # What resetflow/cli/server.py's serve passes to uvicorn.run.
    uvicorn.run(
        "bench.peers.bare_fastapi:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        http=HTTP_PROTOCOL,
        proxy_headers=False,
        server_header=False,
        log_config=logging_config(),
    )


if __name__ == "__main__":
    main()
