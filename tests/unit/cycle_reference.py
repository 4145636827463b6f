"""The in-memory cycle close as it was before the out-of-core close (commit 578d793,
``pipeline/rating/cycle.py``), kept verbatim as the reference the new close is checked
against (tests/unit/test_cycle_close_out_of_core.py): C1-C4 over an Arrow table of the
whole cycle. Its lines lack ``rated_calls_version`` (null)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.rating.codes import CallClass, Flag, LineType
from pipeline.rating.columns import INVOICE_LINE_SCHEMA
from pipeline.rating.cycle import (
    LINE_ORDER,
    SIXTY,
    USAGE_LINE,
    _minutes,
    cycle_bounds,
    has_flag,
    latest_revisions,
)
from pipeline.rating.money import round_cents
from pipeline.rating.reference import ReferenceData
from pipeline.rating.tariffs import TariffBook, TariffVersion


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


def reference_close_cycle(
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
