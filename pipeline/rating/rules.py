"""The per-call rules R1-R11 as vectorized functions over numpy columns.

Each function is pure and named after the rule it implements; :mod:`pipeline.rating.rate`
composes them over an Arrow batch. Integer codes: regions index
:data:`~pipeline.rating.codes.REGIONS`, classes index :data:`CALL_CLASSES`, increment
classes index :data:`~pipeline.rating.compiled.INCREMENT_CLASSES`, jurisdictions index
:data:`JURISDICTIONS` (-1 = null). Money is ``int64`` micro-dollars.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.rating.codes import (
    REGION_CODE,
    US_REGIONS,
    CallClass,
    Flag,
    IncrementClass,
    Jurisdiction,
    Region,
)
from pipeline.rating.compiled import INCREMENT_CLASSES, CompiledTariffs
from pipeline.rating.money import charge_for_seconds

I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
BOOL = npt.NDArray[np.bool_]
IDX = npt.NDArray[np.intp]

CALL_CLASSES: tuple[str, ...] = tuple(c.value for c in CallClass)
JURISDICTIONS: tuple[str, ...] = tuple(j.value for j in Jurisdiction)
FLAGS: tuple[str, ...] = tuple(f.value for f in Flag)

_NB, _TF, _DID, _LD, _FWD = (CALL_CLASSES.index(c) for c in CallClass)
_US_OR_UNKNOWN = np.zeros(len(REGION_CODE), dtype=np.bool_)
_US_OR_UNKNOWN[[REGION_CODE[r] for r in US_REGIONS] + [REGION_CODE[Region.UNKNOWN]]] = True
_US = INCREMENT_CLASSES.index(IncrementClass.US_DOMESTIC)
_INTL = INCREMENT_CLASSES.index(IncrementClass.INTERNATIONAL)
_MX = INCREMENT_CLASSES.index(IncrementClass.MEXICO)
_INTRA, _INTER, _INDET, _INTLJ = (JURISDICTIONS.index(j) for j in Jurisdiction)


def r2_billable(answered: BOOL, duration_ms: I64) -> BOOL:
    """R2: billable = disposition ANSWERED and duration_ms > 0."""
    return answered & (duration_ms > 0)


def r3_call_class(billable: BOOL, inbound: BOOL, forwarded: BOOL, called_toll_free: BOOL) -> I8:
    """R3: TOLL_FREE / DID for inbound, OUTBOUND_LD / FORWARDED for outbound legs;
    NON_BILLABLE where R2 says so."""
    cls = np.where(
        inbound,
        np.where(called_toll_free, _TF, _DID),
        np.where(forwarded, _FWD, _LD),
    )
    return np.where(billable, cls, _NB).astype(np.int8)


def r4_increment_class(inbound: BOOL, origin_region: I8, destination_region: I8) -> I8:
    """R4: by origin for inbound, by destination otherwise: US region or UNKNOWN ->
    US_DOMESTIC, MEXICO -> MEXICO, anything else -> INTERNATIONAL."""
    region = np.where(inbound, origin_region, destination_region)
    inc = np.where(_US_OR_UNKNOWN[region], _US, _INTL)
    return np.where(region == REGION_CODE[Region.MEXICO], _MX, inc).astype(np.int8)


def r5_seconds(duration_ms: I64) -> I64:
    """R5 (first step): s = ceil(duration_ms / 1000) for duration_ms >= 0."""
    return (duration_ms + 999) // 1000


def r5_billable_seconds(seconds: I64, billable: BOOL, initial: I64, additional: I64) -> I64:
    """R5: s <= initial -> initial; else initial + ceil((s - initial) / additional) *
    additional; 0 when not billable (R2)."""
    over = np.maximum(seconds - initial, 0)
    rounded = initial + (-(-over // additional)) * additional
    return np.where(billable, rounded, 0).astype(np.int64)


@dataclass(frozen=True)
class Jurisdictions:
    """R6 output for long-distance legs: jurisdiction code (-1 = null) and flags."""

    code: I8
    toll_free_dialed: BOOL
    indeterminate: BOOL


def r6_jurisdiction(
    long_distance: BOOL,
    called_toll_free: BOOL,
    destination_us: BOOL,
    origin_region: I8,
    origin_state: npt.NDArray[np.int32],
    destination_state: npt.NDArray[np.int32],
) -> Jurisdictions:
    """R6 jurisdiction of OUTBOUND_LD / FORWARDED legs.

    Toll-free dialled: null (rate 0, TOLL_FREE_DIALED). US destination: INTRASTATE when
    the states are equal, INTERSTATE when they differ or the origin is known but not
    in a US region; INDETERMINATE when a state is unknown. Non-US destination:
    INTERNATIONAL (a project decision; the spec leaves it open).
    """
    origin_foreign = ~_US_OR_UNKNOWN[origin_region]
    dest_known = destination_state >= 0
    same = (origin_state >= 0) & (origin_state == destination_state)
    us_code = np.where(
        ~dest_known,
        _INDET,
        np.where(
            origin_foreign,
            _INTER,
            np.where(origin_state < 0, _INDET, np.where(same, _INTRA, _INTER)),
        ),
    )
    code = np.where(destination_us, us_code, _INTLJ)
    code = np.where(long_distance & ~called_toll_free, code, -1).astype(np.int8)
    return Jurisdictions(
        code=code,
        toll_free_dialed=long_distance & called_toll_free,
        indeterminate=code == _INDET,
    )


def r6_toll_free_rate(
    combo: IDX, origin_region: I8, account_override_micro: I64, tariffs: CompiledTariffs
) -> tuple[I64, BOOL]:
    """R6 TOLL_FREE: the offshore rate of the origin region if the tariff has one
    (-> OFFSHORE), else the account's flat rate override, else the tariff's flat rate."""
    offshore = tariffs.tf_offshore[combo, origin_region]
    flat = np.where(account_override_micro >= 0, account_override_micro, tariffs.tf_domestic[combo])
    is_offshore = offshore >= 0
    return np.where(is_offshore, offshore, flat), is_offshore


def r6_international_rate(
    combo: IDX, digits: I64, ndigits: I64, destination_region: I8, tariffs: CompiledTariffs
) -> I64:
    """R6 non-US destination: longest matching E.164 prefix, else the destination
    region's rate (CANADA, CARIBBEAN, MEXICO), else the international default."""
    rate = tariffs.intl_region[combo, destination_region]
    rate = np.where(rate >= 0, rate, tariffs.intl_default[combo])
    for c in np.unique(combo):
        table = tariffs.intl_prefixes[c]
        if not table.by_length:
            continue
        rows = np.flatnonzero(combo == c)
        hit = table.longest(digits[rows], ndigits[rows])
        found = hit >= 0
        rate[rows[found]] = tariffs.intl_prefix_rates[c][hit[found]]
    return rate


