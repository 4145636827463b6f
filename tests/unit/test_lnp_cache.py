"""The enricher's direct-mapped LNP cache (issue 3, item 4), which serves R-CARRIER's
ported-number step: whatever it evicts, a number it reports as found carries the
answer last stored for that number."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.runtime.enrich import LnpCache

TNS = st.integers(2_000_000_000, 9_999_999_999)
CODES = st.integers(-1, 5_000)


def test_sizes_round_up_to_a_power_of_two() -> None:
    assert LnpCache(2_000_000).slots == 2**21
    assert LnpCache(1024).slots == 1024
    assert LnpCache(1).slots == 2


def test_answers_include_not_ported_and_clear_forgets() -> None:
    cache = LnpCache(1024)
    tns = np.asarray([2125550100, 3125550100, 9999999999], dtype=np.int64)
    cache.put(tns[:2], np.asarray([7, -1], dtype=np.int32))
    found, codes = cache.get(tns)
    assert found.tolist() == [True, True, False]
    assert codes[:2].tolist() == [7, -1]  # -1: Redis said "not ported"
    cache.clear()
    assert not cache.get(tns)[0].any()


def test_codes_beyond_the_entry_width_are_refused() -> None:
    with pytest.raises(ValueError, match="2\\*\\*24"):
        LnpCache(16).put(np.asarray([2125550100]), np.asarray([2**24], dtype=np.int32))


@settings(max_examples=200, deadline=None)
@given(
    batches=st.lists(st.lists(st.tuples(TNS, CODES), min_size=1, max_size=40), max_size=8),
    slots=st.sampled_from([2, 8, 64]),
)
def test_a_hit_is_always_the_last_answer_stored(
    batches: list[list[tuple[int, int]]], slots: int
) -> None:
    cache = LnpCache(slots)
    truth: dict[int, int] = {}
    for batch in batches:
        unique = dict(batch)  # a batch holds distinct numbers (np.unique upstream)
        tns = np.asarray(list(unique), dtype=np.int64)
        codes = np.asarray(list(unique.values()), dtype=np.int32)
        cache.put(tns, codes)
        truth.update(unique)
        probe = np.asarray(sorted(truth), dtype=np.int64)
        found, got = cache.get(probe)
        for tn, hit, code in zip(probe.tolist(), found.tolist(), got.tolist(), strict=True):
            if hit:
                assert code == truth[tn]
        assert found.any()  # the last batch's numbers: at least one survives
