"""``cdr-pipeline query``: DuckDB views over a real lake, output formats, analyst mode.

The lake is written by the real writers (:class:`pipeline.lake.lake.Lake`) from events
rated by the real core, so the views are checked against what the pipeline writes.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.analytics import (
    VIEWS,
    AnalyticsSettings,
    analyst_mode,
    mask_macro_sql,
    mask_number,
    open_lake,
    run_query,
    views,
)
from pipeline.cli import main
from pipeline.cpni import MALFORMED
from pipeline.errors import ConfigError
from pipeline.lake.lake import Lake
from pipeline.rating.columns import DEAD_LETTER_SCHEMA, INVOICE_LINE_SCHEMA, RATED_SCHEMA
from pipeline.rating.cycle import close_cycle, latest_revisions
from pipeline.rating.rate import rate_batch
from tests.unit.events import book, event, table
from tests.unit.refdata_fixture import tiny_reference

DEC = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
FORWARDED = {
    "direction": "OUTBOUND",
    "leg": "FORWARDED",
    "calling_number": "+18005551234",
    "called_number": "+13125550199",
    "original_calling_number": "+12125550100",
}
#: Every phone number the lake holds, raw: none may show in analyst mode.
RAW_NUMBERS = (
    "+19075550100",
    "+18005551234",
    "+14165550100",
    "+18885551234",
    "+13125550199",
    "+12125550100",
    "+525555550100",
    "2125550100",
    "12125550100",
)
DECODE_DETAIL = "cannot decode: '+12125550100' is not a valid int"


def _with_source(events: pa.Table, source_file: str, payload: bool = False) -> pa.Table:
    """Events as a batch of ``source_file``, record index 0.., raw bytes as payload."""
    n = events.num_rows
    events = events.set_column(
        events.schema.get_field_index("source_file"),
        "source_file",
        pa.array([source_file] * n, pa.string()),
    )
    events = events.set_column(
        events.schema.get_field_index("source_index"),
        "source_index",
        pa.array(range(n), pa.int64()),
    )
    if payload:
        raw = [
            f"avro:{row['calling_number']}>{row['called_number']}".encode()
            for row in events.to_pylist()
        ]
        events = events.set_column(
            events.schema.get_field_index("payload"), "payload", pa.array(raw, pa.binary())
        )
    return events


def _build_lake(root: Path) -> Lake:
    ref, tariffs = tiny_reference(), book()
    lake = Lake(root)
    first = rate_batch(
        _with_source(
            table(
                event(call_id="c-1"),  # Alaska, 61.2 s -> 0.495000
                event(call_id="c-2"),
                event(
                    call_id="c-3",
                    calling_number="+14165550100",
                    called_number="+18885551234",
                    duration_ms=12_000,
                ),  # Canada: 0.040000
                event(call_id="c-4", **FORWARDED),
                event(call_id="c-5", calling_number="12125550100"),  # malformed: ORIGIN_UNKNOWN
                event(call_id="c-6", calling_number=None),
                event(call_id="c-7", calling_number="+525555550100"),
                event(call_id="c-8", duration_ms=1_000),
                event(call_id="d-1", account_id="NOPE"),  # UNKNOWN_ACCOUNT
                event(call_id="d-2", called_number="2125550100"),  # MALFORMED_CALLED_NUMBER
            ),
            "first.avro",
            payload=True,
        ),
        ref,
        tariffs,
    )
    corrections = rate_batch(
        _with_source(
            table(
                event(call_id="c-1", revision=1, duration_ms=12_000),  # same cycle, 0.090000
                event(call_id="c-2", revision=1, start_time=DEC),  # moves to 2026-12
                event(call_id="c-8", duration_ms=2_000),  # same revision again: later index wins
                event(call_id="c-8", duration_ms=3_000),
            ),
            "second.avro",
        ),
        ref,
        tariffs,
    )
    assert first.dead_letters.num_rows == 2
    assert corrections.dead_letters.num_rows == 0
    lake.write_rated(first.rated)
    lake.write_rated(corrections.rated)
    lake.write_dead_letters(first.dead_letters)
    decode_error = pa.Table.from_pylist(
        [{"reason": "DECODE_ERROR", "detail": DECODE_DETAIL, "source_file": "third.avro",
          "source_index": 0, "payload": b"\x00+12125550100"}],
        schema=DEAD_LETTER_SCHEMA,
    )  # fmt: skip
    lake.write_dead_letters(decode_error)
    for cycle in lake.cycles():
        lines = close_cycle(
            lake.read_rated(cycle), ref, tariffs, cycle, lake.max_revisions_outside(cycle)
        )
        lake.write_invoice_lines(lines, cycle)
    return lake


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    return _build_lake(tmp_path_factory.mktemp("lake"))


@pytest.fixture
def con(lake: Lake) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = open_lake(lake)
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def analyst_con(lake: Lake) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = open_lake(lake, analyst=True)
    try:
        yield connection
    finally:
        connection.close()


def rows(connection: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = connection.sql(sql).to_arrow_table().to_pylist()
    return result


def query(lake: Lake, sql: str, fmt: str = "csv", **kw: Any) -> str:
    out = io.StringIO()
    run_query(lake, sql, fmt=fmt, out=out, **kw)  # type: ignore[arg-type]
    return out.getvalue()


# ------------------------------------------------------------------ views
def test_views_have_the_lake_columns_types_and_counts(con: duckdb.DuckDBPyConnection) -> None:
    """Every view exists with the schema's columns in order; money stays DECIMAL."""
    expected = {
        "rated_calls": RATED_SCHEMA.names,
        "rated_calls_all_revisions": RATED_SCHEMA.names,
        "dead_letters": DEAD_LETTER_SCHEMA.names,
        "invoice_lines": INVOICE_LINE_SCHEMA.names,
    }
    for view, names in expected.items():
        assert [r[0] for r in con.sql(f"DESCRIBE {view}").fetchall()] == names, view
    types = dict(con.sql("SELECT column_name, column_type FROM (DESCRIBE rated_calls)").fetchall())
    assert {types[c] for c in ("rate_per_min", "usage_charge", "surcharge", "total_charge")} == {
        "DECIMAL(18,6)"
    }
    assert types["start_time"] == "TIMESTAMP WITH TIME ZONE"
    assert types["flags"] == "VARCHAR[]"
    amounts = dict(
        con.sql("SELECT column_name, column_type FROM (DESCRIBE invoice_lines)").fetchall()
    )
    assert amounts["amount"] == "DECIMAL(18,2)"
    counts = {v: con.sql(f"SELECT count(*) FROM {v}").fetchall()[0][0] for v in VIEWS}  # noqa: S608
    assert counts.pop("invoice_lines") > 0
    assert counts == {
        "rated_calls": 8,  # c-1 .. c-8
        "rated_calls_all_revisions": 12,  # 8 + 4 corrections and re-sends
        "dead_letters": 3,
    }
    cycles = con.sql("SELECT DISTINCT billing_cycle FROM invoice_lines ORDER BY 1").fetchall()
    assert cycles == [("2026-11",), ("2026-12",)]


