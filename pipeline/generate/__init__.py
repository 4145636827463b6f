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

Layout: ``shares`` (constants and share tables), ``refs`` (reading the reference
directory), ``phone_numbers`` (number builders), ``timing`` (start times), ``chunk``
(one chunk and its conversion to ``EVENT_SCHEMA``); this module is the public API.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.generate.chunk import build_chunk
from pipeline.generate.refs import load_refs
from pipeline.generate.shares import DEFAULT_CHUNK, DEFAULT_START, SWITCHES
from pipeline.io.avro_files import EventFileWriter
from pipeline.rating.columns import EVENT_SCHEMA

__all__ = ["DEFAULT_START", "generate_events", "iter_generated", "write_generated"]


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
    refs = load_refs(refdata_dir)
    parts = max(1, -(-n // chunk))
    seq = np.zeros(len(SWITCHES), dtype=np.int64)
    for part in range(parts):
        m = min(chunk, n - part * chunk)
        if m <= 0:
            break
        rng = np.random.default_rng([seed, part])
        table, seq = build_chunk(rng, refs, m, start, days, part, parts, seq)
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
