"""The numbers of the cycle page: :func:`summarize` (pure: Arrow tables in, a
:class:`~pipeline.report.model.CycleSummary` out) and :func:`load_summary` (reads the
lake, then summarizes).

Each call counts once, at its highest revision, with the same rule as the cycle close
(:func:`pipeline.rating.cycle.latest_revisions`). Sums are exact ``Decimal``. No
phone-number column is read (CPNI).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import ConfigError
from pipeline.lake.lake import Lake
from pipeline.lake.tables import INVOICES, RATED
from pipeline.lake.tables import check_cycle as lake_check_cycle
from pipeline.rating.codes import CallClass, LineType, Region
from pipeline.rating.cycle import cycle_bounds, latest_revisions
from pipeline.report.model import (
    CLASS_ORDER,
    FROM_INVOICE_LINES,
    FROM_RATED_RECORDS,
    SURCHARGES,
    Account,
    CycleSummary,
    Day,
    Group,
    Surcharge,
)

#: Columns read from the rated records: what the charts need plus the keys that
#: choose the latest revision. No phone-number column is read (CPNI).
RATED_COLUMNS = (
    "call_id",
    "revision",
    "account_id",
    "start_time",
    "billing_cycle",
    "call_class",
    "origin_region",
    "billable_seconds",
    "usage_charge",
    "surcharge",
    "total_charge",
    "source_partition",
    "source_offset",
    "source_file",
    "source_index",
)


def check_cycle(cycle: str) -> str:
    """``cycle`` if it is ``YYYY-MM`` (ASCII digits, month 01-12); :class:`ConfigError`
    otherwise (one rule for every command: :func:`pipeline.lake.tables.check_cycle`)."""
    return lake_check_cycle(cycle)


def _groups(calls: pa.Table, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Per-group counts and exact sums of ``calls`` (one dict per group)."""
    if calls.num_rows == 0:
        return []
    billable = pc.not_equal(calls.column("call_class"), CallClass.NON_BILLABLE.value)
    table = calls.append_column("_billable", pc.cast(billable, pa.int64()))
    out: list[dict[str, Any]] = (
        table.group_by(list(keys))
        .aggregate(
            [
                ("call_id", "count"),
                ("_billable", "sum"),
                ("billable_seconds", "sum"),
                ("usage_charge", "sum"),
                ("surcharge", "sum"),
                ("total_charge", "sum"),
            ]
        )
        .to_pylist()
    )
    return out


def _group(key: str, row: dict[str, Any]) -> Group:
    return Group(
        key,
        int(row["call_id_count"]),
        int(row["_billable_sum"] or 0),
        int(row["billable_seconds_sum"] or 0),
        row["usage_charge_sum"] or Decimal(0),
        row["surcharge_sum"] or Decimal(0),
        row["total_charge_sum"] or Decimal(0),
    )


def _days(calls: pa.Table, cycle: str) -> tuple[Day, ...]:
    start, end = cycle_bounds(cycle)
    table = calls.append_column("_day", pc.cast(calls.column("start_time"), pa.date32()))
    cells = {(r["_day"], r["call_class"]): r for r in _groups(table, ["_day", "call_class"])}
    days = []
    day = start.date()
    while day < end.date():
        by_class = {
            c: _group(c, cells[(day, c)]) if (day, c) in cells else Group(c) for c in CLASS_ORDER
        }
        days.append(Day(day, by_class))
        day += timedelta(days=1)
    return tuple(days)


def _surcharges_from_invoice(lines: pa.Table) -> tuple[Surcharge, ...]:
    rows = {
        r["line_type"]: r
        for r in lines.group_by(["line_type"])
        .aggregate([("amount", "sum"), ("quantity", "sum"), ("account_id", "count")])
        .to_pylist()
    }
    units = dict(
        zip(lines.column("line_type").to_pylist(), lines.column("unit").to_pylist(), strict=True)
    )
    out = []
    for label, line_type in SURCHARGES:
        row = rows.get(line_type.value)
        out.append(
            Surcharge(
                label,
                line_type.value,
                row["amount_sum"] if row else Decimal(0),
                row["quantity_sum"] if row else Decimal(0),
                units.get(line_type.value, ""),
                int(row["account_id_count"]) if row else 0,
            )
        )
    return tuple(out)


def _surcharges_from_rated(calls: pa.Table) -> tuple[Surcharge, ...]:
    charged = calls.filter(pc.greater(calls.column("surcharge"), pa.scalar(0, pa.int64())))
    amount = pc.sum(charged.column("surcharge")).as_py() if charged.num_rows else Decimal(0)
    out = [
        Surcharge(
            "payphone",
            LineType.PAYPHONE_SURCHARGE.value,
            amount or Decimal(0),
            Decimal(charged.num_rows),
            "CALL",
            charged.num_rows,
        )
    ]
    out.extend(Surcharge(label, t.value, None, None, "", None) for label, t in SURCHARGES[1:])
    return tuple(out)


