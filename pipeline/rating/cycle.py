"""Closing a billing cycle: rated records -> invoice lines (C1-C4, spec section 4).

Pure: :func:`close_cycle` takes the cycle's rated records (every revision, as read
from the lake), the reference data (accounts) and the tariffs, and returns the
invoice lines. Aggregation is vectorized (Arrow ``group_by``); the per-account
arithmetic is exact ``Decimal`` over those few aggregates: amounts are computed in
seconds and micro-dollars, divided by 60 once, and rounded half-up to cents per line.

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


def _rows(table: pa.Table) -> Iterator[dict[str, Any]]:
    yield from table.to_pylist()


def close_cycle(
    rated: pa.Table,
    ref: ReferenceData,
    tariffs: TariffBook,
    cycle: str,
    elsewhere: pa.Table | None = None,
) -> pa.Table:
    """Invoice lines (:data:`INVOICE_LINE_SCHEMA`) of ``cycle`` for every account with
    rated records in it. Deterministic: the same input gives the same lines, sorted by
    account, line type and trunk."""
    _start, end = cycle_bounds(cycle)
    rated = rated.filter(pc.equal(rated.column("billing_cycle"), cycle))
    calls = latest_revisions(rated, elsewhere)
    last_instant = end - timedelta(microseconds=1)

    accounts = ref.account_ids.to_pylist()
    tariff_of = dict(zip(accounts, ref.account_tariff, strict=True))
    cap_of = dict(zip(accounts, ref.account_enforce_cap.tolist(), strict=True))

    billable = pc.not_equal(calls.column("call_class"), CallClass.NON_BILLABLE.value)
    offshore = has_flag(calls.column("flags"), Flag.OFFSHORE)
    seconds = pc.divide(pc.add(calls.column("duration_ms"), 999), 1000)  # ceil for ms >= 0
    calls = calls.append_column("_billable", billable).append_column("_offshore", offshore)
    calls = calls.append_column("_s", seconds)

    lines: list[_Line] = []
    params: dict[str, TariffVersion] = {}
    labels: dict[str, tuple[str, str]] = {}
    for account in sorted(set(calls.column("account_id").to_pylist())):
        tariff = tariffs[tariff_of[account]] if account in tariff_of else None
        version = tariff.version_at(last_instant) if tariff else None
        if tariff is None or version is None:
            raise ValueError(
                f"account {account!r}: no tariff version in effect at the end of {cycle}"
            )
        params[account] = version
        labels[account] = (tariff.tariff_id, tariff.version_label(version))

    usage = (
        calls.filter(calls.column("_billable"))
        .group_by(["account_id", "call_class", "_offshore"])
        .aggregate([("usage_charge", "sum"), ("billable_seconds", "sum")])
    )
    for row in _rows(usage):  # C1
        line_type = USAGE_LINE[(CallClass(row["call_class"]), bool(row["_offshore"]))]
        lines.append(
            _Line(
                row["account_id"],
                line_type,
                None,
                _minutes(row["billable_seconds_sum"]),
                "MIN",
                None,
                round_cents(row["usage_charge_sum"]),
            )
        )

    pay = calls.filter(
        pc.greater(
            calls.column("surcharge"), pa.scalar(Decimal(0), calls.schema.field("surcharge").type)
        )
    )
    for row in _rows(
        pay.group_by("account_id").aggregate([("surcharge", "sum"), ("surcharge", "count")])
    ):
        per_call = params[row["account_id"]].toll_free.payphone_surcharge_per_call
        count = row["surcharge_count"]
        unit_price = per_call if row["surcharge_sum"] == per_call * count else None
        lines.append(
            _Line(
                row["account_id"],
                LineType.PAYPHONE_SURCHARGE,
                None,
                Decimal(count),
                "CALL",
                unit_price,
                round_cents(row["surcharge_sum"]),
            )
        )

    answered = calls.filter(calls.column("_billable"))
    for account, version in params.items():  # C2
        rule = version.cycle.short_call
        mine = answered.filter(pc.equal(answered.column("account_id"), account))
        completed = mine.num_rows
        short = (
            int(pc.sum(pc.less_equal(mine.column("_s"), rule.max_seconds)).as_py() or 0)
            if completed
            else 0
        )
        if completed and Decimal(short) / Decimal(completed) >= rule.min_share:
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

    flat_tf = answered.filter(
        pc.and_(
            pc.equal(answered.column("call_class"), CallClass.TOLL_FREE.value),
            pc.invert(answered.column("_offshore")),
        )
    )
    for account, version in params.items():  # C3
        rule3 = version.cycle.carrier_mix
        mine = flat_tf.filter(pc.equal(flat_tf.column("account_id"), account))
        if mine.num_rows == 0:
            continue
        good = pc.is_in(
            mine.column("origin_carrier_category"), value_set=pa.array(list(rule3.categories))
        )
        n_good = int(pc.sum(good).as_py() or 0)
        if Decimal(n_good) / Decimal(mine.num_rows) >= rule3.min_share:
            continue
        s_all = Decimal(int(pc.sum(mine.column("billable_seconds")).as_py() or 0))
        s_good = Decimal(int(pc.sum(mine.filter(good).column("billable_seconds")).as_py() or 0))
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

    inbound = answered.filter(
        pc.is_in(answered.column("call_class"), value_set=pa.array(["TOLL_FREE", "DID"]))
    )
    per_trunk = inbound.group_by(["account_id", "trunk_id"]).aggregate(
        [("billable_seconds", "sum")]
    )
    for row in _rows(per_trunk):  # C4
        account = row["account_id"]
        if not cap_of.get(account, False):
            continue
        rule4 = params[account].cycle.minute_cap
        over_s = Decimal(row["billable_seconds_sum"]) - Decimal(rule4.minutes_per_trunk) * SIXTY
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
            }
            for ln in lines
        ],
        schema=INVOICE_LINE_SCHEMA,
    )


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
