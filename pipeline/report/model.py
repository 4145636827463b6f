"""What the cycle page shows, as plain data: the report's model. Money is exact ``Decimal``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

from pipeline.rating.codes import CallClass, LineType

CLASS_ORDER: tuple[str, ...] = (
    CallClass.TOLL_FREE.value,
    CallClass.DID.value,
    CallClass.OUTBOUND_LD.value,
    CallClass.FORWARDED.value,
    CallClass.NON_BILLABLE.value,
)

#: (label, invoice line type) of the four surcharges, in page order.
SURCHARGES: tuple[tuple[str, LineType], ...] = (
    ("payphone", LineType.PAYPHONE_SURCHARGE),
    ("short-call", LineType.SHORT_CALL_SURCHARGE),
    ("carrier-mix", LineType.CARRIER_MIX_SURCHARGE),
    ("minute-cap", LineType.MINUTE_CAP_OVERAGE),
)
#: Where :attr:`CycleSummary.surcharges` came from.
FROM_INVOICE_LINES = "invoice_lines"
FROM_RATED_RECORDS = "rated_records"

_SIXTY = Decimal(60)


@dataclass(frozen=True)
class Group:
    """Totals of one group of calls (latest revisions). Money is exact (6 places)."""

    key: str
    calls: int = 0
    billable_calls: int = 0
    billable_seconds: int = 0
    usage: Decimal = Decimal(0)
    surcharge: Decimal = Decimal(0)
    total: Decimal = Decimal(0)

    @property
    def minutes(self) -> Decimal:
        """Billable minutes, exact (``billable_seconds / 60``)."""
        return Decimal(self.billable_seconds) / _SIXTY

    def __add__(self, other: Group) -> Group:
        return Group(
            self.key,
            self.calls + other.calls,
            self.billable_calls + other.billable_calls,
            self.billable_seconds + other.billable_seconds,
            self.usage + other.usage,
            self.surcharge + other.surcharge,
            self.total + other.total,
        )


@dataclass(frozen=True)
class Day:
    """One UTC day of the cycle: totals per call class (every class present, maybe 0)."""

    day: date
    by_class: dict[str, Group]

    @property
    def total(self) -> Group:
        out = Group(self.day.isoformat())
        for group in self.by_class.values():
            out = out + group
        return out


@dataclass(frozen=True)
class Account:
    """One account: its totals, per-class totals and (closed cycle) its invoice total."""

    totals: Group
    by_class: dict[str, Group]
    invoice_total: Decimal | None


@dataclass(frozen=True)
class Surcharge:
    """One surcharge of the cycle. ``amount`` None: not known until the cycle is closed.

    ``quantity``/``unit``: the calls or minutes it was charged on; ``lines``: invoice
    lines (closed) or calls carrying it (open)."""

    label: str
    line_type: str
    amount: Decimal | None
    quantity: Decimal | None
    unit: str
    lines: int | None


@dataclass(frozen=True)
class CycleSummary:
    """Everything the page shows about one cycle. Money is exact ``Decimal``."""

    cycle: str
    records: int  # rated records read (every revision)
    totals: Group  # latest revisions only
    by_class: tuple[Group, ...]
    by_region: tuple[Group, ...]
    days: tuple[Day, ...]
    accounts: tuple[Account, ...]  # by total charges, descending
    surcharges: tuple[Surcharge, ...]
    surcharge_source: str  # FROM_INVOICE_LINES or FROM_RATED_RECORDS
    invoice_total: Decimal | None  # None: the cycle is not closed
    invoice_lines: int
    dead_letters: tuple[tuple[str, int], ...]  # (reason, count), most first
    invoice_stale: bool = False  # rated files newer than the invoice lines

    @property
    def closed(self) -> bool:
        return self.invoice_total is not None

    @property
    def superseded(self) -> int:
        """Rated records left out because a higher revision of the call exists."""
        return self.records - self.totals.calls

    @property
    def dead_letter_count(self) -> int:
        return sum(n for _, n in self.dead_letters)


@dataclass(frozen=True)
class ReportResult:
    """What :func:`write_report` wrote."""

    path: Path
    bytes: int
    summary: CycleSummary = field(repr=False)
