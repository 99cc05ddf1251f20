"""The peers' virtual environments: each installed from PyPI at run time (pip, the
interpreter running the benchmark) under ``.bench-peers/<name>`` and reused while its
requirements stay the same. No third-party source is kept in the repository."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.common import BenchError

ROOT = Path(__file__).resolve().parents[2] / ".bench-peers"

# What each peer's environment holds; the versions installed are in the report.
REQUIREMENTS: dict[str, list[str]] = {
    "django": ["Django>=5.2,<7", "gunicorn>=23", "psycopg[binary]>=3.2"],
    "fastapi-users": [
        "fastapi-users[sqlalchemy]>=14,<16",
        "aiosqlite>=0.20",
        "uvicorn[standard]>=0.30",
        "aiosmtplib>=3",
    ],
}
# The distributions whose versions the report names.
REPORTED = {
    "django": ["Django", "gunicorn", "psycopg"],
    "fastapi-users": ["fastapi-users", "fastapi", "SQLAlchemy", "uvicorn", "pwdlib"],
}


def python_of(name: str, root: Path = ROOT) -> Path:
    return root / name / "bin" / "python"


def ensure(name: str, root: Path = ROOT) -> Path:
    """The environment's Python, creating or re-creating the environment if needed."""
    venv, wanted = root / name, "\n".join(REQUIREMENTS[name]) + "\n"
    marker = venv / "bench-requirements.txt"
    if marker.exists() and marker.read_text() == wanted and python_of(name, root).exists():
        return python_of(name, root)
    print(f"bench: installing {name} into {venv} (from PyPI)", file=sys.stderr)
    root.mkdir(parents=True, exist_ok=True)
    for argv in (
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(python_of(name, root)), "-m", "pip", "install", "--quiet", *REQUIREMENTS[name]],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)  # noqa: S603
        if done.returncode != 0:
            raise BenchError(f"{' '.join(argv[:4])} failed:\n{done.stdout}\n{done.stderr}")
    marker.write_text(wanted)
    return python_of(name, root)


def versions(name: str, root: Path = ROOT) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys; "
        "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    )
    done = subprocess.run(  # noqa: S603 (our own environment)
        [str(python_of(name, root)), "-c", code, *REPORTED[name]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return dict(json.loads(done.stdout)) if done.returncode == 0 else {}
