"""What changed between two closes of a cycle, line by line (pure).

A line is identified by ``(account_id, line_type, trunk_id)``; it is *added*,
*removed*, or *changed* when its quantity, unit, unit price, amount or tariff differ.
``rated_calls_version`` is where a line came from, not what it bills: a re-close that
only saw a newer table version with the same calls has no change.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa

from pipeline.rating.codes import LineType

LineKey = tuple[str, str, str | None]
#: The fields that make two lines of the same key different.
COMPARED = ("quantity", "unit", "unit_price", "amount", "tariff_id", "tariff_version")
_ORDER = {t.value: i for i, t in enumerate(LineType)}


@dataclass(frozen=True)
class LineChange:
    """One invoice line that differs: ``before``/``after`` are None when the line was
    added/removed."""

    account_id: str
    line_type: str
    trunk_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    @property
    def kind(self) -> str:
        """``added``, ``removed`` or ``changed``."""
        if self.before is None:
            return "added"
        return "removed" if self.after is None else "changed"

    def amount(self, side: str) -> Decimal | None:
        line = self.before if side == "before" else self.after
        return None if line is None else Decimal(line["amount"])


def _by_key(lines: pa.Table) -> dict[LineKey, dict[str, Any]]:
    out: dict[LineKey, dict[str, Any]] = {}
    for row in lines.to_pylist():
        key = (row["account_id"], row["line_type"], row["trunk_id"])
        if key in out:
            raise ValueError(f"two invoice lines for {key}")
        out[key] = row
    return out


def invoice_changes(before: pa.Table, after: pa.Table) -> list[LineChange]:
    """The lines of ``after`` that are not in ``before`` or differ from it, and the lines
    of ``before`` that are gone, in invoice order (account, line type, trunk)."""
    old, new = _by_key(before), _by_key(after)
    changes = []
    for key in old.keys() | new.keys():
        a, b = old.get(key), new.get(key)
        if a is not None and b is not None and all(a[f] == b[f] for f in COMPARED):
            continue
        changes.append(LineChange(key[0], key[1], key[2], a, b))
    changes.sort(key=lambda c: (c.account_id, _ORDER.get(c.line_type, 99), c.trunk_id or ""))
    return changes


def total(lines: pa.Table) -> Decimal:
    """The sum of the lines' amounts."""
    return sum((Decimal(a) for a in lines.column("amount").to_pylist()), Decimal(0))
