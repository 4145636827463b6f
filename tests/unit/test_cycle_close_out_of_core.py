"""Issue 9 #5-#6: the out-of-core cycle close (DuckDB over the lake, C1-C4 on
per-account totals) gives exactly the lines of the in-memory close it replaced
(:mod:`tests.unit.cycle_reference`, kept verbatim), on random lakes with revisions
across cycles and on generated traffic; invoice lines record the ``rated_calls``
version; ``--as-of`` reproduces a past close; a re-close prints its changes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import write_deltalake
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.batch import rate_files, run_close
from pipeline.cli import main
from pipeline.errors import ConfigError
from pipeline.generate import write_generated
from pipeline.lake.cycle_scan import scan_cycle_totals
from pipeline.lake.lake import Lake
from pipeline.lake.readers import Snapshot
from pipeline.lake.tables import INVOICES, RATED
from pipeline.rating.columns import INVOICE_LINE_SCHEMA
from pipeline.rating.cycle import close_cycle, cycle_totals, latest_revisions, short_call_bound
from pipeline.refdata.files import SAMPLE_REFDATA_DIR, load_reference_dir
from pipeline.settings import CloseSettings, load_settings
from pipeline.tariff_files import DEFAULT_TARIFFS_DIR, load_tariff_dir
from tests.unit.cycle_reference import reference_close_cycle
from tests.unit.events import book, event, rate
from tests.unit.refdata_fixture import tiny_reference

REF = tiny_reference()
BOOK = book()
NOV, OCT = "2026-11", "2026-10"
KEYS = [("account_id", "ascending"), ("line_type", "ascending"), ("trunk_id", "ascending")]
US = "+12125551199"  # RBOC block, NY
CLEC = "+12125550199"  # CLEC thousands block
ALASKA = "+19075550100"  # offshore toll-free origin


def _billing(lines: pa.Table) -> pa.Table:
    """The lines without their provenance column, in invoice order."""
    return lines.drop_columns(["rated_calls_version"]).sort_by(KEYS)


def _reference(lake: Lake, cycle: str) -> pa.Table:
    """The pre-issue-9 close over the same lake: the whole cycle in memory."""
    lines = reference_close_cycle(
        lake.read_rated(cycle), REF, BOOK, cycle, elsewhere=lake.max_revisions_outside(cycle)
    )
    return lines.sort_by(KEYS)


class _ViaDataset(Snapshot):
    """A snapshot read through its pyarrow dataset (the object-storage path)."""

    def local_files(self) -> dict[str, list[str]] | None:
        return None


def _lake_of(tmp: Path, batches: Sequence[Sequence[dict[str, Any]]]) -> Lake:
    """A lake with each batch of events rated and committed on its own (its own
    files), every row with a unique source position (file, index)."""
    lake = Lake(tmp / "lake")
    lake.create_tables()
    for n, events in enumerate(batches):
        rated = rate(*events, tariffs=BOOK).rated
        rated = rated.set_column(
            rated.schema.get_field_index("source_file"),
            "source_file",
            pa.array([f"f{n}"] * rated.num_rows, pa.string()),
        )
        rated = rated.set_column(
            rated.schema.get_field_index("source_index"),
            "source_index",
            pa.array(range(rated.num_rows), pa.int64()),
        )
        lake.write_rated(rated)
    return lake


# ----------------------------------------------------------------- random lakes

_calls = st.fixed_dictionaries(
    {
        "call_id": st.sampled_from([f"c{i}" for i in range(8)]),
        "revision": st.integers(0, 2),
        "account_id": st.sampled_from(["ACC-1", "ACC-2", "ACC-W"]),
        "trunk_id": st.sampled_from(["T1", "T2"]),
        "shape": st.sampled_from(["tf-us", "tf-clec", "tf-offshore", "did", "ld", "fwd"]),
        "disposition": st.sampled_from(["ANSWERED", "ANSWERED", "ANSWERED", "BUSY"]),
        "duration_ms": st.sampled_from(
            [1, 5_999, 6_000, 6_001, 61_200, 600_000, 3_600_000, 20 * 3_600_000]
        ),
        "payphone": st.booleans(),
        "october": st.booleans(),
    }
)


def _event(spec: dict[str, Any]) -> dict[str, Any]:
    shape = spec["shape"]
    fields: dict[str, Any] = {
        "call_id": spec["call_id"],
        "revision": spec["revision"],
        "account_id": spec["account_id"],
        "trunk_id": spec["trunk_id"],
        "disposition": spec["disposition"],
        "duration_ms": spec["duration_ms"] if spec["disposition"] == "ANSWERED" else 0,
        "start_time": datetime(2026, 10 if spec["october"] else 11, 20, 12, tzinfo=UTC),
        "ani_ii": "27" if spec["payphone"] else None,
        "calling_number": {"tf-clec": CLEC, "tf-offshore": ALASKA}.get(shape, US),
    }
    if shape == "did":
        fields["called_number"] = "+12125550100"
    elif shape in ("ld", "fwd"):
        fields.update(direction="OUTBOUND", called_number="+13125550199")
        fields["leg"] = "FORWARDED" if shape == "fwd" else "ORIGINAL"
    return event(**fields)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=st.lists(st.lists(_calls, min_size=1, max_size=12), min_size=1, max_size=3))
def test_c1_c4_out_of_core_equals_the_in_memory_close_on_random_lakes(
    batches: list[list[dict[str, Any]]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """C1-C4 and section 4 (highest revision, across cycles): on random lakes (a few
    call ids, revisions 0-2, duplicates, calls in October and November, several
    commits), the DuckDB close over local files, the DuckDB close over the pyarrow
    dataset and the in-memory close all give exactly the reference's lines."""
    lake = _lake_of(tmp_path_factory.mktemp("h"), [[_event(s) for s in b] for b in batches])
    snapshot = lake.snapshot(RATED)
    assert snapshot is not None
    for cycle in (NOV, OCT):
        expected = _reference(lake, cycle)
        got = run_close(lake, REF, BOOK, cycle, allow_empty=True)
        assert _billing(got.lines).equals(expected.drop_columns(["rated_calls_version"]))
        assert set(got.lines.column("rated_calls_version").to_pylist()) <= {snapshot.version}
        bound = short_call_bound(BOOK, cycle)
        via_dataset = scan_cycle_totals(
            _ViaDataset(lake, RATED, snapshot.table), cycle, bound, CloseSettings()
        )
        rated = lake.read_rated(cycle)
        in_memory = cycle_totals(latest_revisions(rated, lake.max_revisions_outside(cycle)), bound)
        for name in ("accounts", "usage", "payphone", "short", "carrier", "trunks"):
            a, b = getattr(via_dataset, name), getattr(in_memory, name)
            keys = [(c, "ascending") for c in a.column_names]
            assert a.sort_by(keys).equals(b.sort_by(keys)), name
        memory = close_cycle(rated, REF, BOOK, cycle, lake.max_revisions_outside(cycle))
        assert memory.sort_by(KEYS).equals(expected)


