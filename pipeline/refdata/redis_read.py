"""Reading consistent reference data of the current version from Redis.

Every read resolves ``ns:current`` and reads the keys of that version inside one Lua
script (:mod:`pipeline.refdata.redis_keys`), which Redis runs atomically: a reader
sees the old version or the new one, never a mix, and never a half-deleted version.
Whole tables come from the Arrow copies (one ``GET`` each); LNP is looked up per
batch. Failures raise :class:`~pipeline.errors.ReferenceStoreError`; a version
switch under a snapshot raises :class:`VersionChanged`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import redis

from pipeline.errors import ReferenceStoreError
from pipeline.rating.reference import ReferenceData
from pipeline.refdata.files import REFERENCE_FILES, build_reference_data
from pipeline.refdata.redis_keys import (
    DEFAULT_NAMESPACE,
    LAYOUTS,
    LOOKUP_LNP,
    LOOKUP_LNP_PACKED,
    READ_TABLES,
    Keys,
    as_text,
    as_text_or_none,
    redis_errors,
)

I64 = npt.NDArray[np.int64]


class VersionChanged(ReferenceStoreError):
    """Redis now serves another version than the caller's snapshot: refresh and retry."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(
            f"reference data changed from {expected} to {actual}; refresh the snapshot"
        )
        self.expected = expected
        self.actual = actual


class RedisReferenceReader:
    """Reads consistent reference data of the current version from Redis.

    Thread-safe as far as the client is (redis-py clients are). Every method raises
    :class:`ReferenceStoreError` when Redis fails or holds no reference data.
    """

    def __init__(self, client: redis.Redis, *, namespace: str = DEFAULT_NAMESPACE) -> None:
        _require_bytes(client)
        self._client = client
        self._keys = Keys(namespace)
        self._lookup = client.register_script(LOOKUP_LNP)
        self._lookup_packed = client.register_script(LOOKUP_LNP_PACKED)

    @property
    def namespace(self) -> str:
        return self._keys.namespace

    def current_version(self) -> str | None:
        """The version readers currently get, None when nothing was loaded."""
        with redis_errors("reading the reference data version"):
            return as_text_or_none(self._client.get(self._keys.current))

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
        with redis_errors("looking up ported numbers"):
            reply = self._lookup(keys=[self._keys.current], args=args)
        if not reply:
            raise ReferenceStoreError(f"no reference data loaded under {self.namespace!r}")
        version = as_text(reply[0])
        found = [None if v is None else as_text(v) for v in reply[1]]
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
        with redis_errors("looking up ported numbers"):
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
        versions = {as_text(r[0]) for r in replies}
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
    with redis_errors("reading reference data"):
        reply = client.register_script(READ_TABLES)(
            keys=[keys.current],
            args=[keys.version_prefix, ":arrow:", *(layout.name for layout in wanted)],
        )
    if not reply:
        raise ReferenceStoreError(f"no reference data loaded under {keys.namespace!r}")
    version = as_text(reply[0])
    tables = {layout.table: _empty(layout.table) for layout in LAYOUTS}
    for layout, blob in zip(wanted, reply[1:], strict=True):
        if blob is None:
            raise ReferenceStoreError(f"{keys.arrow(version, layout.name)} is missing")
        tables[layout.table] = _from_ipc(bytes(blob), layout.table)
    return version, tables


def _from_ipc(data: bytes, table: str) -> pa.Table:
    try:
        loaded = pa.ipc.open_stream(data).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise ReferenceStoreError(f"corrupt Arrow copy of {table} in Redis: {exc}") from exc
    if tuple(loaded.column_names) != REFERENCE_FILES[table][1]:
        raise ReferenceStoreError(f"Arrow copy of {table} in Redis has unexpected columns")
    return loaded


def _require_bytes(client: redis.Redis) -> None:
    """The Arrow copies are binary: refuse a client that decodes replies to ``str``."""
    if client.get_connection_kwargs().get("decode_responses"):
        raise ReferenceStoreError("use a Redis client with decode_responses=False")


def _empty(table: str) -> pa.Table:
    return pa.table({c: pa.array([], pa.string()) for c in REFERENCE_FILES[table][1]})
