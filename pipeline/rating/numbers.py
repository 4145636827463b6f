"""E.164 numbers, vectorized: well-formedness, R-REGION, state, R-CARRIER.

A number is well-formed when it matches ``^\\+[1-9][0-9]{7,14}$`` and, if it starts
with ``+1``, has exactly 10 digits after the ``+1`` (spec section 2). Numbers are
never normalized.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.rating.codes import REGION_CODE, TOLL_FREE_NPAS, Region
from pipeline.rating.reference import UNKNOWN_CATEGORY, ReferenceData

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
BOOL = npt.NDArray[np.bool_]

WELL_FORMED = r"^\+(?:1[0-9]{10}|[2-9][0-9]{7,14})$"
_TEN_10 = 10**10
_MEXICO = REGION_CODE[Region.MEXICO]
_INTERNATIONAL = REGION_CODE[Region.INTERNATIONAL]
_UNKNOWN = REGION_CODE[Region.UNKNOWN]
_TOLL_FREE = np.zeros(1000, dtype=np.bool_)
_TOLL_FREE[list(TOLL_FREE_NPAS)] = True


@dataclass(frozen=True)
class Numbers:
    """Parsed numbers of one column. ``digits`` is -1 where not well-formed."""

    present: BOOL
    well_formed: BOOL
    digits: I64  # all digits after '+', as an integer
    ndigits: I64
    nanp: BOOL  # well-formed +1 number
    national: I64  # the 10 NANP digits, -1 otherwise

    def select(self, mask: BOOL) -> Numbers:
        """The numbers of the rows where ``mask`` is true."""
        return Numbers(*(getattr(self, f)[mask] for f in Numbers.__dataclass_fields__))

    @property
    def npa(self) -> I64:
        return np.where(self.nanp, self.national // 10**7, 0)

    @property
    def toll_free(self) -> BOOL:
        """R3: a +1 number in a toll-free NPA."""
        return self.nanp & _TOLL_FREE[self.npa]


def parse_numbers(column: pa.Array | pa.ChunkedArray) -> Numbers:
    """Parse a string column of E.164 numbers (nulls allowed). The empty string is no
    number: ``present`` is false for it as for null (R1: switches write ``""`` for
    "not provided"), so callers that parse before :func:`~pipeline.rating.rate.rate_batch`
    blanks the column (the streaming enricher) see the same origin (R6)."""
    given = pc.fill_null(pc.not_equal(column, ""), False)
    present = np.asarray(given.to_numpy(zero_copy_only=False), dtype=np.bool_)
    ok = pc.fill_null(pc.match_substring_regex(column, WELL_FORMED), False)
    well_formed = np.asarray(ok.to_numpy(zero_copy_only=False), dtype=np.bool_)
    cleaned = pc.if_else(ok, column, pa.scalar("+0"))
    digits_str = pc.utf8_slice_codeunits(cleaned, 1)
    digits = np.asarray(
        pc.cast(digits_str, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64
    )
    ndigits = np.asarray(pc.utf8_length(digits_str).to_numpy(zero_copy_only=False), dtype=np.int64)
    digits = np.where(well_formed, digits, -1)
    nanp = well_formed & (ndigits == 11) & (digits // _TEN_10 == 1)
    national = np.where(nanp, digits - _TEN_10, -1)
    return Numbers(present, well_formed, digits, ndigits, nanp, national)


@dataclass(frozen=True)
class EventNumbers:
    """The three parsed number columns of a batch of events (parse once, use twice:
    the streaming enricher and :func:`~pipeline.rating.rate.rate_batch`)."""

    called: Numbers
    calling: Numbers
    original: Numbers

    def __len__(self) -> int:
        return int(self.called.present.size)

    def select(self, mask: BOOL) -> EventNumbers:
        return EventNumbers(
            self.called.select(mask), self.calling.select(mask), self.original.select(mask)
        )


def parse_event_numbers(events: pa.Table) -> EventNumbers:
    """Parse ``called_number``, ``calling_number`` and ``original_calling_number``."""
    return EventNumbers(
        parse_numbers(events.column("called_number")),
        parse_numbers(events.column("calling_number")),
        parse_numbers(events.column("original_calling_number")),
    )


def choose(mask: BOOL, a: Numbers, b: Numbers) -> Numbers:
    """Row-wise ``a`` where ``mask`` else ``b``."""
    return Numbers(
        *(np.where(mask, getattr(a, f), getattr(b, f)) for f in Numbers.__dataclass_fields__)
    )


def region_of(numbers: Numbers, ref: ReferenceData) -> npt.NDArray[np.int8]:
    """R-REGION code per number: NPA region for +1, MEXICO for +52, else INTERNATIONAL;
    missing or malformed: UNKNOWN."""
    mexico = (
        numbers.well_formed
        & ~numbers.nanp
        & (numbers.digits // 10 ** np.clip(numbers.ndigits - 2, 0, 18) == 52)
    )
    region = np.where(numbers.nanp, ref.npa_region[numbers.npa], _INTERNATIONAL)
    region = np.where(mexico, _MEXICO, region)
    return np.where(numbers.well_formed, region, _UNKNOWN).astype(np.int8)


@dataclass(frozen=True)
class Located:
    """Reference facts of one column of numbers (R-CARRIER, state for R6)."""

    ocn: I32  # OCN index, -1 when no LNP entry, thousands block or NPA-NXX matches
    category: npt.NDArray[np.int8]  # carrier category code (UNKNOWN when ocn is -1)
    state: I32  # state index: npanxx (7 then 6 digits), else npa_regions; -1 unknown


def _blocks(numbers: Numbers, ref: ReferenceData) -> tuple[BOOL, I32, I32]:
    """The thousands-block match, its OCN and the state from the blocks and NPA."""
    nat = numbers.national
    p7 = ref.block7_at(np.where(numbers.nanp, nat // 1000, -1))
    hit7 = p7 >= 0
    p6 = ref.block6_at(np.where(numbers.nanp, nat // 10_000, -1))
    hit6 = p6 >= 0
    i7, i6 = np.maximum(p7, 0), np.maximum(p6, 0)
    empty = np.full(nat.shape, -1, dtype=np.int32)
    ocn7 = np.where(hit7, ref.block7_ocn[i7], -1) if len(ref.block7) else empty
    st7 = np.where(hit7, ref.block7_state[i7], -1) if len(ref.block7) else empty
    ocn6 = np.where(hit6, ref.block6_ocn[i6], -1) if len(ref.block6) else empty
    st6 = np.where(hit6, ref.block6_state[i6], -1) if len(ref.block6) else empty
    block_ocn = np.where(hit7, ocn7, ocn6)
    block_state = np.where(hit7, st7, st6)
    state = np.where(
        block_state >= 0, block_state, np.where(numbers.nanp, ref.npa_state[numbers.npa], -1)
    )
    return hit7 | hit6, block_ocn.astype(np.int32), state.astype(np.int32)


def locate(numbers: Numbers, ref: ReferenceData) -> Located:
    """R-CARRIER and state of each number, with one probe of each table.

    Carrier: the ported number (LNP) first, then the 7-digit thousands block, then the
    6-digit NPA-NXX. State: the thousands block, then the NPA-NXX, then the NPA.
    """
    nat = numbers.national
    _, block_ocn, state = _blocks(numbers, ref)
    pos = ref.lnp.find(np.where(numbers.nanp, nat, -1))
    lnp_ocn = (
        np.where(pos >= 0, ref.lnp_ocn[np.maximum(pos, 0)], -1)
        if len(ref.lnp)
        else np.full(nat.shape, -1, dtype=np.int32)
    )
    ocn = np.where(pos >= 0, lnp_ocn, block_ocn).astype(np.int32)
    category = (
        np.where(ocn >= 0, ref.ocn_category[np.maximum(ocn, 0)], UNKNOWN_CATEGORY)
        if ref.ocns
        else np.full(nat.shape, UNKNOWN_CATEGORY)
    ).astype(np.int8)
    return Located(ocn=ocn, category=category, state=state)


def state_of(numbers: Numbers, ref: ReferenceData) -> I32:
    """State index of each number, as :func:`locate` finds it (no carrier lookup)."""
    return _blocks(numbers, ref)[2]


__all__ = [
    "EventNumbers",
    "Located",
    "Numbers",
    "choose",
    "locate",
    "parse_event_numbers",
    "parse_numbers",
    "region_of",
    "state_of",
]
