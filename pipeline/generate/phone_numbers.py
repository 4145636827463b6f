"""Vectorized builders of calling and called numbers.

Each builder takes the chunk's ``np.random.Generator`` and draws from it in a fixed
order, so the numbers (and every draw after them) are the same for the same seed.
Numbers are int64 digits without ``+`` (:func:`e164` makes the strings):
:func:`origins` for inbound callers, :func:`customer_numbers` for DIDs,
:func:`destinations` for outbound and forwarded legs, :func:`toll_free`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.generate.refs import Refs
from pipeline.generate.shares import (
    DESTINATION_SHARES,
    I64,
    INDIA_PLANS,
    MEXICO_PLANS,
    OFFSHORE_REGIONS,
    ORIGIN_INTL_PLANS,
    ORIGIN_SHARES,
    OTHER_INTL_PLANS,
    TOLL_FREE,
    UK_PLANS,
    Bool,
)


def _pick(rng: np.random.Generator, values: I64, n: int) -> I64:
    return values[rng.integers(0, len(values), n)] if len(values) else np.zeros(n, np.int64)


def _nanp_from_prefix(rng: np.random.Generator, refs: Refs, idx: I64) -> I64:
    """``1NPANXXXXXX`` digits from npanxx prefixes ``idx`` plus random line digits."""
    n = idx.shape[0]
    seven = refs.prefix_digits[idx] == 7
    line = np.where(seven, rng.integers(0, 1000, n), rng.integers(0, 10_000, n))
    base = refs.prefixes[idx] * np.where(seven, 1000, 10_000)
    return 10_000_000_000 + base + line


def _nanp_from_npa(rng: np.random.Generator, npas: I64, n: int) -> I64:
    """``1NPANXXXXXX`` digits of random NXX (2-9 first digit) under the given NPAs."""
    npa = _pick(rng, npas, n)
    nxx = rng.integers(200, 1000, n)
    line = rng.integers(0, 10_000, n)
    return 10_000_000_000 + npa * 10_000_000 + nxx * 10_000 + line


def _region_number(rng: np.random.Generator, refs: Refs, region: str, n: int) -> I64:
    """Numbers of a NANP region: 80 % from its npanxx prefixes (carrier known) if any."""
    pool = refs.prefix_region.get(region, np.empty(0, np.int64))
    npas = refs.npa_by_region.get(region, np.empty(0, np.int64))
    if len(npas) == 0 and len(pool) == 0:
        npas = refs.npa_by_region.get("US48", np.asarray([212], np.int64))
    if len(pool) == 0:
        return _nanp_from_npa(rng, npas, n)
    if len(npas) == 0:
        return _nanp_from_prefix(rng, refs, _pick(rng, pool, n))
    out = _nanp_from_npa(rng, npas, n)
    from_prefix = rng.random(n) < 0.8
    out[from_prefix] = _nanp_from_prefix(rng, refs, _pick(rng, pool, int(from_prefix.sum())))
    return out


def _plan_number(rng: np.random.Generator, plans: tuple[tuple[int, int], ...], n: int) -> I64:
    """International digits from (leading digits, total digits) plans."""
    which = rng.integers(0, len(plans), n)
    lead = np.asarray([p[0] for p in plans], np.int64)[which]
    total = np.asarray([p[1] for p in plans], np.int64)[which]
    lead_len = np.asarray([len(str(p[0])) for p in plans], np.int64)[which]
    rest = total - lead_len
    scale = (10**rest).astype(np.int64)
    return lead * scale + (rng.random(n) * scale).astype(np.int64)


def _fill(
    cats: npt.NDArray[np.int64],
    names: tuple[str, ...],
    build: Callable[[str, int], I64],
) -> I64:
    out = np.zeros(cats.shape[0], dtype=np.int64)
    for code, name in enumerate(names):
        mask = cats == code
        k = int(mask.sum())
        if k:
            out[mask] = build(name, k)
    return out


def _categories(rng: np.random.Generator, shares: dict[str, float], n: int) -> I64:
    p = np.asarray(list(shares.values()), dtype=np.float64)
    return rng.choice(len(p), size=n, p=p / p.sum()).astype(np.int64)


def origins(rng: np.random.Generator, refs: Refs, n: int) -> tuple[I64, Bool]:
    """Inbound callers: digits and a validity mask (False = withheld)."""
    names = tuple(ORIGIN_SHARES)
    cats = _categories(rng, ORIGIN_SHARES, n)

    def build(name: str, k: int) -> I64:
        if name == "US48":
            return _region_number(rng, refs, "US48", k)
        if name == "LNP":
            if len(refs.lnp) == 0:
                return _region_number(rng, refs, "US48", k)
            return 10_000_000_000 + _pick(rng, refs.lnp, k)
        if name == "US48_NPA":
            return _nanp_from_npa(
                rng, refs.npa_by_region.get("US48", np.asarray([212], np.int64)), k
            )
        if name == "MEXICO":
            return _plan_number(rng, MEXICO_PLANS, k)
        if name == "INTERNATIONAL":
            return _plan_number(rng, ORIGIN_INTL_PLANS, k)
        if name == "WITHHELD":
            return np.zeros(k, np.int64)
        return _region_number(rng, refs, name, k)

    digits = _fill(cats, names, build)
    return digits, cats != names.index("WITHHELD")


def customer_numbers(rng: np.random.Generator, refs: Refs, n: int) -> tuple[I64, I64]:
    """Customer (DID) numbers in US48 npanxx prefixes, and the prefix index used."""
    pool = refs.prefix_region.get("US48", np.arange(len(refs.prefixes), dtype=np.int64))
    idx = _pick(rng, pool, n)
    return _nanp_from_prefix(rng, refs, idx), idx


def destinations(rng: np.random.Generator, refs: Refs, caller_prefix: I64) -> I64:
    """Outbound destinations; SAME_STATE picks a prefix of the caller's state."""
    n = caller_prefix.shape[0]
    names = tuple(DESTINATION_SHARES)
    cats = _categories(rng, DESTINATION_SHARES, n)
    out = np.zeros(n, dtype=np.int64)
    for code, name in enumerate(names):
        mask = cats == code
        k = int(mask.sum())
        if not k:
            continue
        if name == "SAME_STATE":
            state = refs.prefix_state[caller_prefix[mask]]
            pos = refs.state_start[state] + (rng.random(k) * refs.state_count[state]).astype(
                np.int64
            )
            out[mask] = _nanp_from_prefix(rng, refs, refs.state_order[pos])
        elif name == "US48":
            out[mask] = _region_number(rng, refs, "US48", k)
        elif name == "OFFSHORE":
            which = rng.integers(0, len(OFFSHORE_REGIONS), k)
            part = np.zeros(k, dtype=np.int64)
            for j, region in enumerate(OFFSHORE_REGIONS):
                sub = which == j
                if sub.any():
                    part[sub] = _region_number(rng, refs, region, int(sub.sum()))
            out[mask] = part
        elif name == "TOLL_FREE":
            out[mask] = toll_free(rng, k)
        elif name in ("CANADA", "CARIBBEAN"):
            out[mask] = _region_number(rng, refs, name, k)
        elif name == "MEXICO":
            out[mask] = _plan_number(rng, MEXICO_PLANS, k)
        elif name == "UK":
            out[mask] = _plan_number(rng, UK_PLANS, k)
        elif name == "INDIA":
            out[mask] = _plan_number(rng, INDIA_PLANS, k)
        elif name == "BLOCKLISTED" and refs.blocklist:
            plans = tuple((p, max(len(str(p)) + 6, 11)) for p in refs.blocklist)
            out[mask] = _plan_number(rng, plans, k)
        else:
            out[mask] = _plan_number(rng, OTHER_INTL_PLANS, k)
    return out


def toll_free(rng: np.random.Generator, n: int) -> I64:
    npa = np.asarray(TOLL_FREE, np.int64)[rng.integers(0, len(TOLL_FREE), n)]
    return 10_000_000_000 + npa * 10_000_000 + rng.integers(2_000_000, 10_000_000, n)


def e164(digits: npt.NDArray[Any], valid: npt.NDArray[Any] | None = None) -> pa.Array:
    """``+<digits>`` strings (null where ``valid`` is False)."""
    text = pc.binary_join_element_wise("+", pc.cast(pa.array(digits), pa.string()), "")
    if valid is not None and not bool(valid.all()):
        text = pc.if_else(pa.array(valid), text, pa.scalar(None, pa.string()))
    return text
