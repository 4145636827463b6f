"""Shared fixtures: a real Redis-protocol server for the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from pipeline.embedded import EmbeddedRedis, embedded_redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """One embedded Redis-protocol server (valkey) for the whole session."""
    with embedded_redis() as server:
        yield server


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A client of :func:`redis_server` on an empty database."""
    client = redis.Redis.from_url(redis_server.url, socket_timeout=10, socket_connect_timeout=5)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()