def test_rated_calls_is_the_latest_revision_of_each_call(con: duckdb.DuckDBPyConnection) -> None:
    """Highest revision across cycles; the same revision twice: highest source wins."""
    got = {
        r["call_id"]: r
        for r in rows(con, "SELECT call_id, revision, billing_cycle, duration_ms, "
                           "total_charge FROM rated_calls")
    }  # fmt: skip
    assert len(got) == 8
    assert (got["c-1"]["revision"], got["c-1"]["total_charge"]) == (1, D("0.090000"))
    assert (got["c-2"]["revision"], got["c-2"]["billing_cycle"]) == (1, "2026-12")
    assert got["c-8"]["duration_ms"] == 3_000  # second.avro index 3 beats index 2 and first.avro
    every = rows(con, "SELECT call_id FROM rated_calls_all_revisions WHERE call_id = 'c-8'")
    assert len(every) == 3


def test_rated_calls_agrees_with_the_cycle_close(
    lake: Lake, con: duckdb.DuckDBPyConnection
) -> None:
    """Per cycle, the view holds exactly what latest_revisions keeps for invoicing."""
    keys = ["call_id", "revision", "duration_ms", "source_file", "source_index"]
    for cycle in lake.cycles():
        kept = latest_revisions(lake.read_rated(cycle), lake.max_revisions_outside(cycle))
        expected = sorted(tuple(r[k] for k in keys) for r in kept.select(keys).to_pylist())
        got = con.sql(
            f"SELECT {', '.join(keys)} FROM rated_calls WHERE billing_cycle = ? ORDER BY ALL",  # noqa: S608
            params=[cycle],
        ).fetchall()
        assert got == expected, cycle


def test_empty_or_missing_folders_give_empty_views_with_the_same_columns(tmp_path: Path) -> None:
    """A lake with dead letters only: the other views exist, empty, same columns."""
    (tmp_path / "rated_calls").mkdir()
    Lake(tmp_path).write_dead_letters(
        pa.Table.from_pylist([{"reason": "X", "detail": "y"}], schema=DEAD_LETTER_SCHEMA)
    )
    for analyst in (False, True):
        connection = open_lake(tmp_path, analyst=analyst)
        try:
            for view, schema in (
                ("rated_calls", RATED_SCHEMA),
                ("rated_calls_all_revisions", RATED_SCHEMA),
                ("invoice_lines", INVOICE_LINE_SCHEMA),
            ):
                described = connection.sql(f"DESCRIBE {view}").fetchall()
                assert [r[0] for r in described] == schema.names
                assert connection.sql(f"SELECT count(*) FROM {view}").fetchall() == [(0,)]  # noqa: S608
            assert connection.sql("SELECT count(*) FROM dead_letters").fetchall() == [(1,)]
            decimals = connection.sql(
                "SELECT column_type FROM (DESCRIBE rated_calls) WHERE column_name = 'total_charge'"
            ).fetchall()
            assert decimals == [("DECIMAL(18,6)",)]
        finally:
            connection.close()


