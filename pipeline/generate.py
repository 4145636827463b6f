"""Synthetic switch traffic: call events for demos, tests and load tests.

Everything is vectorized with numpy and pyarrow compute (no per-record Python
loop) and deterministic for a given ``(n, seed, chunk)``. Events are generated in
chunks of ``chunk`` events (default 200,000); chunk ``i`` of ``k`` covers the
``i``-th ``1/k`` of the traffic of the period (the period's diurnal profile cut into
``k`` equal-mass time slices), so a file is in chronological order apart from the
corrections, which each chunk re-sends at its end. :func:`generate_events` returns
exactly the events :func:`write_generated` writes for the same arguments.

Mix (shares of the events of a chunk; counts are rounded down):

=========================  =====  ==================================================
legs                       share  notes
=========================  =====  ==================================================
corrections                1 %    answered calls of the chunk re-sent with revision
                                  1 (80 %) or 2 (20 %) and a changed duration
forwarded legs             4 %    OUTBOUND, leg FORWARDED, paired with an inbound DID
                                  leg (same start); ``original_calling_number`` is
                                  that leg's caller, ``calling_number`` the DID
inbound toll-free          62 %*  called +1 800/833/844/855/866/877/888
inbound DID                16 %*  called a customer number (NPA-NXX of npanxx.csv)
outbound long distance     22 %*  OUTBOUND, leg ORIGINAL, from a customer number
=========================  =====  ==================================================

``*`` of the remaining primary legs (about 95 %).

Origins of inbound legs (``calling_number``): US48 from an NPA-NXX of
``npanxx.csv`` 69 %, a ported number of ``lnp.csv`` 6 %, a US48 NPA with an NXX not
in npanxx (carrier UNKNOWN) 4 %, ALASKA 2 %, HAWAII 1.5 %, PUERTO_RICO 2 %, USVI
0.5 %, GUAM 0.5 %, CNMI 0.3 %, AMERICAN_SAMOA 0.2 %, CANADA 6 %, CARIBBEAN 2 %,
Mexico (+52) 3 %, other international (+44, +91, +63, +49) 2 %, withheld (null) 1 %.
Offshore and Canadian/Caribbean NPAs come from ``npa_regions.csv``.

Destinations of outbound and forwarded legs: same state as the caller 30 %, another
US48 state 44 %, offshore US 3 %, toll-free 2 %, CANADA 7 %, CARIBBEAN 3 %, Mexico 4 %,
UK (+44 20 / +44 7) 3 %, India (+91) 2 %, other international 1.8 %, a
``blocklist.csv`` prefix 0.2 % (when the file exists).

``ani_ii`` of inbound legs: ``00`` 50 %, ``27`` (payphone) 1.5 %, ``70`` (pay
station) 0.7 %, ``29`` (inmate) 0.5 %, null otherwise; outbound legs null.

Dispositions: ANSWERED 78 %, NO_ANSWER 9 % (SIP 480), BUSY 6 % (486), FAILED 4 %
(503), CANCELLED 3 % (487); unanswered legs last 0 ms. Answered durations are
lognormal (median 90 s, sigma 1.1, at most 4 h) in ms, with 5 % very short calls
(1 ms - 6 s) and 0.2 % answered with 0 ms.

Bad events, 0.5 % of the primary legs, in equal parts: negative duration,
called number without ``+`` (``12125550100``), called number too short,
unknown account ``ACC-9999`` (the first four are R1 dead-letter causes), missing
calling number and malformed calling number (rated with ORIGIN_UNKNOWN).

Accounts come from ``accounts.csv`` with Zipf-like weights (a few big customers);
each account has 2 or 3 trunks ``TRK-<account>-<n>`` weighted 75/23/2 (or 75/25), so
with 1 M events the busy trunks carry far more than 1,500 inbound minutes a month
and the smallest stay below. Switches are ``SW-NYC1``, ``SW-CHI1``, ``SW-DAL1`` and
``SW-LAX1``; ``call_id`` is ``<switch>-<12-digit sequence>``, the sequence counting
the switch's legs in file order, so it is unique per leg; corrections keep the
``call_id`` of the leg they correct.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipeline.errors import ReferenceDataError
from pipeline.io.avro_files import EventFileWriter
from pipeline.rating.columns import EVENT_SCHEMA, TIMESTAMP

__all__ = ["DEFAULT_START", "generate_events", "iter_generated", "write_generated"]

DEFAULT_START = datetime(2026, 11, 1, tzinfo=UTC)
DEFAULT_CHUNK = 200_000

I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]

SWITCHES = ("SW-NYC1", "SW-CHI1", "SW-DAL1", "SW-LAX1")
TOLL_FREE = (800, 833, 844, 855, 866, 877, 888)
UNKNOWN_ACCOUNT = "ACC-9999"
MICROS_PER_HOUR = 3_600_000_000

# (category, share) tables; shares are normalized where used.
KIND_SHARES = {"TOLL_FREE": 0.62, "DID": 0.16, "OUTBOUND": 0.22}
ORIGIN_SHARES = {
    "US48": 0.69,
    "LNP": 0.06,
    "US48_NPA": 0.04,
    "ALASKA": 0.02,
    "HAWAII": 0.015,
    "PUERTO_RICO": 0.02,
    "USVI": 0.005,
    "GUAM": 0.005,
    "CNMI": 0.003,
    "AMERICAN_SAMOA": 0.002,
    "CANADA": 0.06,
    "CARIBBEAN": 0.02,
    "MEXICO": 0.03,
    "INTERNATIONAL": 0.02,
    "WITHHELD": 0.01,
}
DESTINATION_SHARES = {
    "SAME_STATE": 0.30,
    "US48": 0.44,
    "OFFSHORE": 0.03,
    "TOLL_FREE": 0.02,
    "CANADA": 0.07,
    "CARIBBEAN": 0.03,
    "MEXICO": 0.04,
    "UK": 0.03,
    "INDIA": 0.02,
    "INTERNATIONAL": 0.018,
    "BLOCKLISTED": 0.002,
}
OFFSHORE_REGIONS = ("ALASKA", "HAWAII", "PUERTO_RICO", "USVI", "GUAM")
DISPOSITIONS = ("ANSWERED", "NO_ANSWER", "BUSY", "FAILED", "CANCELLED")
DISPOSITION_SHARES = (0.78, 0.09, 0.06, 0.04, 0.03)
SIP_CODES = (200, 480, 486, 503, 487)
ANI_II = ("00", "27", "70", "29")
ANI_II_SHARES = (0.50, 0.015, 0.007, 0.005)  # rest: null
BAD_SHARE = 0.005
BAD_KINDS = (
    "NEGATIVE_DURATION",
    "CALLED_NO_PLUS",
    "CALLED_TOO_SHORT",
    "UNKNOWN_ACCOUNT",
    "CALLING_MISSING",
    "CALLING_MALFORMED",
)
CORRECTION_SHARE = 0.01
FORWARDED_SHARE = 0.04
SHORT_CALL_SHARE = 0.05
ZERO_MS_SHARE = 0.002
MAX_DURATION_MS = 4 * 3_600_000

# International number plans: (leading digits, total digits without "+").
MEXICO_PLANS = ((5255, 12), (5233, 12), (5281, 12), (52664, 12))
UK_PLANS = ((4420, 12), (447, 12))
INDIA_PLANS = ((919, 12), (918, 12), (917, 12))
OTHER_INTL_PLANS = ((639, 12), (4930, 12), (331, 11), (612, 11), (8613, 13))
ORIGIN_INTL_PLANS = UK_PLANS + INDIA_PLANS + OTHER_INTL_PLANS


# --------------------------------------------------------------------------- reference data


@dataclass(frozen=True)
class _Refs:
    accounts: tuple[str, ...]
    npa_by_region: dict[str, I64]  # region -> NPAs
    prefixes: I64  # npanxx prefixes (6 or 7 digits) as ints
    prefix_digits: I64  # 6 or 7
    prefix_state: I64  # state code of each prefix
    prefix_region: dict[str, I64]  # region -> indexes into prefixes
    state_order: I64  # prefix indexes sorted by state
    state_start: I64  # first position in state_order of each state code
    state_count: I64
    lnp: I64  # 10-digit ported numbers
    blocklist: tuple[int, ...]  # international blocklisted prefixes (digits)


def _read_csv(path: Path, required: tuple[str, ...]) -> pa.Table:
    if not path.is_file():
        raise ReferenceDataError(f"{path}: file not found")
    try:
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(required, pa.string())),
        )
    except pa.ArrowInvalid as exc:
        raise ReferenceDataError(f"{path}: {exc}") from exc
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise ReferenceDataError(f"{path}: missing column(s) {', '.join(missing)}")
    return table


def _digits(col: pa.ChunkedArray | pa.Array) -> I64:
    return np.asarray(pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def _load_refs(refdata_dir: Path) -> _Refs:
    accounts = _read_csv(refdata_dir / "accounts.csv", ("account_id",))
    npa = _read_csv(refdata_dir / "npa_regions.csv", ("npa", "region", "state"))
    npanxx = _read_csv(refdata_dir / "npanxx.csv", ("prefix",))
    account_ids = tuple(str(a) for a in accounts.column("account_id").to_pylist() if a)
    if not account_ids:
        raise ReferenceDataError(f"{refdata_dir / 'accounts.csv'}: no accounts")

    npas = _digits(npa.column("npa"))
    regions = np.asarray(npa.column("region").to_pylist(), dtype=object)
    npa_by_region = {str(r): npas[regions == r] for r in np.unique(regions)}
    state_of_npa = dict(zip(npas.tolist(), npa.column("state").to_pylist(), strict=True))
    region_of_npa = dict(zip(npas.tolist(), regions.tolist(), strict=True))

    prefix_text = npanxx.column("prefix")
    prefixes = _digits(prefix_text)
    digits = np.asarray(pc.utf8_length(prefix_text).to_numpy(zero_copy_only=False), np.int64)
    keep = (digits == 6) | (digits == 7)
    prefixes, digits = prefixes[keep], digits[keep]
    prefix_npa = prefixes // np.where(digits == 6, 1000, 10000)
    if "state" in npanxx.column_names:
        states = np.asarray(npanxx.column("state").to_pylist(), dtype=object)[keep]
    else:
        states = np.asarray([state_of_npa.get(int(p), "") for p in prefix_npa], dtype=object)
    # small tables (hundreds to thousands of rows): plain Python is fine here
    prefix_regions = np.asarray([region_of_npa.get(int(p), "") for p in prefix_npa], dtype=object)
    state_names, state_code = np.unique(states.astype(str), return_inverse=True)
    state_code = state_code.astype(np.int64)
    state_order = np.argsort(state_code, kind="stable").astype(np.int64)
    state_count = np.bincount(state_code, minlength=len(state_names)).astype(np.int64)
    state_start = np.concatenate([[0], np.cumsum(state_count)[:-1]]).astype(np.int64)
    prefix_region = {
        str(r): np.flatnonzero(prefix_regions == r).astype(np.int64)
        for r in np.unique(prefix_regions)
    }

    lnp = np.empty(0, dtype=np.int64)
    lnp_path = refdata_dir / "lnp.csv"
    if lnp_path.is_file():
        tn = _read_csv(lnp_path, ("tn",)).column("tn")
        ok = pc.equal(pc.utf8_length(tn), 10)
        lnp = _digits(pc.filter(tn, ok))
    blocklist: tuple[int, ...] = ()
    block_path = refdata_dir / "blocklist.csv"
    if block_path.is_file():
        prefixes_bl = _read_csv(block_path, ("prefix",)).column("prefix").to_pylist()
        blocklist = tuple(
            int(p) for p in prefixes_bl if p and p.isdigit() and not p.startswith("1")
        )
    return _Refs(
        account_ids,
        npa_by_region,
        prefixes,
        digits,
        state_code,
        prefix_region,
        state_order,
        state_start,
        state_count,
        lnp,
        blocklist,
    )


# --------------------------------------------------------------------------- number builders


def _pick(rng: np.random.Generator, values: I64, n: int) -> I64:
    return values[rng.integers(0, len(values), n)] if len(values) else np.zeros(n, np.int64)


def _nanp_from_prefix(rng: np.random.Generator, refs: _Refs, idx: I64) -> I64:
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


def _region_number(rng: np.random.Generator, refs: _Refs, region: str, n: int) -> I64:
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


def _origins(rng: np.random.Generator, refs: _Refs, n: int) -> tuple[I64, Bool]:
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


def _customer_numbers(rng: np.random.Generator, refs: _Refs, n: int) -> tuple[I64, I64]:
    """Customer (DID) numbers in US48 npanxx prefixes, and the prefix index used."""
    pool = refs.prefix_region.get("US48", np.arange(len(refs.prefixes), dtype=np.int64))
    idx = _pick(rng, pool, n)
    return _nanp_from_prefix(rng, refs, idx), idx


def _destinations(rng: np.random.Generator, refs: _Refs, caller_prefix: I64) -> I64:
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
            out[mask] = _toll_free(rng, k)
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


def _toll_free(rng: np.random.Generator, n: int) -> I64:
    npa = np.asarray(TOLL_FREE, np.int64)[rng.integers(0, len(TOLL_FREE), n)]
    return 10_000_000_000 + npa * 10_000_000 + rng.integers(2_000_000, 10_000_000, n)


def _e164(digits: npt.NDArray[Any], valid: npt.NDArray[Any] | None = None) -> pa.Array:
    """``+<digits>`` strings (null where ``valid`` is False)."""
    text = pc.binary_join_element_wise("+", pc.cast(pa.array(digits), pa.string()), "")
    if valid is not None and not bool(valid.all()):
        text = pc.if_else(pa.array(valid), text, pa.scalar(None, pa.string()))
    return text


# --------------------------------------------------------------------------- time


def _hour_weights(start: datetime, days: int) -> npt.NDArray[np.float64]:
    """Relative traffic of each hour of the period: business-hours peak, quiet weekends."""
    hours = np.arange(days * 24)
    hour_of_day = (hours + start.hour) % 24
    diurnal = np.asarray(
        [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.5, 4.5, 6, 6.5, 6.5, 6, 6.2, 6.4, 6.2, 5.5, 4.5, 3.5,
         3, 2.6, 2.2, 1.8, 1.3],
    )  # fmt: skip
    weekday = (start.weekday() + (hours + start.hour) // 24) % 7
    return np.asarray(diurnal[hour_of_day] * np.where(weekday >= 5, 0.45, 1.0), np.float64)


def _start_times(
    rng: np.random.Generator, n: int, start: datetime, days: int, part: int, parts: int
) -> I64:
    """UTC microseconds, sorted, from slice ``part`` of ``parts`` of the period's traffic."""
    weights = _hour_weights(start, days)
    cdf = np.cumsum(weights) / weights.sum()
    u = (part + rng.random(n)) / parts
    hour = np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)
    lo = np.where(hour > 0, cdf[hour - 1], 0.0)
    within = np.clip((u - lo) / (cdf[hour] - lo), 0.0, 1.0 - 1e-12)
    base = int(start.timestamp()) * 1_000_000
    micros = (
        base + hour.astype(np.int64) * MICROS_PER_HOUR + (within * MICROS_PER_HOUR).astype(np.int64)
    )
    return np.sort(micros)


