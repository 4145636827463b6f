"""The closed cycle's invoice lines as a console table (rich): one row per account,
one column per line group, totals in the footer. Used by ``close-cycle`` and ``demo``.
:func:`changes_table`: what a re-close changed, line by line."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pyarrow as pa
from rich.table import Table

from pipeline.rating.codes import LineType
from pipeline.rating.invoice_diff import LineChange

COLUMNS: tuple[tuple[str, tuple[LineType, ...]], ...] = (
    ("toll-free", (LineType.USAGE_TOLL_FREE_DOMESTIC,)),
    ("offshore", (LineType.USAGE_TOLL_FREE_OFFSHORE,)),
    ("DID", (LineType.USAGE_DID,)),
    ("LD", (LineType.USAGE_OUTBOUND_LD,)),
    ("forwarded", (LineType.USAGE_FORWARDED,)),
    ("payphone", (LineType.PAYPHONE_SURCHARGE,)),
    ("short-call", (LineType.SHORT_CALL_SURCHARGE,)),
    ("carrier-mix", (LineType.CARRIER_MIX_SURCHARGE,)),
    ("minute-cap", (LineType.MINUTE_CAP_OVERAGE,)),
)


def invoice_table(lines: pa.Table, cycle: str) -> Table:
    """One row per account: amount per line group and the invoice total (USD)."""
    amounts: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    tariffs: dict[str, str] = {}
    for row in lines.to_pylist():
        amounts[row["account_id"]][row["line_type"]] += row["amount"]
        tariffs[row["account_id"]] = row["tariff_id"]
    table = Table(title=f"Invoice summary, billing cycle {cycle} (USD)", show_footer=True)
    table.add_column("account", footer="all accounts")
    table.add_column("tariff")
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for title, _ in COLUMNS:
        table.add_column(title, justify="right")
    table.add_column("total", justify="right", style="bold")
    for account in sorted(amounts):
        cells, total = [], Decimal(0)
        for title, types in COLUMNS:
            value = sum((amounts[account].get(t.value, Decimal(0)) for t in types), Decimal(0))
            totals[title] += value
            total += value
            cells.append(f"{value:,.2f}" if value else "-")
        totals["total"] += total
        table.add_row(account, tariffs[account], *cells, f"{total:,.2f}")
    for i, (title, _) in enumerate(COLUMNS, start=2):
        table.columns[i].footer = f"{totals[title]:,.2f}"
    table.columns[-1].footer = f"{totals['total']:,.2f}"
    return table


def changes_table(changes: Sequence[LineChange], title: str) -> Table:
    """One row per changed invoice line: added, removed, or changed (quantity and
    amount before and after, and the difference)."""
    table = Table(title=title, show_footer=True)
    table.add_column("account", footer="all changes")
    table.add_column("line")
    table.add_column("trunk")
    table.add_column("change")
    table.add_column("quantity before", justify="right")
    table.add_column("quantity after", justify="right")
    table.add_column("amount before", justify="right")
    table.add_column("amount after", justify="right")
    table.add_column("difference", justify="right", style="bold")
    before_total, after_total = Decimal(0), Decimal(0)
    for change in changes:
        before, after = change.amount("before"), change.amount("after")
        before_total += before or 0
        after_total += after or 0
        table.add_row(
            change.account_id,
            change.line_type,
            change.trunk_id or "",
            change.kind,
            _quantity(change.before),
            _quantity(change.after),
            "-" if before is None else f"{before:,.2f}",
            "-" if after is None else f"{after:,.2f}",
            f"{(after or 0) - (before or 0):+,.2f}",
        )
    table.columns[6].footer = f"{before_total:,.2f}"
    table.columns[7].footer = f"{after_total:,.2f}"
    table.columns[8].footer = f"{after_total - before_total:+,.2f}"
    return table


def _quantity(line: dict[str, Any] | None) -> str:
    if line is None:
        return "-"
    return f"{Decimal(line['quantity']).normalize():,f} {line['unit']}"
