"""The in-memory reference-data snapshot read by the pure rating core.

The core owns this model; the adapters in :mod:`pipeline.refdata` (files, Redis)
build it, and nothing here imports them.

A :class:`ReferenceData` is immutable and built once from validated string tables
(:meth:`ReferenceData.from_tables`). All lookups are vectorized: keys are integers
(NANP digits as ``int64``) held in sorted arrays and probed with
:func:`numpy.searchsorted`; a missing key yields ``-1``.

The LNP part (:attr:`ReferenceData.lnp`) may hold the whole ported-number table
(batch mode) or only the numbers of one batch resolved from Redis by the streaming
adapter (:meth:`ReferenceData.with_lnp`); the core cannot tell the difference.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.cpni import mask_text
from pipeline.rating.codes import CATEGORY_NAMES, OCN_CATEGORIES, REGION_CODE, Region
from pipeline.rating.money import to_micro

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
I8 = npt.NDArray[np.int8]

_POW10 = 10 ** np.arange(19, dtype=np.int64)
#: Prefixes up to this many digits are matched through a dense 10**DENSE_DIGITS table.
DENSE_DIGITS = 6

UNKNOWN_CATEGORY = len(OCN_CATEGORIES)  # code of CarrierCategory.UNKNOWN


@dataclass(frozen=True)
class KeyIndex:
    """Sorted unique ``int64`` keys; :meth:`find` maps probes to positions or -1."""

    keys: I64

    @classmethod
    def build(cls, keys: I64) -> tuple[KeyIndex, npt.NDArray[np.intp]]:
        """Sort ``keys``; return the index and the permutation applied (to reorder values).

        Raises ``ValueError`` naming the first duplicate key (masked if number-like).
        """
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        if ordered.size > 1:
            dup = np.flatnonzero(ordered[1:] == ordered[:-1])
            if dup.size:
                raise ValueError(f"duplicate key {mask_text(str(int(ordered[dup[0]])))}")
        return cls(ordered.astype(np.int64, copy=False)), order

    def find(self, probe: I64) -> npt.NDArray[np.intp]:
        """Position of each probe in :attr:`keys`, or -1 (negative probes never match)."""
        if self.keys.size == 0:
            return np.full(probe.shape, -1, dtype=np.intp)
        pos = np.searchsorted(self.keys, probe)
        pos = np.minimum(pos, self.keys.size - 1)
        hit = (self.keys[pos] == probe) & (probe >= 0)
        return np.where(hit, pos, -1)

    def __len__(self) -> int:
        return int(self.keys.size)


@dataclass(frozen=True)
class PrefixTable:
    """Prefix match over digit strings, grouped by prefix length.

    ``by_length[L]`` indexes all prefixes of ``L`` digits (as ``int64``) and
    ``values[L]`` holds one value index per key. :meth:`longest` returns the value of
    the longest matching prefix, or -1.
    """

    by_length: dict[int, KeyIndex]
    values: dict[int, I32]

    @classmethod
    def build(cls, prefixes: list[str], values: list[int]) -> PrefixTable:
        by_len: dict[int, tuple[list[int], list[int]]] = {}
        for p, v in zip(prefixes, values, strict=True):
            ks, vs = by_len.setdefault(len(p), ([], []))
            ks.append(int(p))
            vs.append(v)
        idx: dict[int, KeyIndex] = {}
        vals: dict[int, I32] = {}
        for length, (ks, vs) in by_len.items():
            index, order = KeyIndex.build(np.asarray(ks, dtype=np.int64))
            idx[length] = index
            vals[length] = np.asarray(vs, dtype=np.int32)[order]
        return cls(idx, vals)

    def longest(self, digits: I64, ndigits: I64) -> I32:
        """Value of the longest prefix of each number, -1 if none.

        ``digits`` is the whole number as an integer (``-1`` when absent) and ``ndigits``
        its count of digits. Prefixes of up to :data:`DENSE_DIGITS` digits are answered
        by one probe of a dense table indexed by a number's leading digits; longer ones
        are searched only for numbers whose leading digits start one of them.
        """
        table, longer = self._dense()
        out = np.full(digits.shape, -1, dtype=np.int32)
        valid = digits >= 0
        wide = valid & (ndigits >= DENSE_DIGITS)
        lead = np.where(wide, digits // _POW10[np.clip(ndigits - DENSE_DIGITS, 0, 18)], 0)
        out[wide] = table[lead[wide]]
        rows = np.flatnonzero((wide & longer[lead]) | (valid & ~wide))  # rare
        if rows.size:
            out[rows] = self._search(digits[rows], ndigits[rows], out[rows])
        return out

    def _search(self, digits: I64, ndigits: I64, out: I32) -> I32:
        """:meth:`longest` by one sorted search per prefix length."""
        out = out.copy()
        for length in sorted(self.by_length):  # longer prefixes overwrite shorter ones
            shift = ndigits - length
            probe = np.where(shift >= 0, digits // _POW10[np.clip(shift, 0, 18)], -1)
            pos = self.by_length[length].find(probe)
            hit = pos >= 0
            if hit.any():
                out[hit] = self.values[length][pos[hit]]
        return out

    def _dense(self) -> tuple[I32, npt.NDArray[np.bool_]]:
        """(value of the longest prefix of at most DENSE_DIGITS digits, per leading
        DENSE_DIGITS digits; whether a longer prefix starts with them), built once."""
        cached = self.__dict__.get("_dense_tables")
        if cached is None:
            size = 10**DENSE_DIGITS
            table = np.full(size, -1, dtype=np.int32)
            longer = np.zeros(size, dtype=np.bool_)
            for length in sorted(self.by_length):
                keys = self.by_length[length].keys
                if length <= DENSE_DIGITS:
                    span = 10 ** (DENSE_DIGITS - length)
                    slots = (keys[:, None] * span + np.arange(span)).ravel()
                    table[slots] = np.repeat(self.values[length], span)
                else:
                    longer[keys // 10 ** (length - DENSE_DIGITS)] = True
            cached = (table, longer)
            object.__setattr__(self, "_dense_tables", cached)
        return cached


@dataclass(frozen=True)
class ReferenceData:
    """One consistent version of the reference data (spec section 2).

    Integer codes: regions index :data:`pipeline.rating.codes.REGIONS`; states index
    :attr:`states`; OCNs index :attr:`ocns`; categories index :data:`CATEGORY_NAMES`.
    """

    version: str
    states: tuple[str, ...]
    #: per NPA 0..999: region code (UNKNOWN when absent) and state index (-1).
    npa_region: I8
    npa_state: I32
    #: 6-digit NPA-NXX and 7-digit thousands blocks -> ocn index and state index.
    block6: KeyIndex
    block6_ocn: I32
    block6_state: I32
    block7: KeyIndex
    block7_ocn: I32
    block7_state: I32
    ocns: tuple[str, ...]
    ocn_category: I8
    #: ported 10-digit numbers -> ocn index.
    lnp: KeyIndex
    lnp_ocn: I32
    #: accounts: ids (sorted Arrow array for ``pyarrow.compute.index_in``), tariff ids,
    #: toll-free flat rate override in micro-dollars per minute (-1 = none), cap flag.
    account_ids: pa.StringArray
    account_tariff: tuple[str, ...]
    account_toll_free_micro: I64
    account_enforce_cap: npt.NDArray[np.bool_]
    blocklist: PrefixTable
    blocklist_reasons: tuple[str, ...]

    # ------------------------------------------------------------------ building
    @classmethod
    def from_tables(
        cls,
        *,
        version: str,
        npa_regions: pa.Table,
        npanxx: pa.Table,
        ocn: pa.Table,
        lnp: pa.Table,
        accounts: pa.Table,
        blocklist: pa.Table,
    ) -> ReferenceData:
        """Build from string tables already validated by :mod:`pipeline.refdata.files`.

        Columns are those of the CSV files (spec section 2), all ``string``.
        Raises ``ValueError`` on inconsistent data (duplicate keys, unknown OCN).
        """
        ocn_ids = [str(x) for x in ocn.column("ocn").to_pylist()]
        ocn_pos = {o: i for i, o in enumerate(ocn_ids)}
        if len(ocn_pos) != len(ocn_ids):
            raise ValueError("ocn.csv: duplicate ocn")
        cat_code = {c: i for i, c in enumerate(CATEGORY_NAMES)}
        ocn_category = np.asarray(
            [cat_code[str(c)] for c in ocn.column("category").to_pylist()], dtype=np.int8
        )

        state_names: dict[str, int] = {}

        def state_index(values: list[str | None]) -> I32:
            out = np.empty(len(values), dtype=np.int32)
            for i, s in enumerate(values):
                out[i] = state_names.setdefault(s, len(state_names)) if s else -1
            return out

        npa_region = np.full(1000, REGION_CODE[Region.UNKNOWN], dtype=np.int8)
        npa_state = np.full(1000, -1, dtype=np.int32)
        npas = np.asarray([int(x) for x in npa_regions.column("npa").to_pylist()], dtype=np.int64)
        npa_region[npas] = [REGION_CODE[str(r)] for r in npa_regions.column("region").to_pylist()]
        npa_state[npas] = state_index(npa_regions.column("state").to_pylist())

        def ocn_index(values: list[str], what: str) -> I32:
            try:
                return np.asarray([ocn_pos[v] for v in values], dtype=np.int32)
            except KeyError as exc:
                raise ValueError(f"{what}: ocn {exc.args[0]!r} is not in ocn.csv") from exc

        prefixes = [str(x) for x in npanxx.column("prefix").to_pylist()]
        p_ocn = ocn_index([str(x) for x in npanxx.column("ocn").to_pylist()], "npanxx.csv")
        p_state = state_index(npanxx.column("state").to_pylist())
        lengths = np.asarray([len(p) for p in prefixes])
        keys = np.asarray([int(p) for p in prefixes], dtype=np.int64)
        blocks: dict[int, tuple[KeyIndex, I32, I32]] = {}
        for length in (6, 7):
            sel = np.flatnonzero(lengths == length)
            index, order = KeyIndex.build(keys[sel])
            blocks[length] = (index, p_ocn[sel][order], p_state[sel][order])

        lnp_keys = np.asarray(
            pc.cast(lnp.column("tn"), pa.int64()).to_numpy(zero_copy_only=False),
            dtype=np.int64,
        )
        lnp_index, lnp_order = KeyIndex.build(lnp_keys)
        lnp_ocn_codes = _codes_for(lnp.column("ocn"), ocn_ids, "lnp.csv")[lnp_order]

        acc = accounts.sort_by("account_id")
        overrides = [
            -1 if not v else to_micro(Decimal(str(v)))
            for v in acc.column("toll_free_flat_per_min").to_pylist()
        ]
        bl_prefixes = [str(x) for x in blocklist.column("prefix").to_pylist()]
        blocked = PrefixTable.build(bl_prefixes, list(range(len(bl_prefixes))))
        return cls(
            version=version,
            states=tuple(state_names),
            npa_region=npa_region,
            npa_state=npa_state,
            block6=blocks[6][0],
            block6_ocn=blocks[6][1],
            block6_state=blocks[6][2],
            block7=blocks[7][0],
            block7_ocn=blocks[7][1],
            block7_state=blocks[7][2],
            ocns=tuple(ocn_ids),
            ocn_category=ocn_category,
            lnp=lnp_index,
            lnp_ocn=lnp_ocn_codes,
            account_ids=acc.column("account_id").combine_chunks(),
            account_tariff=tuple(str(x) for x in acc.column("tariff_id").to_pylist()),
            account_toll_free_micro=np.asarray(overrides, dtype=np.int64),
            account_enforce_cap=np.asarray(
                [str(x) == "true" for x in acc.column("enforce_minute_cap").to_pylist()],
                dtype=np.bool_,
            ),
            blocklist=blocked,
            blocklist_reasons=tuple(str(x) for x in blocklist.column("reason").to_pylist()),
        )

    def block6_at(self, prefixes: I64) -> npt.NDArray[np.intp]:
        """Position of each 6-digit NPA-NXX in :attr:`block6` (-1 if absent), through a
        dense 1,000,000-entry table built on first use (O(1) per probe)."""
        dense = self.__dict__.get("_block6_dense")
        if dense is None:
            dense = np.full(1_000_000, -1, dtype=np.int32)
            dense[self.block6.keys] = np.arange(len(self.block6), dtype=np.int32)
            object.__setattr__(self, "_block6_dense", dense)
        ok = (prefixes >= 0) & (prefixes < 1_000_000)
        return np.where(ok, dense[np.where(ok, prefixes, 0)], -1).astype(np.intp)

    def block7_at(self, prefixes: I64) -> npt.NDArray[np.intp]:
        """Position of each 7-digit thousands block in :attr:`block7` (-1 if absent).
        Only numbers whose NPA-NXX is pooled (has any thousands block, a dense table
        built on first use) are searched for."""
        pooled = self.__dict__.get("_pooled_dense")
        if pooled is None:
            pooled = np.zeros(1_000_000, dtype=np.bool_)
            pooled[self.block7.keys // 10] = True
            object.__setattr__(self, "_pooled_dense", pooled)
        out = np.full(prefixes.shape, -1, dtype=np.intp)
        ok = (prefixes >= 0) & (prefixes < 10_000_000)
        rows = np.flatnonzero(ok & pooled[np.where(ok, prefixes // 10, 0)])
        if rows.size:
            out[rows] = self.block7.find(prefixes[rows])
        return out

    def with_lnp(self, tns: I64, ocns: pa.Array) -> ReferenceData:
        """A copy whose LNP table is exactly ``tns -> ocns`` (a batch's resolved subset).

        ``ocns`` are OCN strings; an OCN unknown to this snapshot raises ``ValueError``.
        """
        codes = self.ocn_codes(ocns)
        if (codes < 0).any():
            raise ValueError("lnp: a ported number without an ocn")
        return self.with_lnp_codes(tns, codes)

    def ocn_codes(self, ocns: pa.Array) -> I32:
        """Index in :attr:`ocns` of each OCN string, -1 where null; ``ValueError`` names
        an OCN this snapshot does not know."""
        vocab = self.__dict__.get("_ocn_vocab")
        if vocab is None:
            vocab = pa.array(self.ocns, type=pa.string())
            object.__setattr__(self, "_ocn_vocab", vocab)
        idx = pc.index_in(ocns, value_set=vocab)
        unknown = pc.and_(pc.is_null(idx), pc.is_valid(ocns))
        if pc.any(unknown).as_py():
            raise ValueError(f"lnp: ocn {pc.filter(ocns, unknown)[0].as_py()!r} is not in ocn.csv")
        return np.asarray(idx.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int32)

    def with_lnp_codes(self, tns: I64, codes: I32) -> ReferenceData:
        """:meth:`with_lnp` with OCNs given as indexes into :attr:`ocns` (no check)."""
        index, order = KeyIndex.build(np.asarray(tns, dtype=np.int64))
        copy = dataclasses.replace(self, lnp=index, lnp_ocn=np.asarray(codes, np.int32)[order])
        for cached in _SHARED_CACHES:  # same NPA-NXX and OCN tables: share their indexes
            if cached in self.__dict__:
                object.__setattr__(copy, cached, self.__dict__[cached])
        return copy

    def account_index(self, account_ids: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.intp]:
        """Row of each account id in the account arrays, -1 when unknown (R1)."""
        idx = pc.index_in(account_ids, value_set=self.account_ids)
        return np.asarray(idx.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.intp)


#: Lazily built lookup tables that a copy with another LNP subset can share.
_SHARED_CACHES = ("_block6_dense", "_pooled_dense", "_ocn_vocab")


def _codes_for(values: pa.Array | pa.ChunkedArray, vocabulary: list[str], what: str) -> I32:
    """Index of each string of ``values`` in ``vocabulary`` (ValueError if one is absent)."""
    vocab = pa.array(vocabulary, type=pa.string())
    idx = pc.index_in(values, value_set=vocab)
    if idx.null_count:
        missing = pc.filter(values, pc.is_null(idx))[0]
        raise ValueError(f"{what}: ocn {missing.as_py()!r} is not in ocn.csv")
    return np.asarray(idx.to_numpy(zero_copy_only=False), dtype=np.int32)
