"""Enrichment from Redis for the streaming service.

The small tables (area codes, NPA-NXX, OCNs, accounts, blocklist) are held whole in
memory as a :class:`ReferenceData` snapshot; number-level LNP comes from Redis in
one atomic Lua call per batch for the numbers not already in a local cache.

The cache knows the reference-data version: when ``refdata load`` switches versions
(noticed on the next lookup that reaches Redis, or by a version check at most every
``version_check_s`` seconds) the snapshot is re-read and the cache dropped. A batch
is always enriched from one version. Redis failures raise
:class:`~pipeline.errors.ReferenceStoreError`; the caller pauses and retries, and
nothing is rated without its enrichment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from pipeline.errors import ReferenceStoreError
from pipeline.rating.numbers import EventNumbers
from pipeline.rating.rate import origin_numbers
from pipeline.rating.reference import ReferenceData

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
BOOL = npt.NDArray[np.bool_]


#: Multiplier of the cache's hash (2**64 / golden ratio, odd): spreads NANP numbers
#: that differ in their last digits over all slots.
_HASH = np.uint64(0x9E3779B97F4A7C15)
#: Bits of a cache entry that hold the OCN code + 1 (0 = "not ported").
_CODE_BITS = 24
_CODE_MASK = (1 << _CODE_BITS) - 1


class LnpCache:
    """A direct-mapped cache of LNP answers, probed and filled a whole batch at a time.

    Each of ``slots`` (rounded up to a power of two) ``int64`` entries packs a number
    and its answer, ``number << 24 | (ocn_code + 1)`` (``0`` = not ported), so one
    store writes both and a probe can never pair a number with another's answer. A
    number maps to one slot (multiplicative hash); a new answer overwrites whatever
    the slot held, so memory is fixed (8 bytes a slot) and there is no eviction pass.
    Codes index one snapshot's OCNs: :meth:`clear` when the version changes.
    """

    def __init__(self, slots: int) -> None:
        size = 1 << max(int(slots) - 1, 1).bit_length()
        self._shift = np.uint64(64 - (size.bit_length() - 1))
        self._entries = np.full(size, -1, dtype=np.int64)

    @property
    def slots(self) -> int:
        return int(self._entries.size)

    def clear(self) -> None:
        self._entries.fill(-1)

    def _slot(self, tns: I64) -> npt.NDArray[np.intp]:
        return ((tns.astype(np.uint64) * _HASH) >> self._shift).astype(np.intp)

    def get(self, tns: I64) -> tuple[BOOL, I32]:
        """``(found, codes)`` for numbers ``0 <= tn < 2**39``: ``codes`` is the OCN
        code (-1 = not ported) where found, meaningless elsewhere."""
        entries = self._entries[self._slot(tns)]
        found = (entries >> _CODE_BITS) == tns
        return found, ((entries & _CODE_MASK) - 1).astype(np.int32)

    def put(self, tns: I64, codes: I32) -> None:
        """Remember ``tns -> codes`` (-1 = not ported), evicting what the slots held."""
        if codes.size and int(codes.max()) >= _CODE_MASK:
            raise ValueError("LnpCache holds OCN codes below 2**24 - 1")
        self._entries[self._slot(tns)] = (tns.astype(np.int64) << _CODE_BITS) | (
            codes.astype(np.int64) + 1
        )


def origin_tns(events: pa.Table, numbers: EventNumbers | None = None) -> I64:
    """The distinct 10-digit NANP origin numbers of ``events``: what LNP is asked."""
    origin = origin_numbers(events, numbers)
    tns = np.unique(origin.national[origin.nanp])
    return tns[(tns >= 2_000_000_000) & (tns <= 9_999_999_999)]


class ReferenceReader(Protocol):
    """Where the enricher reads reference data: the Redis store
    (:class:`~pipeline.refdata.redis_read.RedisReferenceReader`) or a fake in tests."""

    def snapshot(self) -> ReferenceData:
        """The current version's small tables (and whatever LNP it holds)."""
        ...

    def current_version(self) -> str | None:
        """The version readers see now (None: nothing loaded)."""
        ...

    def lookup_lnp_array(self, tns: I64) -> tuple[str, pa.Array]:
        """``(version, OCN per number, null = not ported)`` for distinct numbers."""
        ...


class Enricher:
    """Gives each batch the :class:`ReferenceData` it needs (see module docstring)."""

    def __init__(
        self,
        reader: ReferenceReader,
        *,
        max_cached: int = 2_000_000,
        version_check_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reader = reader
        self._snapshot: ReferenceData | None = None
        self._cache = LnpCache(max_cached)
        self._version_check_s = version_check_s
        self._clock = clock
        self._checked_at = float("-inf")
        self.hits = 0
        self.misses = 0
        self.on_version_change: Callable[[str], None] | None = None

    @property
    def version(self) -> str | None:
        return self._snapshot.version if self._snapshot else None

    def _refresh(self) -> ReferenceData:
        snapshot = self._reader.snapshot()
        changed = self._snapshot is not None and snapshot.version != self._snapshot.version
        self._snapshot = snapshot
        self._cache.clear()
        self._checked_at = self._clock()
        if changed and self.on_version_change:
            self.on_version_change(snapshot.version)
        return snapshot

    def snapshot(self) -> ReferenceData:
        """The current in-memory snapshot (read from Redis on first use or after a switch)."""
        if self._snapshot is None:
            return self._refresh()
        if self._clock() - self._checked_at >= self._version_check_s:
            current = self._reader.current_version()
            self._checked_at = self._clock()
            if current != self._snapshot.version:
                return self._refresh()
        return self._snapshot

    def for_batch(self, events: pa.Table, numbers: EventNumbers | None = None) -> ReferenceData:
        """Reference data holding the LNP entries of ``events``' origin numbers
        (``numbers``: the events' parsed number columns, if already at hand)."""
        return self.for_numbers(origin_tns(events, numbers))

    def for_numbers(self, tns: I64) -> ReferenceData:
        """Reference data holding the LNP entries of ``tns`` (:func:`origin_tns`)."""
        for _ in range(3):  # a version switch mid-call: refresh and try again
            snapshot = self.snapshot()
            known, codes = self._cache.get(tns)
            missing = tns[~known]
            self.hits += int(tns.size - missing.size)
            self.misses += int(missing.size)
            if missing.size:
                version, ocns = self._reader.lookup_lnp_array(missing)
                if version != snapshot.version:
                    self._refresh()
                    continue
                found = snapshot.ocn_codes(ocns)
                self._cache.put(missing, found)
                codes = codes.copy()
                codes[~known] = found
            ported = codes >= 0
            return snapshot.with_lnp_codes(tns[ported], codes[ported])
        # Reloads outpaced three attempts: a transient state of the store, so the
        # service pauses and retries like any Redis outage (never a crash).
        raise ReferenceStoreError("reference data version kept changing during one batch")

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
