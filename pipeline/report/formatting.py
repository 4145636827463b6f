"""Text of the cycle page: money, minutes and counts as shown, labels from the data with
anything phone-like masked (CPNI), and HTML escaping. Exact: no float."""

from __future__ import annotations

import html
import re
from decimal import ROUND_HALF_UP, Decimal

#: What a phone number looks like in a label taken from the data (masked).
_PHONE_LIKE = re.compile(r"\+?\d{7,15}")
_CENT = Decimal("0.01")
_TENTH = Decimal("0.1")


def usd(value: Decimal) -> str:
    """``$1,234.57``: ``value`` rounded half-up to cents, exactly (no float)."""
    cents = value.quantize(_CENT, rounding=ROUND_HALF_UP)
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents):,.2f}"


def minutes(value: Decimal) -> str:
    """Minutes to one decimal place, half-up (``12,345.5``)."""
    return f"{value.quantize(_TENTH, rounding=ROUND_HALF_UP):,.1f}"


def count(value: int) -> str:
    return f"{value:,}"


def safe_label(value: object) -> str:
    """A label taken from the data, with anything that looks like a phone number masked."""
    return _PHONE_LIKE.sub("[masked]", str(value))


def exact(value: Decimal) -> str:
    """The exact decimal digits (no exponent, no rounding), for ``data-exact``."""
    return f"{value:f}"


def quantity(value: Decimal, unit: str) -> str:
    """An invoice-line quantity with its unit: ``882 calls``, ``5,761.3 min``."""
    if unit == "CALL":
        return (
            f"{value.to_integral_value(rounding=ROUND_HALF_UP):,} call{'s' if value != 1 else ''}"
        )
    if unit == "MIN":
        return f"{minutes(value)} min"
    return f"{value.normalize():,f} {unit.lower()}".strip()


def share(part: Decimal, whole: Decimal) -> str:
    if whole == 0:
        return "-"
    return f"{(part * 100 / whole).quantize(_TENTH, rounding=ROUND_HALF_UP)} %"


def escape(text: object) -> str:
    return html.escape(str(text), quote=True)