# --------------------------------------------------------------------------- one chunk


def _durations(rng: np.random.Generator, answered: Bool) -> I64:
    n = answered.shape[0]
    ms = np.minimum(rng.lognormal(np.log(90_000.0), 1.1, n), MAX_DURATION_MS).astype(np.int64)
    ms = np.maximum(ms, 1)
    u = rng.random(n)
    ms = np.where(u < SHORT_CALL_SHARE, rng.integers(1, 6_001, n), ms)
    ms = np.where(u > 1.0 - ZERO_MS_SHARE, 0, ms)
    return np.where(answered, ms, 0).astype(np.int64)


def _chunk(
    rng: np.random.Generator,
    refs: _Refs,
    m: int,
    start: datetime,
    days: int,
    part: int,
    parts: int,
    seq_start: I64,
) -> tuple[pa.Table, I64]:
    """``m`` events of slice ``part``; returns the table and the next per-switch sequence."""
    n_corr = int(m * CORRECTION_SHARE)
    n_fwd = int(m * FORWARDED_SHARE)
    n_prim = m - n_corr - n_fwd
    shares = np.asarray(list(KIND_SHARES.values()))
    counts = np.floor(shares / shares.sum() * n_prim).astype(np.int64)
    counts[1] = max(int(counts[1]), n_fwd)  # every forwarded leg pairs with an inbound DID leg
    counts[0] = n_prim - counts[1:].sum()
    if counts[0] < 0:  # tiny chunks
        n_fwd = 0
        counts = np.asarray([n_prim, 0, 0], np.int64)
    kind = rng.permutation(np.repeat(np.arange(3, dtype=np.int64), counts))  # 0 TF, 1 DID, 2 OUT

    # primary legs
    start_us = _start_times(rng, n_prim, start, days, part, parts)
    inbound = kind < 2
    calling, calling_ok = _origins(rng, refs, n_prim)
    customer, customer_prefix = _customer_numbers(rng, refs, n_prim)
    called = np.where(kind == 0, _toll_free(rng, n_prim), customer)
    outbound = ~inbound
    calling = np.where(outbound, customer, calling)
    calling_ok = calling_ok | outbound
    dest = _destinations(rng, refs, customer_prefix)
    called = np.where(outbound, dest, called)

    disposition = rng.choice(len(DISPOSITIONS), size=n_prim, p=DISPOSITION_SHARES).astype(np.int64)
    duration = _durations(rng, disposition == 0)
    ani_u = rng.random(n_prim)
    ani_edges = np.cumsum(ANI_II_SHARES)
    ani = np.searchsorted(ani_edges, ani_u, side="right").astype(np.int64)  # len(ANI_II): null
    ani = np.where(inbound, ani, len(ANI_II))

    weights = 1.0 / np.arange(1, len(refs.accounts) + 1) ** 1.1
    account = rng.choice(len(refs.accounts), size=n_prim, p=weights / weights.sum()).astype(
        np.int64
    )
    trunk_u = rng.random(n_prim)
    three = account % 2 == 0
    trunk = np.where(
        three,
        np.searchsorted([0.75, 0.98], trunk_u, side="right"),
        np.searchsorted([0.75], trunk_u, side="right"),
    ).astype(np.int64)
    switch = rng.integers(0, len(SWITCHES), n_prim).astype(np.int64)

    # forwarded legs: from n_fwd inbound DID legs drawn at random over the whole period
    # (rows are in time order, so taking the first ones would bunch them at the start)
    all_did = np.flatnonzero(kind == 1)
    did_rows = np.sort(rng.choice(all_did, size=min(n_fwd, all_did.size), replace=False))
    f_dur = np.maximum(duration[did_rows] - rng.integers(500, 3_000, n_fwd), 0)
    f_disp = disposition[did_rows]
    f_dur = np.where(f_disp == 0, f_dur, 0)
    f_dest = _destinations(rng, refs, customer_prefix[did_rows])

    # bad events among primary legs
    n_bad = int(n_prim * BAD_SHARE + 0.5)
    # (not the inbound legs that were forwarded, so both legs of a pair stay consistent)
    clean = np.setdiff1d(np.arange(n_prim, dtype=np.int64), did_rows)
    n_bad = min(n_bad, clean.shape[0])
    bad_rows = rng.choice(clean, size=n_bad, replace=False) if n_bad else np.empty(0, np.int64)
    bad_kind = np.full(n_prim, -1, dtype=np.int64)
    bad_kind[bad_rows] = np.arange(n_bad) % len(BAD_KINDS)  # bad_rows is in random order

    neg = bad_kind == BAD_KINDS.index("NEGATIVE_DURATION")
    duration = np.where(neg, -rng.integers(1, 60_000, n_prim), duration)
    disposition = np.where(neg, 0, disposition)

    def concat(a: I64, b: I64) -> I64:
        return np.concatenate([a, b]).astype(np.int64)

    # assemble primary + forwarded (in time order), then corrections
    p_start = concat(start_us, start_us[did_rows])
    p_calling = concat(calling, customer[did_rows])
    p_calling_ok = np.concatenate([calling_ok, np.ones(n_fwd, dtype=bool)])
    p_called = concat(called, f_dest)
    p_orig = concat(np.zeros(n_prim, np.int64), calling[did_rows])
    p_orig_ok = np.concatenate([np.zeros(n_prim, bool), calling_ok[did_rows]])
    p_direction = np.concatenate([np.where(inbound, 0, 1), np.ones(n_fwd, np.int64)])
    p_leg = np.concatenate([np.zeros(n_prim, np.int64), np.ones(n_fwd, np.int64)])
    p_duration = concat(duration, f_dur)
    p_disp = concat(disposition, f_disp)
    p_ani = concat(ani, np.full(n_fwd, len(ANI_II), np.int64))
    p_account = concat(account, account[did_rows])
    p_trunk = concat(trunk, trunk[did_rows])
    p_switch = concat(switch, switch[did_rows])
    p_bad = concat(bad_kind, np.full(n_fwd, -1, np.int64))
    order = np.argsort(p_start, kind="stable")

    # per-switch sequence numbers in file order
    sw = p_switch[order]
    seq = np.empty(sw.shape[0], dtype=np.int64)
    for s in range(len(SWITCHES)):  # 4 switches, vectorized within each
        rows = np.flatnonzero(sw == s)
        seq[rows] = seq_start[s] + np.arange(rows.shape[0], dtype=np.int64)
    next_seq = seq_start + np.bincount(sw, minlength=len(SWITCHES)).astype(np.int64)

    cols: dict[str, npt.NDArray[Any]] = {
        "start": p_start[order],
        "calling": p_calling[order],
        "calling_ok": p_calling_ok[order],
        "called": p_called[order],
        "orig": p_orig[order],
        "orig_ok": p_orig_ok[order],
        "direction": p_direction[order],
        "leg": p_leg[order],
        "duration": p_duration[order],
        "disp": p_disp[order],
        "ani": p_ani[order],
        "account": p_account[order],
        "trunk": p_trunk[order],
        "switch": sw,
        "seq": seq,
        "bad": p_bad[order],
        "revision": np.zeros(sw.shape[0], np.int64),
    }

    # corrections: answered, non-bad legs re-sent at the end of the chunk
    candidates = np.flatnonzero((cols["disp"] == 0) & (cols["bad"] < 0))
    n_corr = min(n_corr, candidates.shape[0])
    if n_corr:
        picked = np.sort(rng.choice(candidates, size=n_corr, replace=False))
        revision = np.where(rng.random(n_corr) < 0.8, 1, 2)
        factor = rng.uniform(0.5, 1.5, n_corr)
        new_duration = np.maximum((cols["duration"][picked] * factor).astype(np.int64), 1)
        for key, col in cols.items():
            cols[key] = np.concatenate([col, col[picked]])
        cols["revision"][-n_corr:] = revision
        cols["duration"][-n_corr:] = new_duration
    table = _to_table(refs, cols)
    if table.num_rows != m:  # pragma: no cover - counts above always add up
        raise AssertionError(f"generated {table.num_rows} events, wanted {m}")
    return table, next_seq


