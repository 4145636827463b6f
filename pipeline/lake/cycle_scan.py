"""A cycle's :class:`~pipeline.rating.cycle.CycleTotals`, out of core, by DuckDB over a
scan of ``rated_calls``.

DuckDB reads one Delta version of the table: the Parquet files that version lists,
directly for a local lake (projection pushed into its Parquet reader, streamed), or
the version's ``pyarrow`` dataset for a lake in object storage (projection and the
``billing_cycle`` filter pushed into the Arrow scan). No step holds the cycle in
memory:

* the highest revision of each call_id in the cycle: the call ids with more than one
  record are found first (a spilling hash aggregate), and only their records go
  through a window over ``call_id`` (ties broken by the source position exactly as
  :func:`~pipeline.rating.cycle.latest_revisions`); the others pass as they are;
* calls superseded by a higher revision rated into another cycle are dropped with an
  anti join against the other cycles' ``(call_id, revision)`` (a scan, never a set
  loaded whole);
* one ``GROUPING SETS`` aggregation gives every table of ``CycleTotals``: counts,
  ``DECIMAL(38,6)`` sums of money (exact) and integer sums of seconds.

DuckDB keeps to ``close.memory_limit`` and spills the window, join and aggregation
state past it to ``close.temp_directory`` (default: a private temporary directory
removed afterwards). The rules themselves (C1-C4) stay in the pure core
(:func:`pipeline.rating.cycle.invoice_lines`).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import ConfigError
from pipeline.lake.readers import Snapshot, unreadable_file
from pipeline.lake.tables import PARTITION
from pipeline.rating.cycle import TOTALS_SCHEMAS, CycleTotals
from pipeline.settings import CloseSettings

#: The rated records of the cycle, one row per call (highest revision), with what the
#: totals need; then the calls no other cycle holds at a higher revision; then every
#: total in one pass. ``cycle_rows``: the cycle's rated records; ``other_rows``: call_id
#: and revision of the other cycles'; $bound (C2 seconds) is a parameter. The names are those
#: of :class:`~pipeline.rating.codes.CallClass` and ``Flag.OFFSHORE``.
_TOTALS_SQL = """
WITH repeated AS (  -- call ids with more than one record in the cycle (revisions, copies)
    SELECT call_id FROM cycle_rows GROUP BY call_id HAVING count(*) > 1
),
projected AS NOT MATERIALIZED (
    SELECT call_id, revision, account_id, trunk_id, call_class, origin_carrier_category,
           list_contains(flags, 'OFFSHORE') AS offshore,
           usage_charge, surcharge, billable_seconds,
           (duration_ms + 999) // 1000 AS seconds,
           source_partition, source_offset, source_file, source_index
    FROM cycle_rows
),
kept AS (
    SELECT * EXCLUDE (source_partition, source_offset, source_file, source_index)
    FROM projected ANTI JOIN repeated USING (call_id)
    UNION ALL
    SELECT * EXCLUDE (source_partition, source_offset, source_file, source_index)
    FROM (SELECT * FROM projected SEMI JOIN repeated USING (call_id))
    QUALIFY row_number() OVER (
        PARTITION BY call_id
        ORDER BY revision DESC NULLS LAST, source_partition DESC NULLS LAST,
                 source_offset DESC NULLS LAST, source_file DESC NULLS LAST,
                 source_index DESC NULLS LAST
    ) = 1
),
calls AS (
    SELECT k.*,
           k.call_class <> 'NON_BILLABLE' AS billable,
           k.call_class = 'TOLL_FREE' AND NOT k.offshore AS flat_tf,
           k.call_class IN ('TOLL_FREE', 'DID') AS inbound
    FROM kept k
    ANTI JOIN other_rows o
        ON o.call_id = k.call_id AND o.revision > k.revision
)
SELECT
    GROUPING(call_class, offshore, short_seconds, origin_carrier_category, trunk_id) AS grp,
    account_id, call_class, offshore, short_seconds, origin_carrier_category, trunk_id,
    count(*) AS calls,
    count(*) FILTER (billable) AS completed,
    sum(usage_charge) FILTER (billable) AS usage_charge,
    CAST(sum(billable_seconds) FILTER (billable) AS BIGINT) AS billable_seconds,
    count(*) FILTER (surcharge > 0) AS paying,
    sum(surcharge) FILTER (surcharge > 0) AS surcharge,
    count(*) FILTER (billable AND flat_tf) AS c3_calls,
    CAST(sum(billable_seconds) FILTER (billable AND flat_tf) AS BIGINT) AS c3_seconds,
    count(*) FILTER (billable AND inbound) AS c4_calls,
    CAST(sum(billable_seconds) FILTER (billable AND inbound) AS BIGINT) AS c4_seconds