def test_revision_in_another_cycle_supersedes_out_of_core(tmp_path: Path) -> None:
    """Section 4: revision 1 of a call moved to October drops its November revision 0,
    and a lower revision elsewhere does not; the anti join sees every other cycle."""
    lake = _lake_of(
        tmp_path,
        [
            [
                event(call_id="x", calling_number=US, duration_ms=60_000),
                event(call_id="y", calling_number=US, duration_ms=120_000, revision=2),
            ],
            [
                event(call_id="x", calling_number=US, revision=1, start_time=_oct()),
                event(call_id="y", calling_number=US, revision=1, start_time=_oct()),
            ],
        ],
    )
    lines = run_close(lake, REF, BOOK, NOV).lines.to_pylist()
    usage = [r for r in lines if r["line_type"] == "USAGE_TOLL_FREE_DOMESTIC"]
    assert [str(r["quantity"]) for r in usage] == ["2.000000"]  # y only (120 s)


def _oct() -> datetime:
    return datetime(2026, 10, 30, 12, tzinfo=UTC)


# ----------------------------------------------------------------- generated traffic


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("avro")
    paths = [base / f"part-{i}.avro" for i in range(3)]
    for i, path in enumerate(paths):
        write_generated(path, 5_000, seed=90 + i, refdata_dir=SAMPLE_REFDATA_DIR)
    return paths


SAMPLE = load_reference_dir(SAMPLE_REFDATA_DIR)
SHIPPED = load_tariff_dir(DEFAULT_TARIFFS_DIR)