def _to_table(refs: _Refs, c: dict[str, npt.NDArray[Any]]) -> pa.Table:
    n = c["start"].shape[0]
    bad = c["bad"]

    def take(values: list[str] | tuple[str, ...], idx: npt.NDArray[Any]) -> pa.Array:
        return pa.array(list(values), pa.string()).take(pa.array(idx))

    unknown = bad == BAD_KINDS.index("UNKNOWN_ACCOUNT")
    account_idx = np.where(unknown, len(refs.accounts), c["account"])
    account = take([*refs.accounts, UNKNOWN_ACCOUNT], account_idx)
    trunk_names = pc.binary_join_element_wise(
        "TRK-",
        take(refs.accounts, c["account"]),
        "-",
        pc.cast(pa.array(c["trunk"] + 1), pa.string()),
        "",
    )
    switch = take(SWITCHES, c["switch"])
    call_id = pc.binary_join_element_wise(
        switch, pc.utf8_lpad(pc.cast(pa.array(c["seq"]), pa.string()), 12, "0"), "-"
    )

    calling = _e164(c["calling"], (c["calling_ok"]) & (bad != BAD_KINDS.index("CALLING_MISSING")))
    malformed_calling = pa.array(bad == BAD_KINDS.index("CALLING_MALFORMED"))
    calling = pc.if_else(malformed_calling, pc.utf8_slice_codeunits(calling, 0, 7), calling)
    called = _e164(c["called"])
    no_plus = pa.array(bad == BAD_KINDS.index("CALLED_NO_PLUS"))
    called = pc.if_else(no_plus, pc.cast(pa.array(c["called"]), pa.string()), called)
    short = pa.array(bad == BAD_KINDS.index("CALLED_TOO_SHORT"))
    called = pc.if_else(short, pc.utf8_slice_codeunits(called, 0, 8), called)
    original = _e164(c["orig"], c["orig_ok"].astype(bool))

    ani = take([*ANI_II, ""], c["ani"])
    ani = pc.if_else(pa.array(c["ani"] == len(ANI_II)), pa.scalar(None, pa.string()), ani)
    disposition = c["disp"]
    columns = {
        "call_id": call_id,
        "revision": pa.array(c["revision"].astype(np.int32)),
        "account_id": account,
        "trunk_id": trunk_names,
        "direction": take(("INBOUND", "OUTBOUND"), c["direction"]),
        "leg": take(("ORIGINAL", "FORWARDED"), c["leg"]),
        "calling_number": calling,
        "called_number": called,
        "original_calling_number": original,
        "start_time": pa.array(c["start"].astype(np.int64)).cast(TIMESTAMP),
        "duration_ms": pa.array(c["duration"].astype(np.int64)),
        "disposition": take(DISPOSITIONS, disposition),
        "ani_ii": ani,
        "sip_response_code": pa.array(np.asarray(SIP_CODES, np.int32)[disposition]),
        "switch_id": switch,
        "source_topic": pa.nulls(n, pa.string()),
        "source_partition": pa.nulls(n, pa.int32()),
        "source_offset": pa.nulls(n, pa.int64()),
        "source_file": pa.nulls(n, pa.string()),
        "source_index": pa.nulls(n, pa.int64()),
        "payload": pa.nulls(n, pa.binary()),
    }
    return pa.Table.from_arrays(list(columns.values()), schema=EVENT_SCHEMA)


