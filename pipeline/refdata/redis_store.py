"""Reference data in Redis with an atomic version switch (spec section 2).

Key layout (``ns`` defaults to ``cdr:ref``; ``V`` is the content version of the
directory, :func:`pipeline.refdata.files.reference_version`, so files and Redis agree):

==========================  ======  ==================================================
key                         type    content
==========================  ======  ==================================================
``ns:current``              string  the version readers use
``ns:versions``             set     versions whose keys may exist (for clean-up)
``ns:load-lock``            string  held by the one loader running (expires)
``ns:v:V:npa``              hash    npa -> ``region|state``
``ns:v:V:npanxx``           hash    prefix -> ``ocn|state|rate_center``
``ns:v:V:ocn``              hash    ocn -> ``category|carrier_name``
``ns:v:V:lnp``              hash    tn -> ``ocn|lrn``
``ns:v:V:accounts``         hash    account_id ->
                                    ``tariff_id|enforce_minute_cap|toll_free_flat_per_min``
``ns:v:V:blocklist``        hash    prefix -> reason
``ns:v:V:arrow:T``          string  table ``T`` (one of the hash names above) as an
                                    Arrow IPC stream (zstd), for bulk reads
``ns:v:V:meta``             hash    row count per table, ``loaded_at``
==========================  ======  ==================================================

The hashes serve point lookups (the streaming path asks ``lnp`` per batch) and
operators (``HGET cdr:ref:v:V:npa 907``). In a hash value only the last field is free
text; the fields before it are validated codes that cannot contain ``|``. The Arrow
copies serve whole-table reads (:meth:`RedisReferenceReader.snapshot`,
:func:`read_tables_from_redis`): one ``GET`` instead of parsing millions of hash
fields in Python.

Atomicity: :func:`load_to_redis` writes a complete new version under new keys, checks
the row counts, then switches ``ns:current`` in one ``SET ... GET`` and only then
unlinks the previous version. Every read resolves ``ns:current`` and reads the keys of
that version inside one Lua script, which Redis runs atomically: a reader sees the
old version or the new one, never a mix, and never a half-deleted version.

Scripts touch keys derived from ``ns:current``, so this needs a standalone Redis (or
one shard), not Redis Cluster. Phone numbers are never logged.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import redis
from redis.typing import EncodableT

from pipeline.errors import ReferenceStoreError
from pipeline.rating.reference import ReferenceData
from pipeline.refdata.files import (
    REFERENCE_FILES,
    build_reference_data,
    directory_version,
    read_reference_set,
)

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "cdr:ref"
SEP = "|"
#: Fields per HSET command and HSET commands per pipeline round trip when loading.
CHUNK_FIELDS = 10_000
CHUNKS_PER_ROUND_TRIP = 10
#: Lock expiry: a crashed loader blocks other loaders for at most this long.
LOAD_LOCK_SECONDS = 900
#: Fields per HMGET inside the Lua script (Lua's ``unpack`` has a stack limit).
_LUA_HMGET_CHUNK = 4000

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class _Layout:
    """How one reference table maps to Redis."""

    table: str  # key of REFERENCE_FILES
    name: str  # Redis key suffix
    key: str  # column used as the hash field
    values: tuple[str, ...]  # columns joined with SEP into the hash value (last: free text)


LAYOUTS: tuple[_Layout, ...] = (
    _Layout("npa_regions", "npa", "npa", ("region", "state")),
    _Layout("npanxx", "npanxx", "prefix", ("ocn", "state", "rate_center")),
    _Layout("ocn", "ocn", "ocn", ("category", "carrier_name")),
    _Layout("lnp", "lnp", "tn", ("ocn", "lrn")),
    _Layout(
        "accounts",
        "accounts",
        "account_id",
        ("tariff_id", "enforce_minute_cap", "toll_free_flat_per_min"),
    ),
    _Layout("blocklist", "blocklist", "prefix", ("reason",)),
)


@dataclass(frozen=True)
class Keys:
    """Key names of one namespace."""

    namespace: str = DEFAULT_NAMESPACE

    @property
    def current(self) -> str:
        return f"{self.namespace}:current"

    @property
    def versions(self) -> str:
        return f"{self.namespace}:versions"

    @property
    def lock(self) -> str:
        return f"{self.namespace}:load-lock"

    @property
    def version_prefix(self) -> str:
        return f"{self.namespace}:v:"

    def table(self, version: str, name: str) -> str:
        """The hash of table ``name`` (``npa``, ``npanxx``, ``ocn``, ``lnp``...)."""
        return f"{self.namespace}:v:{version}:{name}"

    def arrow(self, version: str, name: str) -> str:
        """The Arrow IPC copy of table ``name``."""
        return f"{self.namespace}:v:{version}:arrow:{name}"

    def meta(self, version: str) -> str:
        return f"{self.namespace}:v:{version}:meta"

    def all_of(self, version: str) -> list[str]:
        """Every key of one version."""
        return [
            *(self.table(version, layout.name) for layout in LAYOUTS),
            *(self.arrow(version, layout.name) for layout in LAYOUTS),
            self.meta(version),
        ]


class VersionChanged(ReferenceStoreError):
    """Redis now serves another version than the caller's snapshot: refresh and retry."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(
            f"reference data changed from {expected} to {actual}; refresh the snapshot"
        )
        self.expected = expected
        self.actual = actual