def test_c1_c4_out_of_core_equals_the_in_memory_close_on_generated_traffic(
    traffic: list[Path], tmp_path: Path
) -> None:
    """C1-C4 over 15,000 generated calls of the shipped sample (every account, every
    rule): the out-of-core close gives exactly the reference's lines, each recording
    the rated_calls version it was computed from."""
    lake = Lake(tmp_path / "lake")
    rate_files(traffic, lake, SAMPLE, SHIPPED, batch_size=4_000)
    result = run_close(lake, SAMPLE, SHIPPED, NOV)
    expected = reference_close_cycle(
        lake.read_rated(NOV), SAMPLE, SHIPPED, NOV, elsewhere=lake.max_revisions_outside(NOV)
    )
    assert _billing(result.lines).equals(
        expected.drop_columns(["rated_calls_version"]).sort_by(KEYS)
    )
    types = set(result.lines.column("line_type").to_pylist())
    assert {"SHORT_CALL_SURCHARGE", "CARRIER_MIX_SURCHARGE", "MINUTE_CAP_OVERAGE"} <= types
    assert result.lines.column("rated_calls_version").unique().to_pylist() == [lake.version(RATED)]
    assert result.records == lake.read_rated(NOV).num_rows
    assert lake.read_invoice_lines(NOV).sort_by(KEYS).equals(result.lines.sort_by(KEYS))


def test_a_small_memory_limit_gives_the_same_lines_and_too_small_a_clear_refusal(
    traffic: list[Path], tmp_path: Path
) -> None:
    """close.memory_limit / close.temp_directory reach DuckDB: a close within 256 MB
    gives the same lines as the default and leaves the spill directory empty; within
    1 MB it is refused (ConfigError naming the setting), writing nothing."""
    lake = Lake(tmp_path / "lake")
    rate_files(traffic, lake, SAMPLE, SHIPPED)
    default = run_close(lake, SAMPLE, SHIPPED, NOV).lines
    spill = tmp_path / "spill"
    spill.mkdir()
    small = CloseSettings(memory_limit="256MB", temp_directory=spill)
    tight = run_close(lake, SAMPLE, SHIPPED, NOV, settings=small)
    assert tight.lines.equals(default)
    assert not tight.changes
    assert list(spill.iterdir()) == []
    written = lake.version(INVOICES)
    with pytest.raises(ConfigError, match=r"ran out of memory within close\.memory_limit=1MB"):
        run_close(lake, SAMPLE, SHIPPED, NOV, settings=CloseSettings(memory_limit="1MB"))
    assert lake.version(INVOICES) == written


def test_close_settings_refuse_a_memory_limit_that_is_not_an_amount() -> None:
    with pytest.raises(ConfigError, match=r"close\.memory_limit.*not an amount of memory"):
        load_settings(close={"memory_limit": "lots"})
    assert load_settings(close={"memory_limit": "512MB"}).close.memory_limit == "512MB"


# ----------------------------------------------------------------- auditable invoices


def _late_lake(tmp: Path) -> tuple[Lake, int]:
    """A lake with November calls, and the rated_calls version before late events."""
    lake = _lake_of(
        tmp,
        [
            [
                event(call_id="a", calling_number=US, duration_ms=60_000),
                event(call_id="b", calling_number=US, duration_ms=60_000, account_id="ACC-2"),
            ]
        ],
    )
    version = lake.version(RATED)
    assert version is not None
    return lake, version


def _add_late_events(lake: Lake) -> None:
    late = rate(
        event(call_id="a", calling_number=US, duration_ms=600_000, revision=1),  # correction
        event(
            call_id="c",
            calling_number=US,
            duration_ms=60_000,
            direction="OUTBOUND",
            called_number="+13125550199",
        ),
        tariffs=BOOK,
    ).rated
    lake.write_rated(late)


def test_as_of_reproduces_a_past_close_exactly(tmp_path: Path) -> None:
    """#6: after late events and a re-close, a close as of the version the first close
    recorded gives exactly the first close's lines, and writes nothing."""
    lake, before = _late_lake(tmp_path)
    first = run_close(lake, REF, BOOK, NOV)
    assert first.lines.column("rated_calls_version").unique().to_pylist() == [before]
    _add_late_events(lake)
    second = run_close(lake, REF, BOOK, NOV)
    assert second.rated_calls_version > before
    assert second.changes
    invoice_version = lake.version(INVOICES)
    again = run_close(lake, REF, BOOK, NOV, as_of=before)
    assert again.lines.equals(first.lines)
    assert again.invoice_version is None
    assert lake.version(INVOICES) == invoice_version  # nothing written
    # the first close stays readable by time travel
    assert (
        lake.read_invoice_lines(NOV, first.invoice_version)
        .sort_by(KEYS)
        .equals(first.lines.sort_by(KEYS))
    )