def r7_usage_charge(billable_seconds: I64, rate_micro: I64) -> I64:
    """R7: billable_seconds * rate_per_min / 60, half-up to 6 places (micro-dollars)."""
    return charge_for_seconds(billable_seconds, rate_micro)


def r8_payphone(toll_free: BOOL, ani_ii: pa.Array, combo: IDX, tariffs: CompiledTariffs) -> BOOL:
    """R8: answered TOLL_FREE call whose ani_ii is in the tariff's payphone set."""
    out = np.zeros(toll_free.shape, dtype=np.bool_)
    for c in np.unique(combo[toll_free]):
        digits = pa.array(sorted(tariffs.payphone_ani_ii[c]), type=pa.string())
        in_set = pc.fill_null(pc.is_in(ani_ii, value_set=digits), False)
        in_set_np = np.asarray(in_set.to_numpy(zero_copy_only=False), dtype=np.bool_)
        rows = toll_free & (combo == c)
        out[rows] = in_set_np[rows]
    return out


def r9_total(usage: I64, surcharge: I64) -> I64:
    """R9: total_charge = usage_charge + surcharge."""
    return usage + surcharge


def r10_short_call(billable: BOOL, seconds: I64, combo: IDX, tariffs: CompiledTariffs) -> BOOL:
    """R10 SHORT_CALL: answered (billable) with s <= the tariff's short_call.max_seconds."""
    return billable & (seconds <= tariffs.short_call_max_seconds[combo])
