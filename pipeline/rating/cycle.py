"""Closing a billing cycle: rated records -> invoice lines (C1-C4, spec section 4).

Pure, in two steps so that a cycle of any size closes in bounded memory:

1. the cycle's calls (highest revision of each call_id, :func:`latest_revisions`)
   become :class:`CycleTotals`, a few rows per account: counts, exact money sums
   (micro-dollars) and sums of whole seconds. :func:`cycle_totals` does it in memory;
   :mod:`pipeline.lake.cycle_scan` does the same out of core over the lake (DuckDB).
2. :func:`invoice_lines` applies C1-C4 to those totals with exact ``Decimal``
   arithmetic: amounts are computed in seconds and micro-dollars, divided by 60 once,
   and rounded half-up to cents per line.

:func:`close_cycle` chains both in memory (tests, small cycles).

Decisions where the spec is silent (see docs/decisions.md):

* A call's highest revision wins even when it sits in another cycle's partition
  (``elsewhere`` lists the revisions rated in other cycles); two
  copies of the same (call_id, revision) count once.
* "completed" calls (C2) are the billable ones (ANSWERED with duration > 0).
* A usage line is written for each class the account used, even at 0.00.
* C3 writes no line when the minutes needed are 0 even if the call share is below
  the threshold (the charge is on minutes).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.rating.codes import CallClass, Flag, LineType
from pipeline.rating.columns import INVOICE_LINE_SCHEMA
from pipeline.rating.money import round_cents
from pipeline.rating.reference import ReferenceData
from pipeline.rating.tariffs import TariffBook, TariffVersion

SIXTY = Decimal(60)
_QUANTITY = Decimal("0.000001")

USAGE_LINE = {
    (CallClass.TOLL_FREE, False): LineType.USAGE_TOLL_FREE_DOMESTIC,
    (CallClass.TOLL_FREE, True): LineType.USAGE_TOLL_FREE_OFFSHORE,
    (CallClass.DID, False): LineType.USAGE_DID,
    (CallClass.OUTBOUND_LD, False): LineType.USAGE_OUTBOUND_LD,
    (CallClass.FORWARDED, False): LineType.USAGE_FORWARDED,
}
LINE_ORDER = tuple(LineType)


def cycle_bounds(cycle: str) -> tuple[datetime, datetime]:
    """``[start, end)`` of a ``YYYY-MM`` cycle in UTC (ValueError if malformed)."""
    start = datetime.strptime(cycle, "%Y-%m").replace(tzinfo=UTC)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def latest_revisions(rated: pa.Table, elsewhere: pa.Table | None = None) -> pa.Table:
    """Keep the highest revision of each call_id (one copy of exact duplicates), and
    drop calls that ``elsewhere`` (``call_id``, ``revision`` rated in other cycles)
    holds at a higher revision."""
    if rated.num_rows == 0:
        return rated
    order = pc.sort_indices(
        rated,
        sort_keys=[
            ("call_id", "ascending"),
            ("revision", "descending"),
            ("source_partition", "descending"),
            ("source_offset", "descending"),
            ("source_file", "descending"),
            ("source_index", "descending"),
        ],
    )
    ordered = rated.take(order)
    ids = ordered.column("call_id").combine_chunks()
    first = np.ones(len(ids), dtype=np.bool_)
    if len(ids) > 1:
        first[1:] = np.asarray(pc.not_equal(ids[1:], ids[:-1]).to_numpy(zero_copy_only=False))
    kept = ordered.filter(pa.array(first))
    if elsewhere is not None and elsewhere.num_rows:
        other = elsewhere.select(["call_id", "revision"]).rename_columns(["call_id", "_other_rev"])
        joined = kept.select(["call_id", "revision"]).join(other, "call_id", join_type="inner")
        newer = pc.greater(joined.column("_other_rev"), joined.column("revision"))
        superseded = joined.filter(newer).column("call_id")
        kept = kept.filter(
            pc.invert(pc.is_in(kept.column("call_id"), value_set=superseded.combine_chunks()))
        )
    return kept


@dataclass(frozen=True)
class _Line:
    account_id: str
    line_type: LineType
    trunk_id: str | None
    quantity: Decimal
    unit: str
    unit_price: Decimal | None
    amount: Decimal


#: Sums of money over a cycle: exact, wide enough for any cycle (38 digits).
SUM_MONEY = pa.decimal128(38, 6)

#: The per-account totals C1-C4 are computed from (:class:`CycleTotals`), one schema
#: per table. Every count and sum is over the cycle's calls after
#: :func:`latest_revisions`; "billable" = ``call_class != NON_BILLABLE`` (the
#: completed calls of C2); ``seconds`` = duration rounded up to whole seconds.
TOTALS_SCHEMAS: dict[str, pa.Schema] = {
    # every account with a call in the cycle; completed = its billable calls (C2)
    "accounts": pa.schema(
        [("account_id", pa.string()), ("calls", pa.int64()), ("completed", pa.int64())]
    ),
    # billable calls per class and OFFSHORE flag (C1 usage lines)
    "usage": pa.schema(
        [
            ("account_id", pa.string()),
            ("call_class", pa.string()),
            ("offshore", pa.bool_()),
            ("calls", pa.int64()),
            ("usage_charge", SUM_MONEY),
            ("billable_seconds", pa.int64()),
        ]
    ),
    # calls with a surcharge > 0 (C1 PAYPHONE_SURCHARGE)
    "payphone": pa.schema(
        [("account_id", pa.string()), ("calls", pa.int64()), ("surcharge", SUM_MONEY)]
    ),
    # billable calls per whole ``seconds`` up to the short-call bound (C2)
    "short": pa.schema(
        [("account_id", pa.string()), ("seconds", pa.int64()), ("calls", pa.int64())]
    ),
    # billable flat-rate (not OFFSHORE) TOLL_FREE calls per origin carrier category (C3)
    "carrier": pa.schema(
        [
            ("account_id", pa.string()),
            ("category", pa.string()),
            ("calls", pa.int64()),
            ("billable_seconds", pa.int64()),
        ]
    ),
    # billable inbound (TOLL_FREE, DID) seconds per trunk (C4)
    "trunks": pa.schema(
        [("account_id", pa.string()), ("trunk_id", pa.string()), ("billable_seconds", pa.int64())]
    ),
}


@dataclass(frozen=True)
class CycleTotals:
    """What C1-C4 need of a cycle's calls: a few rows per account (schemas in
    :data:`TOTALS_SCHEMAS`), whatever the number of calls. Built in memory by
    :func:`cycle_totals`, or out of core by a scan of the lake
    (:mod:`pipeline.lake.cycle_scan`); both give the same totals for the same calls."""

    accounts: pa.Table
    usage: pa.Table
    payphone: pa.Table
    short: pa.Table
    carrier: pa.Table
    trunks: pa.Table

    @classmethod
    def of(cls, tables: dict[str, pa.Table]) -> CycleTotals:
        """From tables named as in :data:`TOTALS_SCHEMAS` (cast to those schemas)."""
        return cls(**{name: tables[name].cast(schema) for name, schema in TOTALS_SCHEMAS.items()})


def short_call_bound(tariffs: TariffBook, cycle: str) -> int:
    """The largest C2 ``short_call.max_seconds`` of any tariff version in effect at the
    end of ``cycle``: :attr:`CycleTotals.short` counts calls up to this many seconds."""
    last_instant = cycle_bounds(cycle)[1] - timedelta(microseconds=1)
    bounds = [
        version.cycle.short_call.max_seconds
        for tariff in tariffs
        if (version := tariff.version_at(last_instant)) is not None
    ]
    return max(bounds, default=0)


def cycle_totals(calls: pa.Table, short_bound: int) -> CycleTotals:
    """:class:`CycleTotals` of ``calls`` (rated records of one cycle after
    :func:`latest_revisions`), in memory with Arrow ``group_by``."""
    billable = pc.not_equal(calls.column("call_class"), CallClass.NON_BILLABLE.value)
    offshore = has_flag(calls.column("flags"), Flag.OFFSHORE)
    seconds = pc.divide(pc.add(calls.column("duration_ms"), 999), 1000)  # ceil for ms >= 0
    keep = "account_id trunk_id call_class origin_carrier_category usage_charge surcharge"
    calls = calls.select([*keep.split(), "billable_seconds"])
    calls = calls.append_column("billable", billable).append_column("offshore", offshore)
    calls = calls.append_column("seconds", seconds)
    answered = calls.filter(calls.column("billable"))
    zero = pa.scalar(Decimal(0), calls.schema.field("surcharge").type)
    flat_tf = pc.and_(
        pc.equal(answered.column("call_class"), CallClass.TOLL_FREE.value),
        pc.invert(answered.column("offshore")),
    )
    inbound = pc.is_in(
        answered.column("call_class"),
        value_set=pa.array([CallClass.TOLL_FREE.value, CallClass.DID.value]),
    )
    count: tuple[list[str], str] = ([], "count_all")
    parts = {
        "accounts": calls.group_by("account_id").aggregate([count, ("billable", "sum")]),
        "usage": answered.group_by(["account_id", "call_class", "offshore"]).aggregate(
            [count, ("usage_charge", "sum"), ("billable_seconds", "sum")]
        ),
        "payphone": calls.filter(pc.greater(calls.column("surcharge"), zero))
        .group_by("account_id")
        .aggregate([count, ("surcharge", "sum")]),
        "short": answered.filter(pc.less_equal(answered.column("seconds"), short_bound))
        .group_by(["account_id", "seconds"])
        .aggregate([count]),
        "carrier": answered.filter(flat_tf)
        .group_by(["account_id", "origin_carrier_category"])
        .aggregate([count, ("billable_seconds", "sum")]),
        "trunks": answered.filter(inbound)
        .group_by(["account_id", "trunk_id"])
        .aggregate([("billable_seconds", "sum")]),
    }
    names = {
        "count_all": "calls",
        "billable_sum": "completed",
        "usage_charge_sum": "usage_charge",
        "billable_seconds_sum": "billable_seconds",
        "surcharge_sum": "surcharge",
        "origin_carrier_category": "category",
    }
    tables = {}
    for name, table in parts.items():
        table = table.rename_columns([names.get(c, c) for c in table.column_names])
        if name == "accounts":
            at = table.schema.get_field_index("completed")
            table = table.set_column(at, "completed", pc.fill_null(table.column(at), 0))
        tables[name] = table.select(TOTALS_SCHEMAS[name].names)
    return CycleTotals.of(tables)


def close_cycle(
    rated: pa.Table,
    ref: ReferenceData,
    tariffs: TariffBook,
    cycle: str,
    elsewhere: pa.Table | None = None,
    *,
    rated_calls_version: int | None = None,
) -> pa.Table:
    """Invoice lines (:data:`INVOICE_LINE_SCHEMA`) of ``cycle`` for every account with
    rated records in it, in memory: :func:`latest_revisions`, :func:`cycle_totals`,
    :func:`invoice_lines`. Deterministic: the same input gives the same lines, sorted by
    account, line type and trunk. ``elsewhere``: see :func:`latest_revisions`."""
    rated = rated.filter(pc.equal(rated.column("billing_cycle"), cycle))
    calls = latest_revisions(rated, elsewhere)
    totals = cycle_totals(calls, short_call_bound(tariffs, cycle))
    return invoice_lines(totals, ref, tariffs, cycle, rated_calls_version=rated_calls_version)


def invoice_lines(
    totals: CycleTotals,
    ref: ReferenceData,
    tariffs: TariffBook,
    cycle: str,
    *,
    rated_calls_version: int | None = None,
) -> pa.Table:
    """C1-C4 (spec section 4) over a cycle's :class:`CycleTotals`: the invoice lines
    (:data:`INVOICE_LINE_SCHEMA`) of every account with calls in the cycle, sorted by
    account, line type and trunk. Amounts are exact ``Decimal``: sums of micro-dollars
    or of seconds, divided by 60 once, rounded half-up to cents per line.
    ``rated_calls_version``: the ``rated_calls`` table version the totals were computed
    from, recorded on every line. ValueError if an account has no tariff version in
    effect at the end of the cycle (``totals.short`` must reach
    :func:`short_call_bound`)."""
    _start, end = cycle_bounds(cycle)
    last_instant = end - timedelta(microseconds=1)

    accounts = ref.account_ids.to_pylist()
    tariff_of = dict(zip(accounts, ref.account_tariff, strict=True))
    cap_of = dict(zip(accounts, ref.account_enforce_cap.tolist(), strict=True))

    lines: list[_Line] = []
    params: dict[str, TariffVersion] = {}
    labels: dict[str, tuple[str, str]] = {}
    completed: dict[str, int] = {}
    for row in sorted(_rows(totals.accounts), key=lambda r: r["account_id"]):
        account = row["account_id"]
        tariff = tariffs[tariff_of[account]] if account in tariff_of else None
        version = tariff.version_at(last_instant) if tariff else None
        if tariff is None or version is None:
            raise ValueError(
                f"account {account!r}: no tariff version in effect at the end of {cycle}"
            )
        params[account] = version
        labels[account] = (tariff.tariff_id, tariff.version_label(version))
        completed[account] = row["completed"]

    for row in _rows(totals.usage):  # C1: usage per class, offshore toll-free apart
        line_type = USAGE_LINE[(CallClass(row["call_class"]), bool(row["offshore"]))]
        lines.append(
            _Line(
                row["account_id"],
                line_type,
                None,
                _minutes(row["billable_seconds"]),
                "MIN",
                None,
                round_cents(row["usage_charge"]),
            )
        )

    for row in _rows(totals.payphone):  # C1: PAYPHONE_SURCHARGE
        per_call = params[row["account_id"]].toll_free.payphone_surcharge_per_call
        count = row["calls"]
        unit_price = per_call if row["surcharge"] == per_call * count else None
        lines.append(
            _Line(
                row["account_id"],
                LineType.PAYPHONE_SURCHARGE,
                None,
                Decimal(count),
                "CALL",
                unit_price,
                round_cents(row["surcharge"]),
            )
        )

    short_calls: dict[str, dict[int, int]] = {}
    for row in _rows(totals.short):
        short_calls.setdefault(row["account_id"], {})[row["seconds"]] = row["calls"]
    for account, version in params.items():  # C2
        rule = version.cycle.short_call
        n_completed = completed[account]
        by_seconds = short_calls.get(account, {})
        short = sum(n for s, n in by_seconds.items() if s <= rule.max_seconds)
        if n_completed and Decimal(short) / Decimal(n_completed) >= rule.min_share:
            lines.append(
                _Line(
                    account,
                    LineType.SHORT_CALL_SURCHARGE,
                    None,
                    Decimal(short),
                    "CALL",
                    rule.per_call,
                    round_cents(short * rule.per_call),
                )
            )

    carrier: dict[str, list[dict[str, Any]]] = {}
    for row in _rows(totals.carrier):
        carrier.setdefault(row["account_id"], []).append(row)
    for account, version in params.items():  # C3
        rule3 = version.cycle.carrier_mix
        mine = carrier.get(account, [])
        n_all = sum(r["calls"] for r in mine)
        if n_all == 0:
            continue
        good = [r for r in mine if r["category"] in rule3.categories]
        n_good = sum(r["calls"] for r in good)
        if Decimal(n_good) / Decimal(n_all) >= rule3.min_share:
            continue
        s_all = Decimal(sum(r["billable_seconds"] for r in mine))
        s_good = Decimal(sum(r["billable_seconds"] for r in good))
        needed_s = max(Decimal(0), rule3.min_share * s_all - s_good)
        if needed_s == 0:
            continue
        lines.append(
            _Line(
                account,
                LineType.CARRIER_MIX_SURCHARGE,
                None,
                _minutes(needed_s),
                "MIN",
                rule3.per_min,
                round_cents(rule3.per_min * needed_s / SIXTY),
            )
        )

    for row in _rows(totals.trunks):  # C4
        account = row["account_id"]
        if not cap_of.get(account, False):
            continue
        rule4 = params[account].cycle.minute_cap
        over_s = Decimal(row["billable_seconds"]) - Decimal(rule4.minutes_per_trunk) * SIXTY
        if over_s <= 0:
            continue
        lines.append(
            _Line(
                account,
                LineType.MINUTE_CAP_OVERAGE,
                row["trunk_id"],
                _minutes(over_s),
                "MIN",
                rule4.per_min,
                round_cents(rule4.per_min * over_s / SIXTY),
            )
        )

    lines.sort(key=lambda ln: (ln.account_id, LINE_ORDER.index(ln.line_type), ln.trunk_id or ""))
    return pa.Table.from_pylist(
        [
            {
                "account_id": ln.account_id,
                "billing_cycle": cycle,
                "line_type": ln.line_type.value,
                "trunk_id": ln.trunk_id,
                "quantity": ln.quantity,
                "unit": ln.unit,
                "unit_price": ln.unit_price,
                "amount": ln.amount,
                "tariff_id": labels[ln.account_id][0],
                "tariff_version": labels[ln.account_id][1],
                "rated_calls_version": rated_calls_version,
            }
            for ln in lines
        ],
        schema=INVOICE_LINE_SCHEMA,
    )


def _rows(table: pa.Table) -> Iterator[dict[str, Any]]:
    yield from table.to_pylist()


def has_flag(flags: pa.ChunkedArray | pa.ListArray, flag: Flag) -> pa.Array:
    """Boolean per row: does the ``flags`` list contain ``flag``."""
    lists = flags.combine_chunks() if isinstance(flags, pa.ChunkedArray) else flags
    out = np.zeros(len(lists), dtype=np.bool_)
    if len(lists):
        parents = np.asarray(pc.list_parent_indices(lists).to_numpy(zero_copy_only=False))
        hits = np.asarray(
            pc.equal(pc.list_flatten(lists), flag.value).to_numpy(zero_copy_only=False)
        )
        out[parents[hits]] = True
    return pa.array(out)


def _minutes(seconds: int | Decimal) -> Decimal:
    """Seconds -> minutes, half-up to 6 places (quantities only; amounts stay exact)."""
    return (Decimal(seconds) / SIXTY).quantize(_QUANTITY, rounding=ROUND_HALF_UP)
