"""Byte sizes and hour counts as operators type them (``128MiB``, ``1GB``, ``168``).

:func:`parse_size` and :func:`parse_hours` are the one place such strings are checked
(``lake compact --target-size``, ``lake vacuum --retain-hours``, the
``compaction.target_size`` setting). ASCII digits only (``re.ASCII``: ``int()`` would
take full-width or Arabic-Indic digits), ``fullmatch`` (no trailing newline), no sign,
no zero. Refusals are :class:`~pipeline.errors.ConfigError` naming the value.
No third-party import: :mod:`pipeline.settings` uses this module.
"""

from __future__ import annotations

import re

from pipeline.errors import ConfigError

#: Unit -> bytes. Binary (KiB, MiB, GiB, TiB) and decimal (kB, MB, GB, TB) units;
#: a bare number is bytes. Case-insensitive (``mib``, ``MB``, ``Gb`` all accepted).
UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"\s*(\d+)\s*([a-z]*)\s*", re.ASCII | re.IGNORECASE)
_HOURS = re.compile(r"\s*(\d+)\s*", re.ASCII)

#: Smallest and largest compaction target: below 1 MiB a compacted file is no bigger
#: than what a busy flush writes; above 16 GiB one file is more than any reader wants.
MIN_TARGET_SIZE = 1024**2
MAX_TARGET_SIZE = 16 * 1024**3


def format_size(n: int) -> str:
    """``n`` bytes in the largest binary unit that keeps it whole-ish (``128 MiB``)."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor:
            value = n / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


def parse_size(text: str, what: str = "size") -> int:
    """``text`` (``128MiB``, ``1GB``, ``500000000``) as bytes; :class:`ConfigError` for
    anything else: empty, signed, zero, non-ASCII digits, an unknown unit, and a size
    outside ``MIN_TARGET_SIZE .. MAX_TARGET_SIZE`` (1 MiB .. 16 GiB)."""
    m = _SIZE.fullmatch(text)
    if m is None or m.group(2).lower() not in UNITS:
        raise ConfigError(
            f"{what} {text!r} is not a size: give a whole number with a unit, e.g. 128MiB, "
            "1GiB, 512MB (units B, KiB, MiB, GiB, TiB, kB, MB, GB, TB; ASCII digits)"
        )
    n = int(m.group(1)) * UNITS[m.group(2).lower()]
    if not MIN_TARGET_SIZE <= n <= MAX_TARGET_SIZE:
        raise ConfigError(
            f"{what} {text!r} is {format_size(n)}: give between {format_size(MIN_TARGET_SIZE)} "
            f"and {format_size(MAX_TARGET_SIZE)} (default 128MiB)"
        )
    return n


def parse_hours(text: str, what: str = "hours") -> int:
    """``text`` as a whole number of hours (ASCII digits, zero allowed);
    :class:`ConfigError` otherwise (signed, fractional, full-width digits ...)."""
    m = _HOURS.fullmatch(text)
    if m is None:
        raise ConfigError(f"{what} {text!r} is not a whole number of hours (ASCII digits)")
    return int(m.group(1))
