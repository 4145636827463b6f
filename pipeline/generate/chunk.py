"""One chunk of events: the mix drawn as arrays, then converted to ``EVENT_SCHEMA``.

:func:`build_chunk` makes exactly ``m`` events of one time slice from one seeded
generator (primary legs, forwarded legs, bad events, corrections re-sent at the
end) and carries the per-switch ``call_id`` sequence from chunk to chunk. The
order of the random draws is part of the contract: it makes a seed's output
byte-for-byte reproducible.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.generate.phone_numbers import customer_numbers, destinations, e164, origins, toll_free
from pipeline.generate.refs import Refs
from pipeline.generate.shares import (
    ANI_II,
    ANI_II_SHARES,
    BAD_KINDS,
    BAD_SHARE,
    CORRECTION_SHARE,
    DISPOSITION_SHARES,
    DISPOSITIONS,
    FORWARDED_SHARE,
    I64,
    KIND_SHARES,
    MAX_DURATION_MS,
    SHORT_CALL_SHARE,
    SIP_CODES,
    SWITCHES,
    UNKNOWN_ACCOUNT,
    ZERO_MS_SHARE,
    Bool,
)
from pipeline.generate.timing import start_times
from pipeline.rating.columns import EVENT_SCHEMA, TIMESTAMP


def _durations(rng: np.random.Generator, answered: Bool) -> I64:
    n = answered.shape[0]
    ms = np.minimum(rng.lognormal(np.log(90_000.0), 1.1, n), MAX_DURATION_MS).astype(np.int64)
    ms = np.maximum(ms, 1)
    u = rng.random(n)
    ms = np.where(u < SHORT_CALL_SHARE, rng.integers(1, 6_001, n), ms)
    ms = np.where(u > 1.0 - ZERO_MS_SHARE, 0, ms)
    return np.where(answered, ms, 0).astype(np.int64)


def build_chunk(
    rng: np.random.Generator,
    refs: Refs,
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
    start_us = start_times(rng, n_prim, start, days, part, parts)
    inbound = kind < 2
    calling, calling_ok = origins(rng, refs, n_prim)
    customer, customer_prefix = customer_numbers(rng, refs, n_prim)
    called = np.where(kind == 0, toll_free(rng, n_prim), customer)
    outbound = ~inbound
    calling = np.where(outbound, customer, calling)
    calling_ok = calling_ok | outbound
    dest = destinations(rng, refs, customer_prefix)
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
    f_dest = destinations(rng, refs, customer_prefix[did_rows])

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


def _to_table(refs: Refs, c: dict[str, npt.NDArray[Any]]) -> pa.Table:
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

    calling = e164(c["calling"], (c["calling_ok"]) & (bad != BAD_KINDS.index("CALLING_MISSING")))
    malformed_calling = pa.array(bad == BAD_KINDS.index("CALLING_MALFORMED"))
    calling = pc.if_else(malformed_calling, pc.utf8_slice_codeunits(calling, 0, 7), calling)
    called = e164(c["called"])
    no_plus = pa.array(bad == BAD_KINDS.index("CALLED_NO_PLUS"))
    called = pc.if_else(no_plus, pc.cast(pa.array(c["called"]), pa.string()), called)
    short = pa.array(bad == BAD_KINDS.index("CALLED_TOO_SHORT"))
    called = pc.if_else(short, pc.utf8_slice_codeunits(called, 0, 8), called)
    original = e164(c["orig"], c["orig_ok"].astype(bool))

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
