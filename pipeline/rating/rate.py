"""Rating a batch: call events in, rated records and dead letters out (R1-R11).

:func:`rate_batch` is pure and vectorized: one pass of Arrow compute and numpy over
the whole batch, no per-record Python loop (only dead letters get a per-row
message). Rows are independent, so rating any split of a batch and concatenating
gives the same records as rating the whole (a tested property).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.rating.codes import (
    CATEGORY_NAMES,
    MAX_DURATION_MS,
    REGION_CODE,
    REGIONS,
    US_REGIONS,
    Reason,
    Region,
)
from pipeline.rating.columns import (
    CALL_EVENT_FIELDS,
    DEAD_LETTER_SCHEMA,
    EVENT_SCHEMA,
    RATED_SCHEMA,
)
from pipeline.rating.compiled import INCREMENT_CLASSES, CompiledTariffs, compiled
from pipeline.rating.money import micro_to_decimal_array
from pipeline.rating.numbers import (
    EventNumbers,
    Numbers,
    choose,
    locate,
    parse_event_numbers,
    region_of,
    state_of,
)
from pipeline.rating.reference import ReferenceData
from pipeline.rating.rules import (
    CALL_CLASSES,
    FLAGS,
    JURISDICTIONS,
    r2_billable,
    r3_call_class,
    r4_increment_class,
    r5_billable_seconds,
    r5_seconds,
    r6_international_rate,
    r6_jurisdiction,
    r6_toll_free_rate,
    r7_usage_charge,
    r8_payphone,
    r9_total,
    r10_short_call,
)
from pipeline.rating.tariffs import TariffBook

I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]

#: Fields whose absence (null, or empty string) makes an event invalid (R1).
REQUIRED = (
    "call_id", "account_id", "trunk_id", "direction", "called_number",
    "start_time", "duration_ms", "disposition",
)  # fmt: skip
ENUMS = {
    "direction": ("INBOUND", "OUTBOUND"),
    "leg": ("ORIGINAL", "FORWARDED"),
    "disposition": ("ANSWERED", "BUSY", "NO_ANSWER", "FAILED", "CANCELLED"),
}
#: Optional string fields (every string field of a call event that is neither required
#: nor an enum: calling_number, original_calling_number, ani_ii, switch_id). The empty
#: string in one of them is absent, exactly like null (R1), and is stored as null.
OPTIONAL_STRINGS: tuple[str, ...] = tuple(
    f.name
    for f in CALL_EVENT_FIELDS
    if pa.types.is_string(f.type) and f.name not in REQUIRED and f.name not in ENUMS
)
#: R8: ANI II is two ASCII digits. Anything else is treated as absent, stored as null
#: (it is free text that may hold a phone number) and flagged ANI_II_INVALID.
ANI_II_PATTERN = r"^[0-9]{2}$"
_REGION_NAMES = pa.array(REGIONS, type=pa.string())
_UNKNOWN_REGION = REGION_CODE[Region.UNKNOWN]


@dataclass(frozen=True)
class RatingResult:
    """``rated`` (:data:`RATED_SCHEMA`) and ``dead_letters`` (:data:`DEAD_LETTER_SCHEMA`).

    Every input row is in exactly one of the two, in input order.
    """

    rated: pa.Table
    dead_letters: pa.Table


def conform(events: pa.Table) -> pa.Table:
    """Project ``events`` onto :data:`EVENT_SCHEMA`: missing columns become nulls,
    extra columns are dropped, types are cast (ValueError if a cast is impossible)."""
    columns = []
    for f in EVENT_SCHEMA:
        if f.name in events.column_names:
            col = events.column(f.name)
            columns.append(col if col.type == f.type else col.cast(f.type))
        else:
            columns.append(pa.nulls(events.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=EVENT_SCHEMA)


def blank_to_null(events: pa.Table) -> pa.Table:
    """R1: the empty string in an :data:`OPTIONAL_STRINGS` field becomes null (switches
    write ``""`` for "not provided"). ``events`` conforms to :data:`EVENT_SCHEMA`."""
    for name in OPTIONAL_STRINGS:
        col = events.column(name)
        blank = pc.equal(col, "")
        if pc.any(blank).as_py():
            i = events.schema.get_field_index(name)
            events = events.set_column(
                i, name, pc.if_else(blank, pa.scalar(None, pa.string()), col)
            )
    return events


def _np(col: pa.ChunkedArray | pa.Array, fill: object) -> npt.NDArray[np.generic]:
    return np.asarray(pc.fill_null(col, fill).to_numpy(zero_copy_only=False))


def _take(names: pa.Array, codes: npt.NDArray[np.integer]) -> pa.Array:
    """``names[codes]`` as a string array; negative codes give null."""
    idx = pa.array(codes.astype(np.int32), mask=codes < 0)
    return pc.take(names, idx)


def r1_validate(
    events: pa.Table, ref: ReferenceData, tariffs: CompiledTariffs, called: Numbers
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """R1: reason code per row (-1 = valid, else an index into :data:`REASONS`),
    the account index and the tariff combo of each row (-1 where unknown).
    ``called`` is the parsed called_number column."""
    n = events.num_rows
    reason = np.full(n, -1, dtype=np.int8)

    def fail(mask: BOOL, why: Reason) -> None:
        reason[(reason < 0) & mask] = REASONS.index(why)

    missing = np.zeros(n, dtype=np.bool_)
    for name in REQUIRED:
        col = events.column(name)
        bad = pc.is_null(col)
        if pa.types.is_string(col.type):
            bad = pc.or_(bad, pc.equal(col, ""))
        missing |= _np(bad, True).astype(np.bool_)
    fail(missing, Reason.MISSING_FIELD)
    for name, symbols in ENUMS.items():
        ok = pc.is_in(events.column(name), value_set=pa.array(symbols))
        if name == "leg":  # leg defaults to ORIGINAL
            ok = pc.or_(ok, pc.is_null(events.column(name)))
        fail(~_np(ok, False).astype(np.bool_), Reason.INVALID_VALUE)
    duration = _np(events.column("duration_ms"), 0).astype(np.int64)
    fail(duration < 0, Reason.NEGATIVE_DURATION)
    fail(duration > MAX_DURATION_MS, Reason.IMPLAUSIBLE_DURATION)
    fail(~called.well_formed, Reason.MALFORMED_CALLED_NUMBER)
    account = ref.account_index(events.column("account_id"))
    fail(account < 0, Reason.UNKNOWN_ACCOUNT)
    tariff_idx = np.where(account >= 0, tariffs.account_tariffs(ref)[np.maximum(account, 0)], -1)
    start_us = _np(events.column("start_time").cast(pa.int64()), 0).astype(np.int64)
    combo = tariffs.combo_at(tariff_idx, start_us)
    fail(combo < 0, Reason.NO_TARIFF_IN_EFFECT)
    return reason, account, combo


REASONS: tuple[Reason, ...] = tuple(Reason)

_DETAIL = {
    Reason.MISSING_FIELD: "a required field is null or empty: {fields}",
    Reason.INVALID_VALUE: "an enum field holds an unknown symbol: {fields}",
    Reason.NEGATIVE_DURATION: "duration_ms is negative",
    Reason.IMPLAUSIBLE_DURATION: "duration_ms is longer than 7 days",
    Reason.MALFORMED_CALLED_NUMBER: "called_number is not a well-formed E.164 number",
    Reason.UNKNOWN_ACCOUNT: "account_id is not in accounts.csv",
    Reason.NO_TARIFF_IN_EFFECT: "no tariff version is in effect at start_time",
}


def _dead_letters(bad: pa.Table, codes: npt.NDArray[np.int8]) -> pa.Table:
    """Dead-letter rows for the invalid events (no phone number in ``detail``)."""
    details = []
    for i, code in enumerate(codes):  # only invalid rows: rare
        why = REASONS[code]
        fields = ""
        if why in (Reason.MISSING_FIELD, Reason.INVALID_VALUE):
            names = REQUIRED if why is Reason.MISSING_FIELD else tuple(ENUMS)
            row = {k: bad.column(k)[i].as_py() for k in names}
            if why is Reason.MISSING_FIELD:
                fields = ", ".join(k for k, v in row.items() if v is None or v == "")
            else:
                fields = ", ".join(k for k, v in row.items() if v is not None and v not in ENUMS[k])
        details.append(_DETAIL[why].format(fields=fields))
    return pa.table(
        {
            "reason": pa.array([REASONS[c].value for c in codes], type=pa.string()),
            "detail": pa.array(details, type=pa.string()),
            "call_id": bad.column("call_id"),
            "revision": bad.column("revision"),
            **{
                f.name: bad.column(f.name)
                for f in DEAD_LETTER_SCHEMA
                if f.name.startswith("source_")
            },
            "payload": bad.column("payload"),
        },
        schema=DEAD_LETTER_SCHEMA,
    )


def rate_batch(
    events: pa.Table,
    ref: ReferenceData,
    tariffs: TariffBook,
    numbers: EventNumbers | None = None,
) -> RatingResult:
    """Rate a batch of call events (any table conforming to :data:`EVENT_SCHEMA`).

    ``ref`` must hold the LNP entries of the batch's origin numbers (all of them in
    batch mode; the resolved subset in streaming mode). ``numbers`` are the batch's
    parsed number columns when the caller already has them
    (:func:`~pipeline.rating.numbers.parse_event_numbers` of the same ``events``).
    An optional string field holding ``""`` is rated and stored as null (R1, see
    :func:`blank_to_null`); an ``ani_ii`` that is not two ASCII digits is ignored by R8,
    stored as null and flagged ANI_II_INVALID.
    Never raises for bad data: invalid events become dead letters (R1). Raises
    ``ConfigError`` only if an account names a tariff that is not loaded, and
    ``ValueError`` if ``numbers`` has another length than ``events``.
    """
    events = blank_to_null(conform(events))
    book = compiled(tariffs)
    if numbers is None:
        numbers = parse_event_numbers(events)
    elif len(numbers) != events.num_rows:
        raise ValueError(f"{len(numbers)} parsed numbers for {events.num_rows} events")
    reason, account, combo = r1_validate(events, ref, book, numbers.called)
    ok = reason < 0
    if ok.all():
        good, dead = events, DEAD_LETTER_SCHEMA.empty_table()
    else:
        good = events.drop_columns(["payload"]).filter(pa.array(ok))  # rated rows carry none
        dead = _dead_letters(events.filter(pa.array(~ok)), reason[~ok])
        numbers = numbers.select(ok)
    rated = _rate_valid(good, ref, book, account[ok], combo[ok], numbers)
    return RatingResult(rated=rated, dead_letters=dead)


def _origin(inbound: BOOL, forwarded: BOOL, calling: Numbers, original: Numbers) -> Numbers:
    """The origin number R6 and R10 use: original_calling_number on FORWARDED legs when
    present, else calling_number."""
    return choose(~inbound & forwarded & original.present, original, calling)


def origin_numbers(events: pa.Table, numbers: EventNumbers | None = None) -> Numbers:
    """The parsed origin number of each event (for adapters that pre-resolve LNP);
    ``numbers``: the events' parsed number columns, if already at hand."""
    inbound = _np(pc.equal(events.column("direction"), "INBOUND"), False).astype(np.bool_)
    forwarded = _np(pc.equal(events.column("leg"), "FORWARDED"), False).astype(np.bool_)
    if numbers is None:
        numbers = parse_event_numbers(events)
    return _origin(inbound, forwarded, numbers.calling, numbers.original)


