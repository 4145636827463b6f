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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.rating.rate import origin_numbers
from pipeline.refdata.model import ReferenceData
from pipeline.refdata.redis_store import RedisReferenceReader


class Enricher:
    """Gives each batch the :class:`ReferenceData` it needs (see module docstring)."""

    def __init__(
        self,
        reader: RedisReferenceReader,
        *,
        max_cached: int = 2_000_000,
        version_check_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reader = reader
        self._snapshot: ReferenceData | None = None
        self._cache: dict[int, str | None] = {}
        self._max_cached = max_cached
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

    def for_batch(self, events: pa.Table) -> ReferenceData:
        """Reference data holding the LNP entries of ``events``' origin numbers."""
        origin = origin_numbers(events)
        tns = np.unique(origin.national[origin.nanp])
        tns = tns[(tns >= 2_000_000_000) & (tns <= 9_999_999_999)]
        for _ in range(3):  # a version switch mid-call: refresh and try again
            snapshot = self.snapshot()
            cache = self._cache
            known = np.fromiter((t in cache for t in tns.tolist()), np.bool_, tns.size)
            missing = tns[~known]
            self.hits += int(known.sum())
            self.misses += int(missing.size)
            if missing.size:
                version, ocns = self._reader.lookup_lnp_array(missing)
                if version != snapshot.version:
                    self._refresh()
                    continue
                if len(cache) + missing.size > self._max_cached:
                    cache.clear()
                cache.update(zip(missing.tolist(), ocns.to_pylist(), strict=True))
            else:
                ocns = pa.array([], pa.string())
            hit_tns = tns[known]
            hit_ocns = [cache.get(t) for t in hit_tns.tolist()]
            all_tns = np.concatenate([missing, hit_tns])
            all_ocns = pa.concat_arrays([ocns, pa.array(hit_ocns, pa.string())])
            ported = pc.is_valid(all_ocns)
            return snapshot.with_lnp(
                all_tns[np.asarray(ported.to_numpy(zero_copy_only=False), dtype=np.bool_)],
                all_ocns.filter(ported),
            )
        raise RuntimeError("reference data version kept changing during one batch")

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