# --------------------------------------------------------------------------- public API


def iter_generated(
    n: int,
    *,
    seed: int = 0,
    refdata_dir: Path,
    start: datetime = DEFAULT_START,
    days: int = 30,
    chunk: int = DEFAULT_CHUNK,
) -> Iterator[pa.Table]:
    """Chunks (``EVENT_SCHEMA``, source columns null) of ``n`` synthetic events in total.

    Raises ``ReferenceDataError`` if ``refdata_dir`` lacks ``accounts.csv``,
    ``npa_regions.csv`` or ``npanxx.csv`` (``lnp.csv`` and ``blocklist.csv`` are
    optional).
    """
    if n < 0 or chunk < 1 or days < 1:
        raise ValueError("n >= 0, chunk >= 1 and days >= 1 are required")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (UTC)")
    refs = _load_refs(refdata_dir)
    parts = max(1, -(-n // chunk))
    seq = np.zeros(len(SWITCHES), dtype=np.int64)
    for part in range(parts):
        m = min(chunk, n - part * chunk)
        if m <= 0:
            break
        rng = np.random.default_rng([seed, part])
        table, seq = _chunk(rng, refs, m, start, days, part, parts, seq)
        yield table


def generate_events(
    n: int,
    *,
    seed: int = 0,
    refdata_dir: Path,
    start: datetime = DEFAULT_START,
    days: int = 30,
    chunk: int = DEFAULT_CHUNK,
) -> pa.Table:
    """``n`` synthetic call events (``EVENT_SCHEMA``), deterministic for ``(n, seed, chunk)``.

    Times are UTC within ``[start, start + days)``. See the module docstring for the mix.
    """
    tables = list(
        iter_generated(n, seed=seed, refdata_dir=refdata_dir, start=start, days=days, chunk=chunk)
    )
    return pa.concat_tables(tables) if tables else EVENT_SCHEMA.empty_table()


def write_generated(
    path: Path,
    n: int,
    seed: int = 0,
    refdata_dir: Path | None = None,
    chunk: int = DEFAULT_CHUNK,
    progress: Callable[[int], None] | None = None,
    *,
    start: datetime = DEFAULT_START,
    days: int = 30,
    codec: str = "deflate",
) -> int:
    """Write ``n`` synthetic events to an Avro container file, ``chunk`` at a time.

    The file holds exactly :func:`generate_events` for the same arguments and is
    byte-for-byte reproducible (the sync marker derives from ``n`` and ``seed``).
    ``progress`` is called with the number of events written by each chunk.
    Returns ``n``.
    """
    if refdata_dir is None:
        raise ValueError("refdata_dir is required")
    if codec not in ("null", "deflate"):
        raise ValueError(f"unsupported codec {codec!r}")
    sync = hashlib.blake2b(f"cdr-pipeline-generate:{n}:{seed}".encode(), digest_size=16).digest()
    written = 0
    with EventFileWriter(
        path, "deflate" if codec == "deflate" else "null", sync_marker=sync
    ) as writer:
        for table in iter_generated(
            n, seed=seed, refdata_dir=refdata_dir, start=start, days=days, chunk=chunk
        ):
            writer.write_table(table)
            written += table.num_rows
            if progress is not None:
                progress(table.num_rows)
    return written
