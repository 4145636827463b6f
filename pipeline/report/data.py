"""The numbers of the cycle page: :func:`summarize` (pure: Arrow tables in, a
:class:`~pipeline.report.model.CycleSummary` out) and :func:`load_summary` (aggregates
over the lake's scans without loading the cycle). Both group with the same DuckDB
query (one pass, grouping sets).

Each call counts once, at its highest revision, with the same rule as the cycle close
(:func:`pipeline.rating.cycle.latest_revisions`). Sums are exact ``Decimal``. No
phone-number column is read (CPNI).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.analytics.latest import cycle_latest_sql
from pipeline.analytics.views import (
    CANDIDATES,
    connect,
    first_line,
    literal,
    register_latest,
    register_scans,
    scan_name,
    typed_select,
)
from pipeline.errors import ConfigError
from pipeline.lake.lake import Lake
from pipeline.lake.tables import DEAD, INVOICES, RATED
from pipeline.lake.tables import check_cycle as lake_check_cycle
from pipeline.rating.codes import CallClass, LineType, Region
from pipeline.rating.columns import RATED_SCHEMA
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


#: The groups one aggregate query computes, by DuckDB's ``GROUPING(call_class,
#: origin_region, _day, account_id)`` bit mask (a bit set: that column is rolled up).
_BY_CLASS, _BY_REGION, _BY_DAY_CLASS, _BY_ACCOUNT_CLASS, _ALL = 7, 11, 5, 6, 15

_AGGREGATE = """
SELECT GROUPING(call_class, origin_region, _day, account_id) AS _set,
       call_class, origin_region, _day, account_id,
       count(call_id) AS call_id_count,
       sum(CAST(call_class <> '{non_billable}' AS BIGINT)) AS _billable_sum,
       sum(billable_seconds) AS billable_seconds_sum,
       sum(usage_charge) AS usage_charge_sum,
       sum(surcharge) AS surcharge_sum,
       sum(total_charge) AS total_charge_sum,
       count(*) FILTER (WHERE surcharge > 0) AS _charged,
       sum(surcharge) FILTER (WHERE surcharge > 0) AS _charged_sum
FROM (SELECT call_id, call_class, origin_region, account_id, billable_seconds,
             usage_charge, surcharge, total_charge, CAST(start_time AS DATE) AS _day
      FROM {calls}) AS calls
GROUP BY GROUPING SETS ((call_class), (origin_region), (_day, call_class),
                        (account_id, call_class), ())
