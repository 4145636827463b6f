"""The closed cycle's invoice lines as a console table (rich): one row per account,
one column per line group, totals in the footer. Used by ``close-cycle`` and ``demo``."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import pyarrow as pa
from rich.table import Table

from pipeline.rating.codes import LineType

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