def test_a_missing_lake_or_bad_sql_is_refused(lake: Lake, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such lake directory"):
        open_lake(tmp_path / "nope")
    with pytest.raises(ConfigError, match="not a lake"):
        open_lake(tmp_path)
    with pytest.raises(ConfigError, match="syntax error"):
        query(lake, "SELEC 1")
    with pytest.raises(ConfigError, match="no_such_view"):
        query(lake, "SELECT * FROM no_such_view")
    with pytest.raises(ConfigError, match="Conversion Error"):  # raised while streaming
        query(lake, "SELECT CAST(call_id AS INTEGER) FROM rated_calls")


# ------------------------------------------------------------------ formats
def test_csv_keeps_money_exact_and_timestamps_utc(lake: Lake) -> None:
    out = query(
        lake,
        "SELECT call_id, start_time, total_charge, flags, original_calling_number "
        "FROM rated_calls WHERE call_id IN ('c-1', 'c-3') ORDER BY call_id",
    )
    assert (
        out.splitlines()[0]
        == '"call_id","start_time","total_charge","flags","original_calling_number"'
    )
    got = list(csv.DictReader(io.StringIO(out)))
    assert [(r["call_id"], r["total_charge"]) for r in got] == [
        ("c-1", "0.090000"),
        ("c-3", "0.040000"),
    ]
    assert got[0]["start_time"] == "2026-11-03T12:00:00.000000Z"
    assert json.loads(got[0]["flags"]) == ["OFFSHORE"]
    assert ',"[""OFFSHORE""]",\n' in out  # NULL is an empty field, text is quoted


def test_sums_stay_exact_decimals(lake: Lake, con: duckdb.DuckDBPyConnection) -> None:
    """sum() over DECIMAL stays DECIMAL: the CSV/JSON total equals the exact Decimal sum."""
    charges = [r["total_charge"] for r in rows(con, "SELECT total_charge FROM rated_calls")]
    exact = sum(charges, D(0))
    assert all(isinstance(c, D) for c in charges)
    sql = "SELECT sum(total_charge) AS total, sum(amount) AS billed FROM rated_calls, " \
          "(SELECT sum(amount) AS amount FROM invoice_lines)"  # fmt: skip
    got = next(csv.DictReader(io.StringIO(query(lake, sql))))
    assert D(got["total"]) == exact
    assert got["total"] == format(exact, "f")
    line = json.loads(query(lake, "SELECT sum(total_charge) AS total FROM rated_calls", "json"))
    assert line == {"total": format(exact, "f")}


def test_json_lines_with_decimal_strings_and_iso_utc(lake: Lake) -> None:
    out = query(
        lake,
        "SELECT call_id, revision, start_time, usage_charge, flags, calling_number "
        "FROM rated_calls WHERE call_id IN ('c-3', 'c-6') ORDER BY call_id",
        "json",
    )
    first, second = (json.loads(line) for line in out.splitlines())
    assert first == {
        "call_id": "c-3",
        "revision": 0,
        "start_time": "2026-11-03T12:00:00.000000Z",
        "usage_charge": "0.040000",
        "flags": ["OFFSHORE"],
        "calling_number": "+14165550100",
    }
    assert second["calling_number"] is None
    payload = json.loads(
        query(lake, "SELECT payload FROM dead_letters WHERE reason = 'DECODE_ERROR'", "json")
    )
    assert payload == {"payload": "ACsxMjEyNTU1MDEwMA=="}  # base64 of the raw bytes


def test_table_format(lake: Lake) -> None:
    out = query(
        lake,
        "SELECT call_id, total_charge, jurisdiction FROM rated_calls "
        "WHERE call_id IN ('c-1', 'c-3') ORDER BY call_id",
        "table",
    )
    assert re.search(r"call_id\s.*total_charge\s.*jurisdiction", out)
    assert re.search(r"c-1\s.*0\.090000\s.*NULL", out)
    assert re.search(r"c-3\s.*0\.040000", out)
    assert "2 rows" in out
    capped = query(lake, "SELECT call_id FROM rated_calls_all_revisions", "table", max_rows=5)
    assert "first 5 rows shown, more not shown" in capped
    assert len(re.findall(r"\b[cd]-\d\b", capped)) == 5


# ------------------------------------------------------------------ analyst mode
@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+12125550100", "+1212555XXXX"),  # NANP: country code + NPA-NXX
        ("+525555550100", "+5255555XXXXX"),  # at most 7 digits shown
        ("+442071234567", "+4420712XXXXX"),
        ("+88212345", "+8821XXXX"),  # at least 4 digits hidden
        ("12125550100", MALFORMED),  # not well-formed: masked whole
        ("+1 (212) 555-0100", MALFORMED),
        ("+\uff11\uff12\uff11\uff12\uff15\uff15\uff15\uff10\uff11\uff10\uff10", MALFORMED),
        ("+123", MALFORMED),
        ("anonymous", MALFORMED),
        ("", ""),
        (None, None),
    ],
)
def test_mask_number(number: str | None, masked: str | None) -> None:
    assert mask_number(number) == masked