"""


@dataclass(frozen=True)
class _Aggregates:
    """Per-group counts and exact sums of the latest revisions (one dict per group)."""

    by_set: dict[int, list[dict[str, Any]]]

    def rows(self, grouping: int) -> list[dict[str, Any]]:
        return self.by_set.get(grouping, [])

    @property
    def charged(self) -> tuple[int, Decimal | None]:
        """Calls with a per-call surcharge, and the sum of those surcharges."""
        [total] = self.rows(_ALL)
        return int(total["_charged"]), total["_charged_sum"]


def _aggregate(con: duckdb.DuckDBPyConnection, calls: str) -> _Aggregates:
    """Every group the page needs in one pass over ``calls`` (a relation or a
    parenthesized query with at least :data:`RATED_COLUMNS`)."""
    sql = _AGGREGATE.format(calls=calls, non_billable=CallClass.NON_BILLABLE.value)
    by_set: dict[int, list[dict[str, Any]]] = {}
    for row in con.sql(sql).to_arrow_table().to_pylist():
        by_set.setdefault(int(row.pop("_set")), []).append(row)
    if _ALL not in by_set:  # DuckDB gives the grand total even over no rows; keep it so
        by_set[_ALL] = [{"_charged": 0, "_charged_sum": None}]
    return _Aggregates(by_set)


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


def _days(groups: _Aggregates, cycle: str) -> tuple[Day, ...]:
    start, end = cycle_bounds(cycle)
    cells = {(r["_day"], r["call_class"]): r for r in groups.rows(_BY_DAY_CLASS)}
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


def _surcharges_from_rated(groups: _Aggregates) -> tuple[Surcharge, ...]:
    charged, amount = groups.charged
    out = [
        Surcharge(
            "payphone",
            LineType.PAYPHONE_SURCHARGE.value,
            amount or Decimal(0),
            Decimal(charged),
            "CALL",
            charged,
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
    """Aggregate one cycle from tables in memory (no I/O; DuckDB in memory does the
    grouping, as :func:`load_summary` does over the lake's scans).

    ``rated``: the cycle's rated records, every revision (at least
    :data:`RATED_COLUMNS`); ``elsewhere``: ``call_id``/``revision`` rated in other
    cycles (a higher revision there supersedes a call here); ``invoice_lines``: the
    cycle's invoice lines, or None/empty if the cycle is not closed; ``dead_letters``:
    at least a ``reason`` column.
    """
    check_cycle(cycle)
    rated = rated.filter(pc.equal(rated.column("billing_cycle"), cycle))
    calls = latest_revisions(rated, elsewhere)
    con = connect()
    try:
        con.register("_calls", calls)
        groups = _aggregate(con, "_calls")
    finally:
        con.close()
    reasons: list[tuple[str, int]] = []
    if dead_letters is not None and dead_letters.num_rows:
        counts = dead_letters.group_by(["reason"]).aggregate([("reason", "count")]).to_pylist()
        reasons = [(r["reason"], int(r["reason_count"])) for r in counts]
    return _summary(cycle, rated.num_rows, groups, invoice_lines, reasons)


def _summary(
    cycle: str,
    records: int,
    groups: _Aggregates,
    invoice_lines: pa.Table | None,
    reasons: list[tuple[str, int]],
) -> CycleSummary:
    by_class = _by_class(groups)
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
        surcharges = _surcharges_from_rated(groups)
        source = FROM_RATED_RECORDS
        invoice_total = None

    return CycleSummary(
        cycle=cycle,
        records=records,
        totals=totals,
        by_class=by_class,
        by_region=_by_region(groups),
        days=_days(groups, cycle),
        accounts=_accounts(groups, invoice_lines if closed else None),
        surcharges=surcharges,
        surcharge_source=source,
        invoice_total=invoice_total,
        invoice_lines=invoice_lines.num_rows if invoice_lines is not None else 0,
        dead_letters=tuple(sorted(reasons, key=_by_count)),
    )


def _by_class(groups: _Aggregates) -> tuple[Group, ...]:
    """Per call class, in :data:`CLASS_ORDER` (any unknown class after, by name)."""
    rows = {r["call_class"]: r for r in groups.rows(_BY_CLASS)}
    return tuple(_group(c, rows[c]) for c in CLASS_ORDER if c in rows) + tuple(
        _group(c, r) for c, r in sorted(rows.items()) if c not in CLASS_ORDER
    )


def _by_region(groups: _Aggregates) -> tuple[Group, ...]:
    """Per origin region: most charges first, then most calls, then region order."""
    region_rank = {r.value: i for i, r in enumerate(Region)}
    return tuple(
        sorted(
            (_group(r["origin_region"], r) for r in groups.rows(_BY_REGION)),
            key=lambda g: (-g.total, -g.calls, region_rank.get(g.key, 99), g.key),
        )
    )


def _accounts(groups: _Aggregates, invoice_lines: pa.Table | None) -> tuple[Account, ...]:
    """Per account (by total charges, descending), with its invoice total if closed."""
    invoice_by_account: dict[str, Decimal] = {}
    if invoice_lines is not None:
        for row in (
            invoice_lines.group_by(["account_id"]).aggregate([("amount", "sum")]).to_pylist()
        ):
            invoice_by_account[row["account_id"]] = row["amount_sum"]

    per_account: dict[str, dict[str, Group]] = {}
    for row in groups.rows(_BY_ACCOUNT_CLASS):
        per_account.setdefault(row["account_id"], {})[row["call_class"]] = _group(
            row["call_class"], row
        )
    accounts = []
    for account, found in per_account.items():
        # in call-class order, whatever order the aggregate returned the rows in
        classes = {c: found[c] for c in sorted(found, key=_class_rank)}
        total = Group(account)
        for group in classes.values():
            total = total + group
        accounts.append(Account(total, classes, invoice_by_account.get(account)))
    accounts.sort(key=lambda a: (-a.totals.total, a.totals.key))
    return tuple(accounts)


def _class_rank(call_class: str) -> tuple[int, str]:
    order = list(CLASS_ORDER)
    return (order.index(call_class) if call_class in order else len(order), call_class)


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return (-item[1], item[0])


# --------------------------------------------------------------------------- reading the lake


def load_summary(lake: Lake, cycle: str) -> CycleSummary:
    """Aggregate ``cycle`` in DuckDB over the lake's scans (:mod:`pipeline.analytics`):
    projections and the cycle's partition pushed into the scan, no table loaded whole;
    one pass over the ``call_id`` column finds the calls with several rows
    (:mod:`pipeline.analytics.latest`), then one aggregate pass over the cycle.
    Invoice lines (a few per account) are read whole; dead letters are counted.

    Raises :class:`ConfigError` if ``cycle`` is malformed or has no rated records.
    """
    check_cycle(cycle)
    cycles = lake.cycles()
    if cycle not in cycles:
        known = ", ".join(cycles) if cycles else "none"
        raise ConfigError(f"no rated records for cycle {cycle} in {lake.uri} (cycles: {known})")
    con = connect()
    try:
        datasets = register_scans(con, lake)
        rated = scan_name(RATED)
        register_latest(con, rated, datasets[RATED])
        in_cycle = literal(cycle)
        source = f"({typed_select(RATED_SCHEMA, rated)})"
        groups = _aggregate(con, f"({cycle_latest_sql(source, CANDIDATES, in_cycle)})")
        [(records,)] = con.sql(
            f"SELECT count(*) FROM {rated} WHERE billing_cycle = {in_cycle}"  # noqa: S608
        ).fetchall()
        reasons = con.sql(
            f"SELECT reason, count(*) FROM {scan_name(DEAD)} GROUP BY reason"  # noqa: S608
        ).fetchall()
        invoice = lake.read_invoice_lines(cycle)
    except duckdb.Error as exc:
        raise ConfigError(f"cannot read the lake at {lake.uri}: {first_line(exc)}") from exc
    except (OSError, pa.ArrowException) as exc:
        raise ConfigError(f"cannot read the lake at {lake.uri}: {exc}") from exc
    finally:
        con.close()
    summary = _summary(cycle, int(records), groups, invoice, [(str(r), int(n)) for r, n in reasons])
    if summary.closed:
        rated_at = lake.newest_file_time(RATED, cycle)
        closed_at = lake.newest_file_time(INVOICES, cycle)
        if rated_at is not None and closed_at is not None and rated_at > closed_at:
            summary = replace(summary, invoice_stale=True)
    return summary