FROM (
    SELECT *, CASE WHEN billable AND seconds <= $bound THEN seconds END AS short_seconds
    FROM calls
)
GROUP BY GROUPING SETS (
    (account_id),
    (account_id, call_class, offshore),
    (account_id, short_seconds),
    (account_id, origin_carrier_category),
    (account_id, trunk_id)
)
"""

#: ``GROUPING(...)`` of each set: a bit per key column, 1 where it is not grouped.
_ACCOUNTS, _USAGE, _SHORT, _CARRIER, _TRUNKS = 0b11111, 0b00111, 0b11011, 0b11101, 0b11110


def scan_cycle_totals(
    rated: Snapshot, cycle: str, short_bound: int, settings: CloseSettings
) -> CycleTotals:
    """The :class:`CycleTotals` of ``cycle`` in ``rated`` (a version of ``rated_calls``:
    every cycle, so that revisions in other cycles are seen), counting C2 short calls
    up to ``short_bound`` seconds. :class:`ConfigError` if DuckDB cannot keep to the
    memory limit or spill (naming the settings to change), or a data file cannot be
    read.

    A local lake's Parquet files are read by DuckDB itself (streamed, within its memory
    limit); a lake in object storage through the table's ``pyarrow`` dataset (DuckDB
    pushes the projection and the cycle filter into it), which holds more memory in
    Arrow's read-ahead (docs/decisions.md)."""
    files = rated.local_files()
    if files is not None and not files.get(cycle):
        return _split(None)  # no rated record in the cycle (an empty close)
    spill = settings.temp_directory
    directory = Path(tempfile.mkdtemp(prefix="cdr-close-")) if spill is None else spill
    config: dict[str, str | bool | int | float | list[str]] = {
        "threads": _threads(),
        "memory_limit": settings.memory_limit,
        "temp_directory": str(directory),
        "preserve_insertion_order": False,
    }
    try:
        with duckdb.connect(config=config) as con:
            _sources(con, rated, files, cycle)
            query = con.sql(_TOTALS_SQL, params={"bound": short_bound})
            grouped = query.to_arrow_table()
    except duckdb.OutOfMemoryException as exc:
        raise ConfigError(
            f"closing {cycle}: DuckDB ran out of memory within close.memory_limit="
            f"{settings.memory_limit} (spilling to {directory}): raise the limit "
            f"(CDR_CLOSE__MEMORY_LIMIT) or free space there ({_first_line(exc)})"
        ) from None
    except duckdb.IOException as exc:
        raise ConfigError(
            f"closing {cycle}: DuckDB cannot read a data file of rated_calls or spill to "
            f"{directory} (close.temp_directory): {_first_line(exc)}"
        ) from None
    except (duckdb.InvalidInputException, pa.ArrowException) as exc:
        raise unreadable_file(rated.lake.table_uri(rated.name), exc) from None
    finally:
        if spill is None:
            shutil.rmtree(directory, ignore_errors=True)
    return _split(grouped)


def _sources(
    con: duckdb.DuckDBPyConnection,
    rated: Snapshot,
    files: dict[str, list[str]] | None,
    cycle: str,
) -> None:
    """Views ``cycle_rows`` and ``other_rows`` over the snapshot: its local Parquet
    files (partition values are folder names, not columns), or its dataset."""
    if files is not None:
        con.read_parquet(files[cycle], union_by_name=True).create_view("cycle_rows")
        others = [f for value, paths in files.items() if value != cycle for f in paths]
        if others:
            rel = con.read_parquet(others, union_by_name=True).select("call_id, revision")
        else:
            rel = con.sql("SELECT NULL::VARCHAR AS call_id, NULL::INTEGER AS revision LIMIT 0")
        rel.create_view("other_rows")
        return
    scan = con.from_arrow(rated.dataset())
    column = duckdb.ColumnExpression(PARTITION)
    value = duckdb.ConstantExpression(cycle)
    scan.filter(column == value).create_view("cycle_rows")
    scan.filter(column != value).select("call_id, revision").create_view("other_rows")


def _split(grouped: pa.Table | None) -> CycleTotals:
    """The rows of each grouping set, as the tables of :class:`CycleTotals` (None: no
    calls)."""
    if grouped is None:
        return CycleTotals.of({n: schema.empty_table() for n, schema in TOTALS_SCHEMAS.items()})

    def rows(grp: int, keep: str | None = None) -> pa.Table:
        mask = pc.equal(grouped.column("grp"), grp)
        if keep is not None:
            mask = pc.and_(mask, pc.greater(grouped.column(keep), 0))
        return grouped.filter(mask)

    accounts = rows(_ACCOUNTS)
    usage = rows(_USAGE, "completed")
    paying = rows(_ACCOUNTS, "paying")
    short = grouped.filter(
        pc.and_(pc.equal(grouped.column("grp"), _SHORT), pc.is_valid(grouped["short_seconds"]))
    )
    carrier = rows(_CARRIER, "c3_calls")
    trunks = rows(_TRUNKS, "c4_calls")
    return CycleTotals.of(
        {
            "accounts": _pick(
                accounts, account_id="account_id", calls="calls", completed="completed"
            ),
            "usage": _pick(
                usage,
                account_id="account_id",
                call_class="call_class",
                offshore="offshore",
                calls="completed",
                usage_charge="usage_charge",
                billable_seconds="billable_seconds",
            ),
            "payphone": _pick(
                paying, account_id="account_id", calls="paying", surcharge="surcharge"
            ),
            "short": _pick(
                short, account_id="account_id", seconds="short_seconds", calls="completed"
            ),
            "carrier": _pick(
                carrier,
                account_id="account_id",
                category="origin_carrier_category",
                calls="c3_calls",
                billable_seconds="c3_seconds",
            ),
            "trunks": _pick(
                trunks, account_id="account_id", trunk_id="trunk_id", billable_seconds="c4_seconds"
            ),
        }
    )


def _pick(table: pa.Table, **columns: str) -> pa.Table:
    """``table``'s columns ``columns.values()`` named ``columns.keys()``."""
    return pa.table({name: table.column(source) for name, source in columns.items()})


def _threads() -> int:
    import os

    return max(1, min(4, os.cpu_count() or 1))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