_MASK_CON = duckdb.connect()  # holds only the macro, as open_lake defines it
_MASK_CON.execute(mask_macro_sql())


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.text(alphabet="+0123456789 -()xé\uff11\u0661\u0967", max_size=20)))
def test_sql_mask_is_the_python_mask(number: str | None) -> None:
    """The SQL macro used by the views and :func:`mask_number` are the same rule."""
    got = _MASK_CON.execute("SELECT mask_number(?)", [number]).fetchone()
    assert got is not None
    assert got[0] == mask_number(number)


def test_analyst_mode_masks_numbers_in_every_view(analyst_con: duckdb.DuckDBPyConnection) -> None:
    got = {
        r["call_id"]: r
        for r in rows(
            analyst_con,
            "SELECT call_id, calling_number, called_number, original_calling_number "
            "FROM rated_calls",
        )
    }
    assert (got["c-1"]["calling_number"], got["c-1"]["called_number"]) == (
        "+1907555XXXX",
        "+1800555XXXX",
    )
    assert got["c-4"]["original_calling_number"] == "+1212555XXXX"
    assert got["c-5"]["calling_number"] == MALFORMED  # 12125550100: no +
    assert got["c-6"]["calling_number"] is None
    assert got["c-7"]["calling_number"] == "+5255555XXXXX"
    dead = {
        r["call_id"]: r
        for r in rows(analyst_con, "SELECT call_id, detail, payload FROM dead_letters")
    }
    assert all(r["payload"] is None for r in dead.values())
    assert dead[None]["detail"] == "cannot decode: '<number>' is not a valid int"


def test_no_raw_number_reaches_the_analyst(lake: Lake) -> None:
    """Whole views as CSV and JSON: no raw number, no run of 8+ digits."""
    for view in VIEWS:
        for fmt in ("csv", "json", "table"):
            out = query(lake, f"SELECT * FROM {view}", fmt, analyst=True, max_rows=1000)  # noqa: S608
            assert not [n for n in RAW_NUMBERS if n in out], (view, fmt)
            assert not re.search(r"[0-9]{8,}", out), (view, fmt)
    # the same output without analyst mode does hold them (the check above has teeth)
    assert "+12125550100" in query(lake, "SELECT * FROM rated_calls")


def test_analyst_sql_cannot_reach_the_files(lake: Lake, tmp_path: Path) -> None:
    """File access is off and the configuration locked after the views are built."""
    raw = pa.table({"calling_number": ["+12125550100"]})  # a Python variable: not reachable
    assert raw.num_rows == 1
    some_file = Path(lake.table_uri("rated_calls")) / lake.live_files("rated_calls")[0]
    attempts = [
        f"SELECT calling_number FROM read_parquet('{some_file}')",  # noqa: S608
        f"SELECT * FROM '{some_file}'",  # noqa: S608
        f"SELECT * FROM read_parquet('{lake.uri}/rated_calls/*/*.parquet', hive_partitioning=true)",  # noqa: S608
        f"SELECT * FROM read_blob('{some_file}')",  # noqa: S608
        f"COPY rated_calls TO '{tmp_path / 'out.csv'}'",
        f"ATTACH '{tmp_path / 'x.duckdb'}'",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "SELECT * FROM raw",
    ]
    for sql in attempts:
        with pytest.raises(ConfigError):
            query(lake, sql, analyst=True)
    assert not (tmp_path / "out.csv").exists()
    with pytest.raises(ConfigError, match="analyst mode: file access is disabled"):
        query(lake, f"SELECT * FROM read_parquet('{some_file}')", analyst=True)  # noqa: S608
    # without analyst mode the same read works (the attempts above fail for the right reason)
    assert "+1" in query(lake, f"SELECT calling_number FROM read_parquet('{some_file}')")  # noqa: S608


def test_analyst_setting_from_environment_and_the_flag_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CDR_ANALYST_MODE", raising=False)
    assert AnalyticsSettings().analyst_mode is False
    assert analyst_mode(None) is False
    monkeypatch.setenv("CDR_ANALYST_MODE", "true")
    assert analyst_mode(None) is True
    assert analyst_mode(False) is False
    monkeypatch.setenv("CDR_ANALYST_MODE", "maybe")
    with pytest.raises(ConfigError, match="CDR_ANALYST_MODE"):
        analyst_mode(None)
    assert analyst_mode(True) is True


