"""Loading reference data into Redis with an atomic version switch (spec section 2).

:func:`load_to_redis` validates the directory like the rating core would, writes a
complete new version under new keys, checks the row counts, then switches
``ns:current`` in one ``SET ... GET`` and only then unlinks the previous version, so
readers (:mod:`pipeline.refdata.redis_read`) see the old version or the new one.
One load at a time runs, under ``ns:load-lock``; keys are laid out as
:mod:`pipeline.refdata.redis_keys` says. Phone numbers are never logged.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import redis
from redis.typing import EncodableT

from pipeline.errors import ReferenceStoreError
from pipeline.refdata.files import build_reference_data, directory_version, read_reference_set
from pipeline.refdata.redis_keys import (
    DEFAULT_NAMESPACE,
    LAYOUTS,
    SEP,
    Keys,
    as_text,
    as_text_or_none,
    redis_errors,
)

log = logging.getLogger(__name__)

#: Fields per HSET command and HSET commands per pipeline round trip when loading.
CHUNK_FIELDS = 10_000
CHUNKS_PER_ROUND_TRIP = 10
#: Lock expiry: a crashed loader blocks other loaders for at most this long.
LOAD_LOCK_SECONDS = 900


def load_to_redis(
    client: redis.Redis, directory: Path, *, namespace: str = DEFAULT_NAMESPACE
) -> str:
    """Validate ``directory`` and publish it as the current version; return the version.

    A version already current is left alone. Raises :class:`ReferenceDataError` for bad
    files (Redis untouched) and :class:`ReferenceStoreError` when Redis fails or another
    load holds the lock (the current version then stays as it was).
    """
    keys = Keys(namespace)
    with redis_errors("reading the reference data version"):
        current = as_text_or_none(client.get(keys.current))
    if current is not None and current == directory_version(directory):
        log.info("reference data %s is already current", current)
        return current  # same bytes as a version validated when it was loaded
    version, tables = read_reference_set(directory)
    build_reference_data(version, tables)  # refuse what the rating core could not index
    with redis_errors("loading reference data"):
        lock = client.lock(keys.lock, timeout=LOAD_LOCK_SECONDS)
        if not lock.acquire(blocking=False):
            raise ReferenceStoreError("another reference data load is in progress")
        try:
            if as_text_or_none(client.get(keys.current)) == version:
                return version
            _write_version(client, keys, version, tables)
            previous = as_text_or_none(client.set(keys.current, version, get=True))
            log.info("reference data switched from %s to %s", previous, version)
            _drop_other_versions(client, keys, keep=version)
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:
                log.warning("the reference data load lock expired before the load finished")
    return version


def _write_version(
    client: redis.Redis, keys: Keys, version: str, tables: Mapping[str, pa.Table]
) -> None:
    """Write every table of ``version`` under its own keys and check the row counts."""
    client.unlink(*keys.all_of(version))  # leftovers of an interrupted load (never current)
    client.sadd(keys.versions, version)
    meta: dict[EncodableT, EncodableT] = {"loaded_at": _now()}
    for layout in LAYOUTS:
        table = tables[layout.table]
        key = keys.table(version, layout.name)
        fields = table.column(layout.key).to_pylist()
        values = _join(table, layout.values).to_pylist()
        with client.pipeline(transaction=False) as pipe:
            for n, start in enumerate(range(0, len(fields), CHUNK_FIELDS), start=1):
                stop = start + CHUNK_FIELDS
                chunk = dict(zip(fields[start:stop], values[start:stop], strict=True))
                pipe.hset(key, mapping=chunk)
                if n % CHUNKS_PER_ROUND_TRIP == 0:
                    pipe.execute()
            pipe.set(keys.arrow(version, layout.name), _to_ipc(table))
            pipe.hlen(key)
            stored = pipe.execute()[-1]
        if int(stored) != table.num_rows:
            raise ReferenceStoreError(f"{key}: wrote {table.num_rows} entries, Redis has {stored}")
        meta[layout.name] = table.num_rows
    client.hset(keys.meta(version), mapping=meta)


def _drop_other_versions(client: redis.Redis, keys: Keys, *, keep: str) -> None:
    """Unlink every recorded version but ``keep`` (only after the switch to ``keep``)."""
    for old in sorted(as_text(v) for v in client.smembers(keys.versions)):
        if old != keep:
            client.unlink(*keys.all_of(old))
            client.srem(keys.versions, old)


def _join(table: pa.Table, columns: tuple[str, ...]) -> pa.ChunkedArray:
    if len(columns) == 1:
        return table.column(columns[0])
    return pc.binary_join_element_wise(*(table.column(c) for c in columns), SEP)


def _to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