def _rate_valid(
    ev: pa.Table,
    ref: ReferenceData,
    book: CompiledTariffs,
    account: npt.NDArray[np.intp],
    combo: npt.NDArray[np.intp],
    numbers: EventNumbers,
) -> pa.Table:
    n = ev.num_rows
    inbound = _np(pc.equal(ev.column("direction"), "INBOUND"), False).astype(np.bool_)
    forwarded = _np(pc.equal(ev.column("leg"), "FORWARDED"), False).astype(np.bool_)
    answered = _np(pc.equal(ev.column("disposition"), "ANSWERED"), False).astype(np.bool_)
    duration = _np(ev.column("duration_ms"), 0).astype(np.int64)

    called, calling, original = numbers.called, numbers.calling, numbers.original
    origin = _origin(inbound, forwarded, calling, original)

    origin_region = region_of(origin, ref)
    origin_at = locate(origin, ref)
    origin_state, origin_ocn, origin_category = origin_at.state, origin_at.ocn, origin_at.category
    dest_region = region_of(called, ref)
    dest_state = state_of(called, ref)

    billable = r2_billable(answered, duration)
    call_class = r3_call_class(billable, inbound, forwarded, called.toll_free)
    inc_class = r4_increment_class(inbound, origin_region, dest_region)
    seconds = r5_seconds(duration)
    billable_seconds = r5_billable_seconds(
        seconds, billable, book.inc_initial[combo, inc_class], book.inc_additional[combo, inc_class]
    )

    cls = np.asarray(CALL_CLASSES)[call_class]
    is_tf, is_did = cls == "TOLL_FREE", cls == "DID"
    is_ld = (cls == "OUTBOUND_LD") | (cls == "FORWARDED")
    dest_us = called.nanp & np.isin(dest_region, _US_OR_UNKNOWN_CODES)
    juris = r6_jurisdiction(
        is_ld, called.toll_free, dest_us, origin_region, origin_state, dest_state
    )

    rate = np.zeros(n, dtype=np.int64)
    tf_rate, offshore = r6_toll_free_rate(
        combo, origin_region, ref.account_toll_free_micro[account], book
    )
    rate = np.where(is_tf, tf_rate, rate)
    rate = np.where(is_did, book.did[combo], rate)
    us_ld = is_ld & ~called.toll_free & dest_us
    rate = np.where(
        us_ld,
        np.where(
            juris.code == JURISDICTIONS.index("INTERSTATE"),
            book.interstate[combo],
            book.intrastate[combo],
        ),
        rate,
    )
    intl = is_ld & ~called.toll_free & ~dest_us
    if intl.any():
        rows = np.flatnonzero(intl)
        rate[rows] = r6_international_rate(
            combo[rows], called.digits[rows], called.ndigits[rows], dest_region[rows], book
        )
    usage = r7_usage_charge(billable_seconds, rate)
    # R8 needs two ASCII digits; anything else is absent, null in the record and flagged.
    ani_ii = ev.column("ani_ii").combine_chunks()
    ani_ok = pc.match_substring_regex(ani_ii, ANI_II_PATTERN)
    ani_invalid = ~_np(ani_ok, True).astype(np.bool_)
    ani_ii = pc.if_else(ani_ok, ani_ii, pa.scalar(None, pa.string()))
    payphone = r8_payphone(is_tf, ani_ii, combo, book)
    surcharge = np.where(payphone, book.payphone_surcharge[combo], 0).astype(np.int64)
    total = r9_total(usage, surcharge)

    # R10 FRAUD_SUSPECT: calling, called or origin (the original caller of a forwarded
    # leg) under a blocklisted prefix; the three columns probed in one pass.
    screened = (calling, called, origin)
    listed = ref.blocklist.longest(
        np.concatenate([x.digits for x in screened]),
        np.concatenate([x.ndigits for x in screened]),
    )
    blocked = (listed >= 0).reshape(len(screened), n).any(axis=0)
    flag_masks = {
        "ORIGIN_UNKNOWN": origin_region == _UNKNOWN_REGION,
        "OFFSHORE": is_tf & offshore,
        "PAYPHONE": payphone,
        "TOLL_FREE_DIALED": juris.toll_free_dialed,
        "JURISDICTION_INDETERMINATE": juris.indeterminate,
        "SHORT_CALL": r10_short_call(billable, seconds, combo, book),
        "FRAUD_SUSPECT": blocked,
        "ANI_II_INVALID": ani_invalid,
    }
    flags = _flag_lists(
        np.column_stack([flag_masks[f] for f in FLAGS]) if n else np.zeros((0, len(FLAGS)), bool)
    )

    start_us = _np(ev.column("start_time").cast(pa.int64()), 0).astype(np.int64)
    months = start_us.astype("datetime64[us]").astype("datetime64[M]")
    uniq, month_idx = np.unique(months, return_inverse=True)
    month_names = pa.array([str(m) for m in uniq], type=pa.string())

    states = pa.array(ref.states, type=pa.string())
    out = {
        "call_id": ev.column("call_id"),
        "revision": pc.fill_null(ev.column("revision"), 0),
        "account_id": ev.column("account_id"),
        "trunk_id": ev.column("trunk_id"),
        "direction": ev.column("direction"),
        "leg": pc.fill_null(ev.column("leg"), "ORIGINAL"),
        "calling_number": ev.column("calling_number"),
        "called_number": ev.column("called_number"),
        "original_calling_number": ev.column("original_calling_number"),
        "start_time": ev.column("start_time"),
        "billing_cycle": _take(month_names, month_idx.reshape(-1)),
        "disposition": ev.column("disposition"),
        "duration_ms": ev.column("duration_ms"),
        "ani_ii": ani_ii,
        "sip_response_code": ev.column("sip_response_code"),
        "switch_id": ev.column("switch_id"),
        "call_class": _take(pa.array(CALL_CLASSES), call_class),
        "origin_region": _take(_REGION_NAMES, origin_region),
        "origin_state": _take(states, origin_state),
        "origin_ocn": _take(pa.array(ref.ocns, type=pa.string()), origin_ocn),
        "origin_carrier_category": _take(pa.array(CATEGORY_NAMES), origin_category),
        "destination_region": _take(_REGION_NAMES, dest_region),
        "destination_state": _take(states, dest_state),
        "jurisdiction": _take(pa.array(JURISDICTIONS), juris.code),
        "increment_class": _take(pa.array(INCREMENT_CLASSES), inc_class),
        "billable_seconds": pa.array(billable_seconds, type=pa.int64()),
        "rate_per_min": micro_to_decimal_array(np.where(billable, rate, 0)),
        "usage_charge": micro_to_decimal_array(usage),
        "surcharge": micro_to_decimal_array(surcharge),
        "total_charge": micro_to_decimal_array(total),
        "tariff_id": _take(pa.array(book.combo_tariff), combo),
        "tariff_version": _take(pa.array(book.labels), combo),
        "flags": flags,
    }
    for f in RATED_SCHEMA:
        if f.name.startswith("source_"):
            out[f.name] = ev.column(f.name)
    return pa.table(out, schema=RATED_SCHEMA)


_US_OR_UNKNOWN_CODES = np.asarray([REGION_CODE[r] for r in (*US_REGIONS, Region.UNKNOWN)])
_FLAG_NAMES = pa.array(FLAGS, type=pa.string())


def _flag_lists(masks: BOOL) -> pa.ListArray:
    """R10: per row, the names of the set flags in :data:`FLAGS` order."""
    counts = masks.sum(axis=1, dtype=np.int32)
    offsets = np.zeros(masks.shape[0] + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    _, which = np.nonzero(masks)  # row-major: grouped by row, flags in order
    values = pc.take(_FLAG_NAMES, pa.array(which.astype(np.int32)))
    return pa.ListArray.from_arrays(pa.array(offsets), values)