# ------------------------------------------------------------------ command line
def test_cli_query_prints_to_stdout(lake: Lake, capsys: pytest.CaptureFixture[str]) -> None:
    sql = "SELECT call_id, total_charge FROM rated_calls WHERE call_id = 'c-3'"
    assert main(["query", sql, "--lake", lake.uri, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"call_id": "c-3", "total_charge": "0.040000"}
    assert main(["query", sql, "--lake", lake.uri]) == 0
    assert re.search(r"c-3\s.*0\.040000", capsys.readouterr().out)


def test_cli_query_analyst_mode_from_environment(
    lake: Lake, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sql = "SELECT calling_number FROM rated_calls WHERE call_id = 'c-1'"
    monkeypatch.setenv("CDR_ANALYST_MODE", "true")
    assert main(["query", sql, "--lake", lake.uri, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == '"+1907555XXXX"'
    assert main(["query", sql, "--lake", lake.uri, "--format", "csv", "--no-analyst"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == '"+19075550100"'
    monkeypatch.delenv("CDR_ANALYST_MODE")
    monkeypatch.setattr("sys.stdin", io.StringIO(sql))
    assert main(["query", "-", "--lake", lake.uri, "--format", "csv", "--analyst"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == '"+1907555XXXX"'


def test_cli_query_errors_exit_2(
    lake: Lake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["query", "SELEC 1", "--lake", lake.uri]) == 2
    assert "query failed" in capsys.readouterr().err
    assert main(["query", "SELECT 1", "--lake", str(tmp_path / "missing")]) == 2
    assert "no such lake directory" in capsys.readouterr().err
    some_file = Path(lake.table_uri("rated_calls")) / lake.live_files("rated_calls")[0]
    sql = f"SELECT * FROM read_parquet('{some_file}')"  # noqa: S608
    assert main(["query", sql, "--lake", lake.uri, "--analyst"]) == 2
    captured = capsys.readouterr()
    assert "analyst mode" in captured.err
    assert captured.out == ""


# ------------------------------------------------------------------ analyst mode: hostile
#: Numbers written so that the old masks missed them (issue 10, items 3 and 4).
HOSTILE = {
    "calling_number": "+\uff11\uff12\uff11\uff12\uff15\uff15\uff15\uff10\uff11\uff10\uff10",
    "called_number": "+\u0661\u0662\u0661\u0662\u0665\u0665\u0665\u0660\u0661\u0660\u0661",
    "original_calling_number": "+1 212 555 0102",
    "ani_ii": "+12125550104",
    "switch_id": "+12125550104",
    "trunk_id": "TRK-\u0968\u0967\u0968\u096b\u096b\u096b\u0966\u0967\u0966\u096b",  # Devanagari
    "call_id": "x-(212) 555-0106",
    "source_file": "calls-212.555.0107.avro",
}
#: The national digits of every hostile number: none may reach an analyst, in any script.
HOSTILE_DIGITS = (
    "2125550100", "2125550101", "2125550102", "2125550104", "2125550105", "2125550106",
    "2125550107", "2125550108", "2125550109", "2125550110", "2125550111",
)  # fmt: skip


def _ascii_digits(text: str) -> str:
    """Only the digits of ``text``, any script, as ASCII (separators dropped)."""
    return "".join(
        str(unicodedata.digit(c)) for c in text if unicodedata.digit(c, None) is not None
    )


def _build_hostile_lake(root: Path) -> Lake:
    """The test lake plus an old lake's rows: numbers in non-ASCII digits and in free-text
    columns of every table, and two calls whose ids differ only in their digits."""
    lake = _build_lake(root)
    template = lake.read_rated("2026-11").filter(pc.equal(pc.field("call_id"), "c-3"))
    rows_: list[dict[str, Any]] = []
    for call_id in (HOSTILE["call_id"], "y-2125550110", "y-2125550111"):
        row = template.to_pylist()[0] | HOSTILE | {"call_id": call_id}
        row["flags"] = ["NOTE +1-212-555-0108"]
        rows_.append(row)
    lake.write_rated(pa.Table.from_pylist(rows_, schema=RATED_SCHEMA))
    dead = pa.Table.from_pylist(
        [{"reason": "MALFORMED_CALLED_NUMBER",
          "detail": "called_number '\u096b\u096b\u096b\u0966\u0967\u0966\u096f' and +1 (212) 555-0109",
          "call_id": "+12125550109", "source_topic": "calls-2125550109", "source_file": None,
          "source_index": 0, "payload": b"+12125550109"}],
        schema=DEAD_LETTER_SCHEMA,
    )  # fmt: skip
    lake.write_dead_letters(dead)
    lines = lake.read_invoice_lines("2026-11")
    lines = lines.set_column(
        lines.schema.get_field_index("trunk_id"),
        "trunk_id",
        pa.array(["+12125550105"] * lines.num_rows, pa.string()),
    )
    lines = lines.set_column(
        lines.schema.get_field_index("billing_cycle"),
        "billing_cycle",
        pa.array(["2027-01"] * lines.num_rows, pa.string()),
    )
    lake.write_invoice_lines(lines, "2027-01")
    return lake


@pytest.fixture(scope="module")
def hostile_lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    return _build_hostile_lake(tmp_path_factory.mktemp("hostile"))


def test_analyst_mode_masks_non_ascii_digits_and_every_string_column(hostile_lake: Lake) -> None:
    """Issue 10 items 3-4: full-width / Arabic-Indic / Devanagari numbers, numbers in
    ani_ii, switch_id, trunk_id, call_id, flags, source_file and dead letters' detail,
    call_id, source_topic and payload: no digits of them in any view, any format."""
    for view in VIEWS:
        for fmt in ("csv", "json", "table"):
            out = query(hostile_lake, f"SELECT * FROM {view}", fmt, analyst=True, max_rows=1000)  # noqa: S608
            digits = _ascii_digits(out)
            assert not [n for n in HOSTILE_DIGITS if n[-7:] in digits], (view, fmt)
    # without analyst mode they are there (the check has teeth)
    raw = _ascii_digits(query(hostile_lake, "SELECT * FROM rated_calls", "json"))
    assert all(n in raw for n in HOSTILE_DIGITS[:3])
    con = open_lake(hostile_lake, analyst=True)
    try:
        legacy = rows(
            con,
            "SELECT * FROM rated_calls WHERE source_file LIKE 'calls-%' ORDER BY call_id",
        )
        dead = rows(con, "SELECT * FROM dead_letters WHERE source_topic IS NOT NULL")
        trunks = rows(
            con, "SELECT DISTINCT trunk_id FROM invoice_lines WHERE billing_cycle = '2027-01'"
        )
    finally:
        con.close()
    first = legacy[0]
    assert (first["calling_number"], first["called_number"]) == (MALFORMED, MALFORMED)
    assert first["original_calling_number"] == MALFORMED
    assert (first["ani_ii"], first["switch_id"]) == ("<number>", "<number>")
    assert (first["trunk_id"], first["call_id"]) == ("TRK-<number>", "x-<number>")
    assert first["flags"] == ["NOTE <number>"]
    assert first["source_file"] == "calls-<number>.avro"
    assert first["tariff_version"].endswith("T00:00:00Z")  # ISO instants stay readable
    assert dead[0]["detail"] == "called_number '<number>' and <number>"
    assert (dead[0]["call_id"], dead[0]["source_topic"], dead[0]["payload"]) == (
        "<number>",
        "calls-<number>",
        None,
    )
    assert trunks == [{"trunk_id": "<number>"}]


def test_analyst_latest_revision_is_chosen_before_masking(hostile_lake: Lake) -> None:
    """Two calls whose ids differ only in masked digits both stay in rated_calls."""
    sql = "SELECT count(*) AS n FROM rated_calls"
    plain = query(hostile_lake, sql)
    assert query(hostile_lake, sql, analyst=True) == plain
    masked = query(
        hostile_lake, "SELECT call_id FROM rated_calls WHERE call_id LIKE 'y-%'", analyst=True
    )
    assert masked.splitlines()[1:] == ['"y-<number>"', '"y-<number>"']


@pytest.mark.parametrize(
    "template",
    [
        "COPY (SELECT 1) TO '{cwd}/.tmp/x.csv'",
        "COPY rated_calls TO '{cwd}/.tmp/x.parquet' (FORMAT parquet)",
        "COPY rated_calls TO '{tmp}/x.csv'",
        "COPY rated_calls TO '/tmp/cdr-analyst-{name}.csv'",
        "EXPORT DATABASE '{cwd}/.tmp/export'",
        "ATTACH '{cwd}/.tmp/a.duckdb'",
        "ATTACH '{tmp}/a.duckdb'",
        "SELECT * FROM read_csv('{cwd}/.tmp/*.csv')",
        "SELECT * FROM glob('{cwd}/.tmp/*')",
        "SELECT * FROM glob('{cwd}/*')",
        "SELECT * FROM glob('/tmp/*')",
        "SELECT * FROM read_text('{cwd}/seen.txt')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM read_blob('{lake}/rated_calls/billing_cycle=2026-11/first.parquet')",
        "SELECT * FROM read_parquet('{lake}/**/*.parquet')",
        "SELECT * FROM '{lake}/dead_letters/first.parquet'",
        "SELECT * FROM read_csv('https://example.invalid/x.csv')",
        "SELECT * FROM query('SELECT * FROM read_text(''/etc/hostname'')')",
        "SET enable_external_access = true",
        "RESET enable_external_access",
        "SET lock_configuration = false",
        "SET temp_directory = '{tmp}'",
        "SET allowed_directories = ['{tmp}']",
        "SET allowed_paths = ['{cwd}/seen.txt']",
        "INSTALL httpfs",
        "FORCE INSTALL json",
        "LOAD httpfs",
        "CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
        # issue 9 item 7: the views mask over the unmasked scans, which stay out of reach
        "SELECT calling_number FROM _scan_rated_calls",
        "SELECT calling_number FROM _SCAN_RATED_CALLS",
        'SELECT calling_number FROM temp.main."_scan_rated_calls"',
        "WITH r AS (SELECT * FROM _scan_rated_calls) SELECT calling_number FROM r",
        "SELECT (SELECT max(calling_number) FROM _scan_rated_calls)",
        "SELECT 1; SELECT detail FROM _scan_dead_letters",
        "SUMMARIZE _scan_rated_calls",
        "DESCRIBE SELECT * FROM _scan_invoice_lines",
        "PIVOT _scan_rated_calls ON call_class USING max(calling_number)",
        "SELECT * FROM query_table('_scan_rated_calls')",
        "SELECT * FROM query('SELECT calling_number FROM _scan_rated_calls')",
        "CREATE OR REPLACE TEMP MACRO mask_number(n) AS n; SELECT calling_number FROM rated_calls",
        "CREATE OR REPLACE TEMP MACRO mask_text(s) AS s; SELECT detail FROM dead_letters",
        "CREATE TEMP VIEW v AS SELECT * FROM _scan_rated_calls; SELECT calling_number FROM v",
        "DROP VIEW rated_calls",
        "EXPLAIN ANALYZE SELECT calling_number FROM _scan_rated_calls",
    ],
)
def test_analyst_sql_has_no_file_access_at_all(
    lake: Lake,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    template: str,
) -> None:
    """Issue 10 item 5: no directory stays open in analyst mode (``<cwd>/.tmp/`` was):
    every attempt is refused with exit 2 and a clear message, and nothing is written."""
    cwd = tmp_path / "cwd"
    (cwd / ".tmp").mkdir(parents=True)  # as if DuckDB had made its spill directory here
    (cwd / ".tmp" / "raw.csv").write_text("calling_number\n+12125550100\n")
    (cwd / "seen.txt").write_text("+12125550100\n")
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(cwd)
    sql = template.format(cwd=cwd, tmp=other, lake=lake.uri, name=tmp_path.name)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["query", sql, "--lake", lake.uri, "--analyst", "--format", "csv"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "refused: analyst mode: " in captured.err
    assert "5550100" not in captured.err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not Path(f"/tmp/cdr-analyst-{tmp_path.name}.csv").exists()


def test_analyst_mode_has_no_directory_and_no_spill(
    lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``allowed_directories`` and ``allowed_paths`` are empty, spilling is off, and no
    ``.tmp`` directory appears in the working directory."""
    monkeypatch.chdir(tmp_path)
    con = open_lake(lake, analyst=True)
    try:
        settings_ = dict(
            con.sql(
                "SELECT name, value FROM duckdb_settings() WHERE name IN ('allowed_directories', "
                "'allowed_paths', 'temp_directory', 'enable_external_access', "
                "'lock_configuration', 'autoload_known_extensions', 'autoinstall_known_extensions')"
            ).fetchall()
        )
    finally:
        con.close()
    assert settings_ == {
        "allowed_directories": "[]",
        "allowed_paths": "[]",
        "temp_directory": "",
        "enable_external_access": "false",
        "lock_configuration": "true",
        "autoload_known_extensions": "false",
        "autoinstall_known_extensions": "false",
    }
    assert list(tmp_path.iterdir()) == []


def test_analyst_views_mask_over_the_scans_without_a_copy(lake: Lake) -> None:
    """Issue 9 item 7: the analyst views are views over the unmasked scans (no masked
    table is built), which is why analyst SQL goes through the guard: read directly,
    bypassing it, the scan holds raw numbers (the hostile-SQL test above has teeth)."""
    con = open_lake(lake, analyst=True)
    try:
        tables = con.sql("SELECT table_name FROM duckdb_tables()").fetchall()
        views = {r[0] for r in con.sql("SELECT view_name FROM duckdb_views()").fetchall()}
        raw = con.sql("SELECT calling_number FROM _scan_rated_calls").fetchall()
    finally:
        con.close()
    assert tables == []
    assert set(VIEWS) <= views
    assert ("+19075550100",) in raw


@pytest.mark.parametrize("analyst", [False, True])
def test_views_scan_the_tables_with_pushdown(lake: Lake, analyst: bool) -> None:
    """Issue 9 item 7: the views scan the Delta tables' files (no table in DuckDB): the
    aggregate reads only its columns, a billing_cycle filter reaches the scan (partition
    pruning, also in analyst mode), and the joins of the latest-revision rule build
    their hash tables on the few candidate calls, never on the scan."""
    con = open_lake(lake, analyst=analyst)
    try:
        [(_, plan)] = con.sql(
            "EXPLAIN SELECT call_class, count(*), sum(total_charge) FROM rated_calls "
            "WHERE billing_cycle = '2026-11' GROUP BY ALL"
        ).fetchall()
        tables = con.sql("SELECT table_name FROM duckdb_tables()").fetchall()
    finally:
        con.close()
    assert tables == []
    assert "PYTHON_ARROW_SCAN" in plan
    assert "Filters: \"billing_cycle\" = '2026-11'" in plan
    assert "calling_number" not in plan  # projections pushed down
    assert "flags" not in plan
    assert "Join Type: SEMI" in plan
    assert "Join Type: MARK" in plan
    assert "RIGHT_SEMI" not in plan
    assert "RIGHT_ANTI" not in plan


def test_scans_read_ahead_little(lake: Lake) -> None:
    """The registered datasets are the table's files with small read-ahead; DuckDB hands
    them its projection and filter (through :meth:`LeanDataset.scanner`)."""
    data = lake.dataset("rated_calls")
    assert data is not None
    seen: list[dict[str, Any]] = []

    class Spy(views.LeanDataset):
        def scanner(self, *args: Any, **kwargs: Any) -> Any:
            scanner = super().scanner(*args, **kwargs)
            seen.append(kwargs)
            return scanner

    spy = Spy(list(data.get_fragments()), data.schema, data.format, data.filesystem)
    assert spy.count_rows() == data.count_rows()
    con = duckdb.connect()
    try:
        con.register("t", spy)
        got = con.sql("SELECT sum(total_charge) FROM t WHERE billing_cycle = '2026-12'").fetchall()
    finally:
        con.close()
    assert got == [(D("0.484000"),)]  # c-2 revision 1, moved to December
    [call] = [k for k in seen if "columns" in k]
    assert call["columns"] == ["total_charge"]
    assert str(call["filter"]) == '(billing_cycle == "2026-12")'
    options = views.scan_options(call)
    assert {k: options[k] for k in views.SCAN_OPTIONS} == views.SCAN_OPTIONS
    assert views.scan_options({"batch_readahead": 16})["batch_readahead"] == 16


def test_readers_agree_per_cycle_with_partition_pruning(lake: Lake) -> None:
    """Issue 9 item 8 (docs/analytics.md): DuckDB, polars and pyarrow read the same sums
    per billing cycle, exact, and a billing_cycle filter reads only that cycle's folder.
    (pandas is not a dependency; ``to_pandas`` is pyarrow's, checked in the docs only.)"""
    import polars as pl
    from deltalake import DeltaTable

    uri = lake.table_uri("rated_calls")
    data = DeltaTable(uri).to_pyarrow_dataset()
    for cycle in lake.cycles():
        where = pc.field("billing_cycle") == cycle
        files = [f.path for f in data.get_fragments(filter=where)]
        assert files
        assert all(f"billing_cycle={cycle}/" in f for f in files)
        arrow = data.to_table(columns=["total_charge"], filter=where)
        want = pc.sum(arrow.column("total_charge")).as_py()
        con = duckdb.connect()
        try:
            con.register("calls", data)
            duck = con.execute(
                "SELECT count(*), sum(total_charge) FROM calls WHERE billing_cycle = ?", [cycle]
            ).fetchall()
        finally:
            con.close()
        polars = (
            pl.scan_delta(uri)
            .filter(pl.col("billing_cycle") == cycle)
            .select(pl.len(), pl.col("total_charge").sum())
            .collect()
        )
        assert duck == [(arrow.num_rows, want)]
        assert (polars.item(0, 0), polars.item(0, 1)) == (arrow.num_rows, want)
        assert sum(arrow.column("total_charge").to_pylist(), D(0)) == want
        assert isinstance(want, D)


def test_memory_limit_setting(
    lake: Lake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """CDR_QUERY_MEMORY_LIMIT caps DuckDB; a malformed value is refused naming it, and an
    analyst query over the limit (nothing spills) fails with a message naming it."""
    monkeypatch.setenv("CDR_QUERY_MEMORY_LIMIT", "lots")
    assert main(["query", "SELECT 1", "--lake", lake.uri]) == 2
    assert "CDR_QUERY_MEMORY_LIMIT" in capsys.readouterr().err
    monkeypatch.setenv("CDR_QUERY_MEMORY_LIMIT", "64MiB")
    con = open_lake(lake, analyst=True)
    try:
        [(limit,)] = con.sql("SELECT current_setting('memory_limit')").fetchall()
    finally:
        con.close()
    assert limit == "64.0 MiB"
    sql = "SELECT count(DISTINCT x) FROM (SELECT x::VARCHAR || 'padding' AS x FROM range(30000000) t(x))"
    assert main(["query", sql, "--lake", lake.uri, "--analyst"]) == 2
    err = capsys.readouterr().err
    assert "out of memory" in err
    assert "CDR_QUERY_MEMORY_LIMIT" in err
