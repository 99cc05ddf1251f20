"""The command-line options the wrk benchmarks (``bench.load``, ``bench.peers``) share."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.stores import DEFAULT_PG, DEFAULT_REDIS


def add_load_options(parser: argparse.ArgumentParser, *, users: str, threads: int) -> None:
    parser.add_argument("--users", default=users, help="comma-separated user counts")
    parser.add_argument("--duration", type=int, default=15, help="seconds of each wrk run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--threads", type=int, default=threads, help="wrk threads")
    parser.add_argument("--database-url", default=DEFAULT_PG, help="PostgreSQL to create on")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="Redis for PostgreSQL runs")
    parser.add_argument("--seed", type=int, default=1, help="random seed for addresses")
    parser.add_argument("--json", type=Path, default=None, help="write all results here")
    parser.add_argument("--keep", action="store_true", help="keep temporary directories")


def check_load_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Validates the shared options; ``args.users`` becomes a list of counts."""
    try:
        args.users = [int(u) for u in args.users.split(",") if u.strip()]
    except ValueError:
        parser.error("--users takes comma-separated integers")
    if not args.users or not all(1 <= u <= 5_000_000 for u in args.users):
        parser.error("--users: each between 1 and 5,000,000")
    if not 1 <= args.duration <= 300:
        parser.error("--duration must be between 1 and 300 seconds")
    if not 1 <= args.connections <= 512:
        parser.error("--connections must be between 1 and 512")
    if not 1 <= args.threads <= min(8, args.connections):
        parser.error("--threads must be between 1 and min(8, connections)")
    if not args.database_url.startswith("postgresql"):
        parser.error("--database-url must be a postgresql+asyncpg:// URL")