def test_a_re_close_reports_each_changed_line(tmp_path: Path) -> None:
    """#6: a re-close compares with the previous close read back by time travel: the
    corrected call changes a usage line (amount before and after), the new outbound
    call adds a line; nothing is reported for the unchanged account."""
    lake, _ = _late_lake(tmp_path)
    first = run_close(lake, REF, BOOK, NOV)
    _add_late_events(lake)
    second = run_close(lake, REF, BOOK, NOV)
    assert second.previous_version == first.invoice_version
    by = {(c.account_id, c.line_type): c for c in second.changes}
    changed = by[("ACC-1", "USAGE_TOLL_FREE_DOMESTIC")]
    assert changed.kind == "changed"
    assert (str(changed.amount("before")), str(changed.amount("after"))) == ("0.02", "0.15")
    assert by[("ACC-1", "USAGE_OUTBOUND_LD")].kind == "added"
    assert not [c for c in second.changes if c.account_id == "ACC-2"]


def run(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``main(argv)`` -> (exit code, output); an argparse refusal is exit 2 too."""
    try:
        rc = main(list(argv))
    except SystemExit as exc:
        rc = int(exc.code or 0)
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "Traceback" not in output, output
    return rc, " ".join(output.split())


def test_cli_re_close_prints_the_changes_then_no_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """#6: ``close-cycle`` after late events prints a line-by-line table (added,
    changed, amounts before and after); closing again prints "no change"."""
    lake, _ = _late_lake(tmp_path)
    argv = ["close-cycle", "--lake", lake.uri, "--cycle", NOV]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("pipeline.cli.batch.load_reference", lambda args: REF)
        rc, output = run(argv, capsys)
        assert rc == 0
        assert f"first close of {NOV}" in output
        _add_late_events(lake)
        rc, output = run(argv, capsys)
        assert rc == 0
        assert "Changes of 2026-11 against the previous close" in output
        for word in ("changed", "added", "0.02", "0.15"):
            assert word in output
        rc, output = run(argv, capsys)
        assert rc == 0
        assert "no change against the previous close" in output


@pytest.mark.parametrize(
    ("as_of", "expected"),
    [
        ("-1", "'-1' is not a table version"),
        ("abc", "'abc' is not a table version"),
        ("1.5", "'1.5' is not a table version"),
        ("99", "has no version 99: its latest version is"),
    ],
)
def test_cli_as_of_refuses_a_version_that_is_not_one(
    as_of: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """#6 hostile --as-of: negative, not an integer, beyond the latest: exit 2, a
    message naming the problem, nothing written."""
    lake, _ = _late_lake(tmp_path)
    rc, output = run(
        ["close-cycle", "--lake", lake.uri, "--cycle", NOV, f"--as-of={as_of}"], capsys
    )
    assert rc == 2
    assert expected in output
    assert lake.version(INVOICES) is None


def test_cli_as_of_a_version_without_the_cycle_is_refused_unless_allow_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """#6: version 0 (the empty table) has no November calls: refused like an empty
    cycle; with --allow-empty the reproduction is empty and still writes nothing."""
    lake, _ = _late_lake(tmp_path)
    argv = ["close-cycle", "--lake", lake.uri, "--cycle", NOV, "--as-of", "0"]
    rc, output = run(argv, capsys)
    assert rc == 2
    assert "no rated calls at rated_calls version 0" in output
    rc, output = run([*argv, "--allow-empty"], capsys)
    assert rc == 0
    assert "0 invoice lines reproduced from rated_calls version 0" in output
    assert lake.version(INVOICES) is None


def test_an_invoice_table_of_the_old_schema_is_evolved(tmp_path: Path) -> None:
    """#6 (decision): an invoice_lines table written before rated_calls_version gets
    the column (schema evolution, its own commit); the old close stays readable by
    time travel, with the version null."""
    lake, version = _late_lake(tmp_path)
    old_schema = pa.schema([f for f in INVOICE_LINE_SCHEMA if f.name != "rated_calls_version"])
    old_lines = (
        reference_close_cycle(lake.read_rated(NOV), REF, BOOK, NOV)
        .drop_columns(["rated_calls_version"])
        .cast(old_schema)
    )
    write_deltalake(lake.table_uri(INVOICES), old_lines, partition_by=["billing_cycle"])
    old_version = lake.version(INVOICES)
    assert old_version is not None
    result = run_close(lake, REF, BOOK, NOV)
    assert not result.changes  # same calls: the same billing
    assert result.invoice_version == old_version + 2  # evolution, then the close
    past = lake.read_invoice_lines(NOV, old_version)
    assert past.column("rated_calls_version").null_count == past.num_rows > 0
    now = lake.read_invoice_lines(NOV)
    assert pc.all(pc.equal(now.column("rated_calls_version"), version)).as_py()
