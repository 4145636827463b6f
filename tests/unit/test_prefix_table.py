"""Blocklist prefix matching (R10 FRAUD_SUSPECT): the dense fast path answers like a
brute-force longest-prefix match, for short and long prefixes alike."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.rating.reference import DENSE_DIGITS, PrefixTable

PREFIXES = st.lists(st.from_regex(r"[1-9][0-9]{0,8}", fullmatch=True), min_size=1, max_size=12)
NUMBERS = st.lists(st.from_regex(r"[1-9][0-9]{0,15}", fullmatch=True) | st.none(), max_size=60)


def brute_force(prefixes: list[str], number: str | None) -> int:
    if number is None:
        return -1
    matches = [(len(p), i) for i, p in enumerate(prefixes) if number.startswith(p)]
    return max(matches)[1] if matches else -1


@settings(max_examples=300, deadline=None)
@given(prefixes=PREFIXES, numbers=NUMBERS, extend=st.data())
def test_longest_prefix_matches_brute_force(
    prefixes: list[str], numbers: list[str | None], extend: st.DataObject
) -> None:
    prefixes = list(dict.fromkeys(prefixes))
    # half of the numbers start with a listed prefix, so matches are common
    numbers = numbers + [
        p + extend.draw(st.from_regex(r"[0-9]{0,8}", fullmatch=True)) for p in prefixes
    ]
    table = PrefixTable.build(prefixes, list(range(len(prefixes))))
    digits = np.asarray([int(n) if n else -1 for n in numbers], dtype=np.int64)
    ndigits = np.asarray([len(n) if n else 1 for n in numbers], dtype=np.int64)
    got = table.longest(digits, ndigits).tolist()
    assert got == [brute_force(prefixes, n) for n in numbers]


def test_sample_blocklist_lengths_straddle_the_dense_width() -> None:
    """R10 FRAUD_SUSPECT prefixes of 3 and 7 digits: a 7-digit one wins over a shorter
    one it extends."""
    table = PrefixTable.build(["187", "1876555"], [0, 1])
    assert DENSE_DIGITS < 7
    numbers = np.asarray([18765550100, 18765560100, 18865550100], dtype=np.int64)
    assert table.longest(numbers, np.full(3, 11)).tolist() == [1, 0, -1]
