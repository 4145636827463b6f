"""Synthetic reference data of production size, for benchmarks and load tests.

:func:`generate_reference_dir` writes a complete reference directory (spec section 2):
the real NPA table, accounts and blocklist copied from the shipped sample, and
synthetic carriers, NPA-NXX assignments and ported numbers. Everything is vectorized
with numpy and written with ``pyarrow.csv``: a million LNP rows take about a second.
The output is deterministic for a given ``seed``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipeline.rating.codes import OCN_CATEGORIES
from pipeline.refdata.files import REFERENCE_FILES, SAMPLE_REFDATA_DIR, read_reference_tables

#: Share of each OCN category among the generated carriers (order of OCN_CATEGORIES:
#: RBOC, ILEC, CLEC, WIRELESS, CABLE, IC, OTHER).
_CATEGORY_WEIGHTS = (0.02, 0.35, 0.30, 0.10, 0.08, 0.10, 0.05)
_NXX_PER_NPA = 800  # NXX 200-999
_RATE_CENTERS = 400


def generate_reference_dir(
    out: Path,
    *,
    npanxx_rows: int = 100_000,
    lnp_rows: int = 1_000_000,
    ocn_rows: int = 3_000,
    seed: int = 7,
) -> None:
    """Write a valid reference directory with exactly ``npanxx_rows`` and ``lnp_rows`` rows.

    About 10% of the npanxx rows are 7-digit thousands blocks, each held by another
    carrier than its 6-digit parent. LNP numbers are unique and lie in generated
    NPA-NXX codes. Raises ``ValueError`` when the sizes cannot fit the NPA space.
    """
    if npanxx_rows < 1 or lnp_rows < 0 or ocn_rows < 2:
        raise ValueError("npanxx_rows >= 1, lnp_rows >= 0 and ocn_rows >= 2 are required")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sample = read_reference_tables(SAMPLE_REFDATA_DIR)
    for name in ("npa_regions", "accounts", "blocklist"):
        file_name = REFERENCE_FILES[name][0]
        shutil.copyfile(SAMPLE_REFDATA_DIR / file_name, out / file_name)

    # ---- carriers
    ocn_ids = [f"G{i:04X}" for i in range(ocn_rows)]
    categories = rng.choice(len(OCN_CATEGORIES), size=ocn_rows, p=_CATEGORY_WEIGHTS)
    cat_names = pa.array(OCN_CATEGORIES, pa.string()).take(pa.array(categories))
    _write(
        out,
        "ocn",
        {
            "ocn": pa.array(ocn_ids, pa.string()),
            "carrier_name": pa.array([f"Synthetic Carrier {o}" for o in ocn_ids], pa.string()),
            "category": cat_names,
        },
    )
    ocn_array = pa.array(ocn_ids, pa.string())

    # ---- NPA-NXX codes and thousands blocks
    npa_table = sample["npa_regions"]
    npas = np.asarray(
        pc.cast(npa_table.column("npa"), pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64
    )
    npa_states = npa_table.column("state").combine_chunks()
    n7 = npanxx_rows // 10
    n6 = npanxx_rows - n7
    capacity = npas.size * _NXX_PER_NPA
    if n6 > capacity:
        raise ValueError(f"npanxx_rows too large: at most {capacity} NPA-NXX codes exist")
    pick = np.sort(rng.choice(capacity, size=n6, replace=False))
    npa_pos = pick // _NXX_PER_NPA
    prefix6 = npas[npa_pos] * 1000 + 200 + pick % _NXX_PER_NPA
    ocn6 = rng.integers(0, ocn_rows, size=n6)
    block_pick = np.sort(rng.choice(n6 * 10, size=n7, replace=False))
    parent = block_pick // 10
    prefix7 = prefix6[parent] * 10 + block_pick % 10
    ocn7 = _other_than(ocn6[parent], ocn_rows, rng)
    positions = np.concatenate([npa_pos, npa_pos[parent]])
    centers = rng.integers(0, _RATE_CENTERS, size=n6)
    center_names = pa.array([f"RC{i:03d}" for i in range(_RATE_CENTERS)], pa.string())
    _write(
        out,
        "npanxx",
        {
            "prefix": _digits(np.concatenate([prefix6, prefix7])),
            "ocn": ocn_array.take(pa.array(np.concatenate([ocn6, ocn7]))),
            "state": npa_states.take(pa.array(positions)),
            "rate_center": center_names.take(pa.array(np.concatenate([centers, centers[parent]]))),
        },
    )

    # ---- ported numbers
    space = n6 * 10_000
    if lnp_rows > space:
        raise ValueError(f"lnp_rows too large: the NPA-NXX codes hold {space} numbers")
    numbers = np.sort(rng.choice(space, size=lnp_rows, replace=False))
    line_prefix = numbers // 10_000
    tns = prefix6[line_prefix] * 10_000 + numbers % 10_000
    new_ocn = _other_than(ocn6[line_prefix], ocn_rows, rng)
    lrns = prefix6[rng.integers(0, n6, size=lnp_rows)] * 10_000 + rng.integers(
        0, 10_000, size=lnp_rows
    )
    _write(
        out,
        "lnp",
        {
            "tn": _digits(tns),
            "ocn": ocn_array.take(pa.array(new_ocn)),
            "lrn": _digits(lrns),
        },
    )


def _other_than(
    codes: npt.NDArray[np.int64], n: int, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """A random code in ``0..n-1`` different from each of ``codes``."""
    return np.asarray((codes + 1 + rng.integers(0, n - 1, size=codes.size)) % n, dtype=np.int64)


def _digits(values: npt.NDArray[np.int64]) -> pa.Array:
    """Decimal strings of non-negative integers (no leading zeros: NANP digits start 2-9)."""
    return pc.cast(pa.array(values, pa.int64()), pa.string())


def _write(out: Path, name: str, columns: dict[str, pa.Array]) -> None:
    file_name, expected = REFERENCE_FILES[name]
    assert tuple(columns) == expected, (name, tuple(columns))
    table = pa.table(columns)
    with (out / file_name).open("wb") as f:
        f.write((",".join(expected) + "\n").encode())
        pacsv.write_csv(
            table, f, write_options=pacsv.WriteOptions(include_header=False, quoting_style="none")
        )
