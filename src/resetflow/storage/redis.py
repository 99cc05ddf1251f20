"""How resetflow talks to Redis: short timeouts and a few quick retries, so that a
restarted server (whose old connections are dead) is used again at the next request."""

from __future__ import annotations

from typing import Any

from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


def client_options() -> dict[str, Any]:
    """Keyword arguments for ``redis.asyncio.Redis.from_url``."""
    return {
        "socket_timeout": 2.0,
        "socket_connect_timeout": 2.0,
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "health_check_interval": 10,
    }