@contextmanager
def _redis_errors(what: str) -> Iterator[None]:
    """Translate redis-py exceptions into :class:`ReferenceStoreError`."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise ReferenceStoreError(f"Redis unreachable while {what}: {exc}") from exc
    except redis.RedisError as exc:
        raise ReferenceStoreError(f"Redis refused {what}: {exc}") from exc


def connect(url: str, *, timeout: float = 10.0) -> redis.Redis:
    """A synchronous client for ``url`` (``redis://[:password@]host:port/db``).

    No connection is made until the first command.
    """
    try:
        return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    except ValueError as exc:
        raise ReferenceStoreError(f"bad Redis URL: {exc}") from exc


# ------------------------------------------------------------------------------ loading
def load_to_redis(
    client: redis.Redis, directory: Path, *, namespace: str = DEFAULT_NAMESPACE
) -> str:
    """Validate ``directory`` and publish it as the current version; return the version.

    A version already current is left alone. Raises :class:`ReferenceDataError` for bad
    files (Redis untouched) and :class:`ReferenceStoreError` when Redis fails or another
    load holds the lock (the current version then stays as it was).
    """
    keys = Keys(namespace)
    with _redis_errors("reading the reference data version"):
        current = _text_or_none(client.get(keys.current))
    if current is not None and current == directory_version(directory):
        log.info("reference data %s is already current", current)
        return current  # same bytes as a version validated when it was loaded
    version, tables = read_reference_set(directory)
    build_reference_data(version, tables)  # refuse what the rating core could not index
    with _redis_errors("loading reference data"):
        lock = client.lock(keys.lock, timeout=LOAD_LOCK_SECONDS)
        if not lock.acquire(blocking=False):
            raise ReferenceStoreError("another reference data load is in progress")
        try:
            if _text_or_none(client.get(keys.current)) == version:
                return version
            _write_version(client, keys, version, tables)
            previous = _text_or_none(client.set(keys.current, version, get=True))
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
    for old in sorted(_text(v) for v in client.smembers(keys.versions)):
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


def _from_ipc(data: bytes, table: str) -> pa.Table:
    try:
        loaded = pa.ipc.open_stream(data).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise ReferenceStoreError(f"corrupt Arrow copy of {table} in Redis: {exc}") from exc
    if tuple(loaded.column_names) != REFERENCE_FILES[table][1]:
        raise ReferenceStoreError(f"Arrow copy of {table} in Redis has unexpected columns")
    return loaded


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------ reading
#: KEYS[1] current; ARGV[1] "ns:v:", ARGV[2] ":lnp", ARGV[3..] numbers.
#: Returns {version, {ocn or false, ...}}, or false when nothing is loaded.
_LOOKUP_LNP = f"""
local version = redis.call('GET', KEYS[1])
if not version then return false end
local key = ARGV[1] .. version .. ARGV[2]
local out = {{}}
local n = #ARGV
local i = 3
while i <= n do
  local j = math.min(i + {_LUA_HMGET_CHUNK - 1}, n)
  local part = redis.call('HMGET', key, unpack(ARGV, i, j))
  for k = 1, j - i + 1 do
    local v = part[k]
    if v then
      local bar = string.find(v, '{SEP}', 1, true)
      if bar then v = string.sub(v, 1, bar - 1) end
    end
    out[#out + 1] = v
  end
  i = j + 1
end
return {{version, out}}
"""

#: KEYS[1] current; ARGV[1] "ns:v:", ARGV[2] ":lnp", ARGV[3] the numbers packed as
#: 10-digit ASCII with no separator. Returns {version, "ocn,,ocn,..."} (empty = not
#: ported), or false when nothing is loaded. One argument and one reply string
#: instead of one RESP element per number each way.
_LOOKUP_LNP_PACKED = f"""
local version = redis.call('GET', KEYS[1])
if not version then return false end
local key = ARGV[1] .. version .. ARGV[2]
local s = ARGV[3]
local out = {{}}
local n = #s / 10
local i = 0
while i < n do
  local j = math.min(i + {_LUA_HMGET_CHUNK}, n)
  local fields = {{}}
  for k = i, j - 1 do fields[#fields + 1] = string.sub(s, k * 10 + 1, k * 10 + 10) end
  local part = redis.call('HMGET', key, unpack(fields))
  for k = 1, #fields do
    local v = part[k]
    if v then
      local bar = string.find(v, '{SEP}', 1, true)
      if bar then v = string.sub(v, 1, bar - 1) end
      out[#out + 1] = v
    else
      out[#out + 1] = ''
    end
  end
  i = j
end
return {{version, table.concat(out, ',')}}
"""

#: KEYS[1] current; ARGV[1] "ns:v:", ARGV[2] ":arrow:", ARGV[3..] table names.
#: Returns {version, blob or false, ...}, or false when nothing is loaded.
_READ_TABLES = """
local version = redis.call('GET', KEYS[1])
if not version then return false end
local out = {version}
for i = 3, #ARGV do
  out[#out + 1] = redis.call('GET', ARGV[1] .. version .. ARGV[2] .. ARGV[i])
end
return out
"""


class RedisReferenceReader:
    """Reads consistent reference data of the current version from Redis.

    Thread-safe as far as the client is (redis-py clients are). Every method raises
    :class:`ReferenceStoreError` when Redis fails or holds no reference data.
    """

    def __init__(self, client: redis.Redis, *, namespace: str = DEFAULT_NAMESPACE) -> None:
        _require_bytes(client)
        self._client = client
        self._keys = Keys(namespace)
        self._lookup = client.register_script(_LOOKUP_LNP)
        self._lookup_packed = client.register_script(_LOOKUP_LNP_PACKED)

    @property
    def namespace(self) -> str:
        return self._keys.namespace

    def current_version(self) -> str | None:
        """The version readers currently get, None when nothing was loaded."""
        with _redis_errors("reading the reference data version"):
            return _text_or_none(self._client.get(self._keys.current))

    def snapshot(self) -> ReferenceData:
        """Every table of one version except LNP, which is empty: resolve it per batch
        with :meth:`with_lnp` (or :meth:`lookup_lnp`)."""
        version, tables = _read_tables(self._client, self._keys, include_lnp=False)
        return build_reference_data(version, tables)

    def lookup_lnp(self, tns: I64) -> tuple[str, list[str | None]]:
        """``(version, OCN of each number or None)``, read atomically from one version.

        ``tns`` are 10-digit NANP numbers as ``int64``; other values (e.g. -1 for no
        number) get None. Compare the version with the snapshot's: when they differ,
        refresh the snapshot (:meth:`with_lnp` raises :class:`VersionChanged`).
        """
        tns = np.asarray(tns, dtype=np.int64).ravel()
        valid = (tns >= 2_000_000_000) & (tns <= 9_999_999_999)
        unique, inverse = np.unique(tns[valid], return_inverse=True)
        args = [self._keys.version_prefix, ":lnp", *(str(t) for t in unique.tolist())]
        with _redis_errors("looking up ported numbers"):
            reply = self._lookup(keys=[self._keys.current], args=args)
        if not reply:
            raise ReferenceStoreError(f"no reference data loaded under {self.namespace!r}")
        version = _text(reply[0])
        found = [None if v is None else _text(v) for v in reply[1]]
        result: list[str | None] = [None] * tns.size
        for pos, code in zip(np.flatnonzero(valid).tolist(), inverse.tolist(), strict=True):
            result[pos] = found[code]
        return version, result

    def lookup_lnp_array(self, tns: I64, *, chunk: int = 20_000) -> tuple[str, pa.Array]:
        """``(version, OCN per number as a string array, null = not ported)`` for
        distinct valid 10-digit numbers, vectorized: the numbers travel packed in one
        argument per ``chunk`` and the answers in one string, all chunks in one round
        trip. Raises :class:`ReferenceStoreError` when the chunks saw different
        versions (a switch in between): the caller pauses and retries.
        """
        tns = np.asarray(tns, dtype=np.int64).ravel()
        if tns.size == 0:
            return self.current_version() or "", pa.array([], pa.string())
        if tns.min() < 2_000_000_000 or tns.max() > 9_999_999_999:
            raise ValueError("lookup_lnp_array takes 10-digit NANP numbers only")
        packed = tns.astype("S10")
        with _redis_errors("looking up ported numbers"):
            pipe = self._client.pipeline(transaction=False)
            for start in range(0, tns.size, chunk):
                self._lookup_packed(
                    keys=[self._keys.current],
                    args=[
                        self._keys.version_prefix,
                        ":lnp",
                        packed[start : start + chunk].tobytes(),
                    ],
                    client=pipe,
                )
            replies = pipe.execute()
        if not all(replies):
            raise ReferenceStoreError(f"no reference data loaded under {self.namespace!r}")
        versions = {_text(r[0]) for r in replies}
        if len(versions) != 1:
            raise ReferenceStoreError("reference data version switched during a lookup; retry")
        parts = [r[1] for r in replies]
        joined = b",".join(p if isinstance(p, bytes) else str(p).encode() for p in parts)
        values = pa.array(joined.split(b","), pa.binary()).cast(pa.string())
        ocns = pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)
        if len(ocns) != tns.size:
            raise ReferenceStoreError("LNP lookup answered a different count of numbers")
        return versions.pop(), ocns

    def with_lnp(self, snapshot: ReferenceData, tns: I64) -> ReferenceData:
        """``snapshot`` whose LNP table holds the ported numbers among ``tns``.

        Raises :class:`VersionChanged` when Redis serves another version than the
        snapshot's: the caller takes a new :meth:`snapshot` and retries.
        """
        flat = np.asarray(tns, dtype=np.int64).ravel()
        version, ocns = self.lookup_lnp(flat)
        if version != snapshot.version:
            raise VersionChanged(snapshot.version, version)
        by_tn = {int(flat[i]): o for i, o in enumerate(ocns) if o is not None}
        ported = np.asarray(sorted(by_tn), dtype=np.int64)
        return snapshot.with_lnp(ported, pa.array([by_tn[t] for t in sorted(by_tn)], pa.string()))


def read_tables_from_redis(
    client: redis.Redis, *, namespace: str = DEFAULT_NAMESPACE
) -> tuple[str, dict[str, pa.Table]]:
    """``(version, tables)`` of the current version, LNP included (batch ``--redis``).

    Tables are keyed and shaped like :func:`pipeline.refdata.files.read_reference_set`.
    """
    return _read_tables(client, Keys(namespace), include_lnp=True)


def read_reference_from_redis(
    client: redis.Redis, *, namespace: str = DEFAULT_NAMESPACE
) -> ReferenceData:
    """A full :class:`ReferenceData` (LNP included) of the current version in Redis."""
    version, tables = read_tables_from_redis(client, namespace=namespace)
    return build_reference_data(version, tables)


def _read_tables(
    client: redis.Redis, keys: Keys, *, include_lnp: bool
) -> tuple[str, dict[str, pa.Table]]:
    """The version and its tables, read in one atomic script (LNP empty unless asked)."""
    _require_bytes(client)
    wanted = [layout for layout in LAYOUTS if include_lnp or layout.table != "lnp"]
    with _redis_errors("reading reference data"):
        reply = client.register_script(_READ_TABLES)(
            keys=[keys.current],
            args=[keys.version_prefix, ":arrow:", *(layout.name for layout in wanted)],
        )
    if not reply:
        raise ReferenceStoreError(f"no reference data loaded under {keys.namespace!r}")
    version = _text(reply[0])
    tables = {layout.table: _empty(layout.table) for layout in LAYOUTS}
    for layout, blob in zip(wanted, reply[1:], strict=True):
        if blob is None:
            raise ReferenceStoreError(f"{keys.arrow(version, layout.name)} is missing")
        tables[layout.table] = _from_ipc(bytes(blob), layout.table)
    return version, tables


def _require_bytes(client: redis.Redis) -> None:
    """The Arrow copies are binary: refuse a client that decodes replies to ``str``."""
    if client.get_connection_kwargs().get("decode_responses"):
        raise ReferenceStoreError("use a Redis client with decode_responses=False")


def _empty(table: str) -> pa.Table:
    return pa.table({c: pa.array([], pa.string()) for c in REFERENCE_FILES[table][1]})


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _text_or_none(value: object) -> str | None:
    return None if value is None else _text(value)
