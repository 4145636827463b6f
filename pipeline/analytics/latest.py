"""The latest revision of each call, chosen without holding the table in memory.

Most calls have one row, so the rule only has work to do for a few. One pass over the
``call_id`` column collects DuckDB's 64-bit ``hash`` of each id (8 bytes a row, sorted
in place with numpy); hashes seen more than once mark the *candidate* calls: those with
several rows, and, rarely, different ids whose hashes collide. The relation is then

* rows whose id hash is seen once: as they are, streamed (filters and projections
  still reach the scan), and
* rows of the candidates (about 2 % of a generated lake): ``row_number()`` over the
  exact ``call_id`` in :data:`LATEST_ORDER`, so a hash collision never merges two calls.

The candidate hashes are a small registered Arrow table; the two branches are a mark
join (``NOT IN``) and a semi join (``IN``) whose hash table holds only the candidates.
DuckDB does not know the size of a pyarrow dataset (it guesses one row), so its
optimizer would build the semi join's hash table on the whole scan:
:func:`pipeline.analytics.views.connect` disables that optimizer
(``build_side_probe_side``). The candidate set is fixed for the connection, as the
tables' versions are.

"Latest" mirrors :func:`pipeline.rating.cycle.latest_revisions`: per call_id the
highest ``revision``; ties (the same revision written twice) go to the highest
``source_partition``, ``source_offset``, ``source_file``, ``source_index`` (nulls
last), then (across cycles) the highest ``billing_cycle``.
"""

from __future__ import annotations

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

#: Latest-revision order (see the module docstring).
LATEST_ORDER = (
    "revision DESC, source_partition DESC NULLS LAST, source_offset DESC NULLS LAST, "
    "source_file DESC NULLS LAST, source_index DESC NULLS LAST, billing_cycle DESC"
)
#: The key hashed for the candidate test (DuckDB ``hash`` of the id as text).
KEY_HASH = "hash(CAST(call_id AS VARCHAR))"
_BATCH_ROWS = 256 * 1024


def candidate_hashes(
    con: duckdb.DuckDBPyConnection, relation: str, rows: int | None = None
) -> npt.NDArray[np.uint64]:
    """Sorted unique :data:`KEY_HASH` values that occur more than once in ``relation``
    (a relation with a ``call_id`` column). ``rows``: its row count if known (the hash
    array is then allocated once: 8 bytes a row)."""
    reader = con.sql(f"SELECT {KEY_HASH} AS h FROM {relation}").to_arrow_reader(_BATCH_ROWS)  # noqa: S608
    hashes = np.empty(rows if rows is not None else 0, np.uint64)
    filled = 0
    for batch in reader:
        chunk = batch.column(0).to_numpy(zero_copy_only=False).astype(np.uint64, copy=False)
        if filled + len(chunk) > len(hashes):  # more rows than announced: grow
            grown = np.empty(max(2 * len(hashes), filled + len(chunk)), np.uint64)
            grown[:filled] = hashes[:filled]
            hashes = grown
        hashes[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    hashes = hashes[:filled]
    hashes.sort()
    repeated = hashes[1:][hashes[1:] == hashes[:-1]]
    return np.unique(repeated)


def register_candidates(
    con: duckdb.DuckDBPyConnection, name: str, candidates: npt.NDArray[np.uint64]
) -> None:
    """Register ``candidates`` as the relation ``name`` (one column ``h UBIGINT``)."""
    con.register(name, pa.table({"h": pa.array(candidates, pa.uint64())}))


def latest_sql(source: str, candidates: str) -> str:
    """The latest revision of each call of ``source`` (a relation or a parenthesized
    query with the rated-record columns), as a query; ``candidates``: the relation
    registered by :func:`register_candidates` for ``source``'s ids."""
    return (
        f"SELECT * FROM {source} AS once "  # noqa: S608
        f"WHERE {KEY_HASH} NOT IN (SELECT h FROM {candidates}) "
        f"UNION ALL SELECT * FROM {source} AS several "
        f"WHERE {KEY_HASH} IN (SELECT h FROM {candidates}) "
        f"QUALIFY row_number() OVER (PARTITION BY call_id ORDER BY {LATEST_ORDER}) = 1"
    )


def cycle_latest_sql(source: str, candidates: str, cycle_literal: str) -> str:
    """The calls of one cycle at their latest revision, as the cycle close counts them
    (:func:`pipeline.rating.cycle.latest_revisions`): the highest revision among the
    cycle's rows, dropped if another cycle holds the call at a higher revision.
    ``cycle_literal``: the cycle as an SQL string literal (checked by the caller)."""
    in_cycle = f"billing_cycle = {cycle_literal}"
    several = f"{KEY_HASH} IN (SELECT h FROM {candidates})"  # noqa: S608
    return (
        f"SELECT * FROM {source} AS once WHERE {in_cycle} "  # noqa: S608
        f"AND {KEY_HASH} NOT IN (SELECT h FROM {candidates}) "
        "UNION ALL SELECT * FROM ("
        f"SELECT * FROM {source} AS several WHERE {in_cycle} AND {several} "
        f"QUALIFY row_number() OVER (PARTITION BY call_id ORDER BY {LATEST_ORDER}) = 1"
        ") AS kept WHERE NOT EXISTS ("
        f"SELECT 1 FROM (SELECT call_id, revision FROM {source} "
        f"WHERE billing_cycle <> {cycle_literal} AND {several}) AS other "
        "WHERE other.call_id = kept.call_id AND other.revision > kept.revision)"
    )