def summarize(
    rated: pa.Table,
    cycle: str,
    *,
    elsewhere: pa.Table | None = None,
    invoice_lines: pa.Table | None = None,
    dead_letters: pa.Table | None = None,
) -> CycleSummary:
    """Aggregate one cycle. Pure.

    ``rated``: the cycle's rated records, every revision (at least
    :data:`RATED_COLUMNS`); ``elsewhere``: ``call_id``/``revision`` rated in other
    cycles (a higher revision there supersedes a call here); ``invoice_lines``: the
    cycle's invoice lines, or None/empty if the cycle is not closed; ``dead_letters``:
    at least a ``reason`` column.
    """
    check_cycle(cycle)
    rated = rated.filter(pc.equal(rated.column("billing_cycle"), cycle))
    calls = latest_revisions(rated, elsewhere)
    by_class = _by_class(calls)
    totals = Group("all")
    for group in by_class:
        totals = totals + group

    closed = invoice_lines is not None and invoice_lines.num_rows > 0
    if invoice_lines is not None and closed:
        surcharges = _surcharges_from_invoice(invoice_lines)
        source = FROM_INVOICE_LINES
        invoice_total: Decimal | None = sum(
            (Decimal(v) for v in invoice_lines.column("amount").to_pylist()), Decimal(0)
        )
    else:
        surcharges = _surcharges_from_rated(calls)
        source = FROM_RATED_RECORDS
        invoice_total = None

    return CycleSummary(
        cycle=cycle,
        records=rated.num_rows,
        totals=totals,
        by_class=by_class,
        by_region=_by_region(calls),
        days=_days(calls, cycle),
        accounts=_accounts(calls, invoice_lines if closed else None),
        surcharges=surcharges,
        surcharge_source=source,
        invoice_total=invoice_total,
        invoice_lines=invoice_lines.num_rows if invoice_lines is not None else 0,
        dead_letters=_reasons(dead_letters),
    )


def _by_class(calls: pa.Table) -> tuple[Group, ...]:
    """Per call class, in :data:`CLASS_ORDER` (any unknown class after, by name)."""
    rows = {r["call_class"]: r for r in _groups(calls, ["call_class"])}
    return tuple(_group(c, rows[c]) for c in CLASS_ORDER if c in rows) + tuple(
        _group(c, r) for c, r in sorted(rows.items()) if c not in CLASS_ORDER
    )


def _by_region(calls: pa.Table) -> tuple[Group, ...]:
    """Per origin region: most charges first, then most calls, then region order."""
    region_rank = {r.value: i for i, r in enumerate(Region)}
    return tuple(
        sorted(
            (_group(r["origin_region"], r) for r in _groups(calls, ["origin_region"])),
            key=lambda g: (-g.total, -g.calls, region_rank.get(g.key, 99), g.key),
        )
    )


def _accounts(calls: pa.Table, invoice_lines: pa.Table | None) -> tuple[Account, ...]:
    """Per account (by total charges, descending), with its invoice total if closed."""
    invoice_by_account: dict[str, Decimal] = {}
    if invoice_lines is not None:
        for row in (
            invoice_lines.group_by(["account_id"]).aggregate([("amount", "sum")]).to_pylist()
        ):
            invoice_by_account[row["account_id"]] = row["amount_sum"]

    per_account: dict[str, dict[str, Group]] = {}
    for row in _groups(calls, ["account_id", "call_class"]):
        per_account.setdefault(row["account_id"], {})[row["call_class"]] = _group(
            row["call_class"], row
        )
    accounts = []
    for account, classes in per_account.items():
        total = Group(account)
        for group in classes.values():
            total = total + group
        accounts.append(Account(total, classes, invoice_by_account.get(account)))
    accounts.sort(key=lambda a: (-a.totals.total, a.totals.key))
    return tuple(accounts)


def _reasons(dead_letters: pa.Table | None) -> tuple[tuple[str, int], ...]:
    """(reason, dead letters), most first, then by reason."""
    if dead_letters is None or not dead_letters.num_rows:
        return ()
    counts = dead_letters.group_by(["reason"]).aggregate([("reason", "count")]).to_pylist()
    return tuple(sorted(((r["reason"], int(r["reason_count"])) for r in counts), key=_by_count))


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return (-item[1], item[0])


# --------------------------------------------------------------------------- reading the lake


def load_summary(lake: Lake, cycle: str) -> CycleSummary:
    """Read what the page needs from ``lake`` and :func:`summarize` it.

    Raises :class:`ConfigError` if ``cycle`` is malformed or has no rated records.
    """
    check_cycle(cycle)
    cycles = lake.cycles()
    if cycle not in cycles:
        known = ", ".join(cycles) if cycles else "none"
        raise ConfigError(f"no rated records for cycle {cycle} in {lake.uri} (cycles: {known})")
    try:
        rated = lake.read_rated(cycle, columns=RATED_COLUMNS)
        elsewhere = lake.max_revisions_outside(cycle)
        invoice = lake.read_invoice_lines(cycle)
        dead = lake.read_dead_letters().select(["reason"])
    except (OSError, pa.ArrowException) as exc:
        raise ConfigError(f"cannot read the lake at {lake.uri}: {exc}") from exc
    summary = summarize(rated, cycle, elsewhere=elsewhere, invoice_lines=invoice, dead_letters=dead)
    if summary.closed:
        rated_at = lake.newest_file_time(RATED, cycle)
        closed_at = lake.newest_file_time(INVOICES, cycle)
        if rated_at is not None and closed_at is not None and rated_at > closed_at:
            summary = replace(summary, invoice_stale=True)
    return summary
