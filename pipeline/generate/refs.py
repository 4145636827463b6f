"""Reference data the generator draws numbers and accounts from.

:func:`load_refs` reads ``accounts.csv``, ``npa_regions.csv`` and ``npanxx.csv``
(required) and ``lnp.csv``, ``blocklist.csv`` (optional) of a reference directory into
the numpy index :class:`Refs`; a missing file, missing column or no account raises
:class:`~pipeline.errors.ReferenceDataError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipeline.errors import ReferenceDataError
from pipeline.generate.shares import I64


@dataclass(frozen=True)
class Refs:
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


def load_refs(refdata_dir: Path) -> Refs:
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
    return Refs(
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
