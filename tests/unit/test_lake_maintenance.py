"""``lake compact`` and ``lake vacuum`` on a local lake, and the service's scheduled
compaction (:mod:`pipeline.runtime.compaction`) driven without a broker.

Compaction must keep every rated record exactly once (R1: each event one rated
record or one dead letter, never two) and the members' application transactions
(the offsets of exactly-once); the concurrent cases with writers and readers running
are in ``tests/integration/test_compaction.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable
from prometheus_client import CollectorRegistry

from pipeline.batch import rate_files
from pipeline.cli import main
from pipeline.errors import ConfigError
from pipeline.generate import write_generated
from pipeline.lake import compaction, handles
from pipeline.lake.compaction import compact_lake, compact_table
from pipeline.lake.lake import Lake, partition_app_id
from pipeline.lake.partitions import PartitionTable
from pipeline.lake.sizes import parse_hours, parse_size
from pipeline.lake.tables import DEAD, RATED
from pipeline.lake.vacuum import vacuum_lake
from pipeline.refdata.files import SAMPLE_REFDATA_DIR, load_reference_dir
from pipeline.runtime.compaction import CompactionMetrics, CycleRecorder, ScheduledCompaction
from pipeline.runtime.ports import Flush
from pipeline.settings import CompactionSettings, LakeSettings, load_settings
from pipeline.tariff_files import DEFAULT_TARIFFS_DIR, load_tariff_dir

TOPIC = "calls"
CYCLES = ("2026-11", "2026-12")
KEY = [("source_partition", "ascending"), ("source_offset", "ascending")]


# ----------------------------------------------------------------------------- helpers
def rated_template(directory: Path, events: int = 2_000) -> pa.Table:
    """Real rated records (the batch path over generated traffic), to copy flushes from."""
    avro = directory / "calls.avro"
    write_generated(avro, events, seed=5, refdata_dir=SAMPLE_REFDATA_DIR)
    lake = Lake(directory / "template")
    rate_files([avro], lake, load_reference_dir(SAMPLE_REFDATA_DIR),
               load_tariff_dir(DEFAULT_TARIFFS_DIR))  # fmt: skip
    return pa.concat_tables([lake.read_rated(c) for c in lake.cycles()])


def flush_rows(
    template: pa.Table, partition: int, first: int, n: int, cycle: str | None = None
) -> pa.Table:
    """``n`` rated records standing for offsets ``first..first+n-1`` of ``partition``
    (in billing cycle ``cycle``, default the template's)."""
    rows = template.take(pa.array(np.arange(first, first + n) % template.num_rows))
    if cycle is not None:
        rows = rows.set_column(
            rows.schema.get_field_index("billing_cycle"), "billing_cycle", pa.array([cycle] * n)
        )
    rows = rows.set_column(
        rows.schema.get_field_index("source_partition"),
        "source_partition",
        pa.array(np.full(n, partition), pa.int32()),
    )
    return rows.set_column(
        rows.schema.get_field_index("source_offset"),
        "source_offset",
        pa.array(np.arange(first, first + n), pa.int64()),
    )


def live_files(lake: Lake, cycle: str | None = None) -> int:
    return len(lake.live_files(RATED, cycle))


def all_rated(lake: Lake) -> pa.Table:
    return pa.concat_tables([lake.read_rated(c) for c in lake.cycles()]).sort_by(KEY)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    return rated_template(tmp_path_factory.mktemp("template"))


@pytest.fixture
def streamed(tmp_path: Path, template: pa.Table) -> Lake:
    """A lake with 2 partitions x 30 streaming flushes of 50 records each, one cycle
    per partition (2026-11, 2026-12)."""
    lake = Lake(tmp_path / "lake")
    table = PartitionTable(lake)
    for partition in (0, 1):
        table.resume_offset(TOPIC, partition)
        for i in range(30):
            first = i * 50
            table.commit_range(
                TOPIC,
                partition,
                flush_rows(template, partition, first, 50, CYCLES[partition]),
                first,
                first + 49,
            )
    return lake


def data_files(root: Path) -> int:
    """Data files on disk under ``root/rated_calls`` (live or not; not the log)."""
    return len(list((root / RATED).glob("billing_cycle=*/*.parquet")))


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in root.rglob("*")} if root.exists() else {}


# ----------------------------------------------------------------------------- sizes
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("128MiB", 128 * 1024**2),
        ("128mib", 128 * 1024**2),
        ("1GB", 1000**3),
        ("1GiB", 1024**3),
        ("512MB", 512 * 1000**2),
        ("2097152", 2 * 1024**2),
        (" 64 MiB ", 64 * 1024**2),
    ],
)
def test_sizes_as_operators_type_them(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "is 0 B"),
        ("-5", "is not a size"),
        ("+5MiB", "is not a size"),
        ("abc", "is not a size"),
        ("", "is not a size"),
        ("1.5GiB", "is not a size"),
        ("128 MeB", "is not a size"),
        ("\uff11\uff12\uff18MiB", "is not a size"),  # full-width digits
        ("\u0661\u0662\u0668MiB", "is not a size"),  # Arabic-Indic digits
        ("1KiB", "give between 1 MiB and 16 GiB"),
        ("17GiB", "give between 1 MiB and 16 GiB"),
    ],
)
def test_bad_sizes_are_refused_naming_the_value(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_size(text, "--target-size")


@pytest.mark.parametrize("text", ["-1", "1.5", "abc", "", "\uff11\uff16\uff18", "168h"])
def test_bad_hours_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="not a whole number of hours"):
        parse_hours(text, "--retain-hours")


def test_compaction_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert CompactionSettings().enabled
    assert CompactionSettings().target_bytes == 128 * 1024**2
    monkeypatch.setenv("CDR_COMPACTION__INTERVAL_S", "0")
    monkeypatch.setenv("CDR_COMPACTION__TARGET_SIZE", "1GiB")
    s = load_settings().compaction
    assert not s.enabled
    assert s.target_bytes == 1024**3
    monkeypatch.setenv("CDR_COMPACTION__TARGET_SIZE", "-5")
    with pytest.raises(ConfigError, match="target_size"):
        load_settings()


# ----------------------------------------------------------------------------- compact
def test_compaction_keeps_every_row_once_and_the_offsets(
    streamed: Lake, template: pa.Table
) -> None:
    """R1 through compaction: the same rows, once each; the partitions' application
    transactions (exactly once) unchanged, and a member keeps committing after it."""
    lake = streamed
    before = all_rated(lake)
    cycles = lake.cycles()
    files = {c: live_files(lake, c) for c in cycles}
    assert sum(files.values()) >= 60

    done = compact_lake(lake, [RATED])

    assert [d.cycle for d in done] == cycles
    for d in done:
        assert d.version is not None
        assert d.cycle is not None
        assert d.files_before == files[d.cycle]
        assert d.files_after == live_files(lake, d.cycle) == 1
    after = all_rated(lake)
    assert after.num_rows == before.num_rows == 2 * 30 * 50
    assert after.equals(before)
    for partition in (0, 1):
        assert lake.resume_offset(TOPIC, partition) == 1500
        table = DeltaTable(lake.table_uri(RATED))
        assert table.transaction_version(partition_app_id(TOPIC, partition)) == 1499
    (last,) = DeltaTable(lake.table_uri(RATED)).history(1)
    assert last["cdr.operation"] == "compact"

    # the member goes on from the offset it held, as if nothing happened
    member = PartitionTable(lake)
    assert member.resume_offset(TOPIC, 0) == 1500
    member.commit_range(TOPIC, 0, flush_rows(template, 0, 1500, 50), 1500, 1549)
    assert lake.resume_offset(TOPIC, 0) == 1550
    assert all_rated(lake).num_rows == 3050


def test_compacting_again_has_nothing_to_do(streamed: Lake) -> None:
    compact_lake(streamed, [RATED])
    version = streamed.version(RATED)
    again = compact_lake(streamed, [RATED])
    assert all(d.version is None for d in again)
    assert streamed.version(RATED) == version


def test_min_files_leaves_a_partition_with_few_small_files(streamed: Lake) -> None:
    cycle = streamed.cycles()[0]
    n = live_files(streamed, cycle)
    untouched = compact_table(streamed, RATED, cycle=cycle, min_files=n + 1)
    assert untouched.version is None
    assert live_files(streamed, cycle) == n
    done = compact_table(streamed, RATED, cycle=cycle, min_files=n)
    assert done.version is not None
    assert live_files(streamed, cycle) == 1


def test_a_compaction_that_loses_its_race_is_started_again(
    streamed: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another compaction commits first: ours fails to commit (nothing of it lands),
    then starts again from the new version and finds nothing left; rows once each."""
    cycle = streamed.cycles()[0]
    rows = all_rated(streamed)
    real_open = handles.open_fresh
    stale = real_open(streamed, RATED)  # opened before the other compaction
    compact_table(streamed, RATED, cycle=cycle)  # the other member's
    opened: list[int] = []

    def open_stale_first(lake: Lake, name: str) -> DeltaTable | None:
        opened.append(1)
        return stale if len(opened) == 1 else real_open(lake, name)

    monkeypatch.setattr(compaction, "open_fresh", open_stale_first)
    ours = compact_table(streamed, RATED, cycle=cycle, backoff_s=0)
    assert ours.attempts == 2
    assert ours.version is None  # the other one did the work
    assert all_rated(streamed).equals(rows)


def test_two_compactions_from_the_same_version_cannot_both_commit(
    streamed: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fence is the application transaction ``compact:<table>:<cycle>`` in the
    compaction commit: a compaction that read the table before another one committed
    conflicts at commit time even when nothing else stops it (its handle is frozen at
    the old version here, so only Delta's concurrency check can catch it). Its new
    files are deleted; the second attempt finds nothing to do; rows once each (R1)."""
    cycle = CYCLES[0]
    rows = all_rated(streamed)
    root = streamed.location.path
    assert root is not None
    stale = handles.open_fresh(streamed, RATED)
    assert stale is not None
    stale.update_incremental = lambda: None  # type: ignore[method-assign]
    compact_table(streamed, RATED, cycle=cycle)  # the other member's
    on_disk = data_files(root)
    opened: list[int] = []
    real_open = handles.open_fresh

    def open_stale_first(lake: Lake, name: str) -> DeltaTable | None:
        opened.append(1)
        return stale if len(opened) == 1 else real_open(lake, name)

    monkeypatch.setattr(compaction, "open_fresh", open_stale_first)
    ours = compact_table(streamed, RATED, cycle=cycle, backoff_s=0)
    assert ours.attempts == 2
    assert ours.version is None
    assert all_rated(streamed).equals(rows)
    assert data_files(root) == on_disk  # the loser's file is gone


def test_deltalake_optimize_alone_would_duplicate_rows(tmp_path: Path, template: pa.Table) -> None:
    """Why compaction does not use ``DeltaTable.optimize.compact`` (deltalake 1.6):
    two optimizes that read the same version both commit, and the table then holds
    the rewritten rows twice. If this starts failing, deltalake fences concurrent
    optimizes again and the decision in docs/decisions.md can be revisited."""
    lake = Lake(tmp_path / "lake")
    for i in range(5):
        lake.write_rated(flush_rows(template, 0, i * 10, 10))
    first = DeltaTable(lake.table_uri(RATED))
    second = DeltaTable(lake.table_uri(RATED))
    first.optimize.compact()
    second.optimize.compact()
    assert DeltaTable(lake.table_uri(RATED)).to_pyarrow_dataset().count_rows() == 100  # not 50


def test_compacted_files_carry_exact_statistics(streamed: Lake) -> None:
    """Merged statistics: readers prune compacted files as they pruned the small ones
    (min of the minima, max of the maxima, exact decimals, summed counts)."""
    compact_lake(streamed, [RATED])
    actions = pa.table(DeltaTable(streamed.table_uri(RATED)).get_add_actions(flatten=True))
    for i, cycle in enumerate(actions.column("partition.billing_cycle").to_pylist()):
        rows = streamed.read_rated(cycle)
        assert actions.column("num_records")[i].as_py() == rows.num_rows
        for column in ("total_charge", "account_id", "source_offset"):
            assert actions.column(f"min.{column}")[i].as_py() == pc.min(rows.column(column)).as_py()
            assert actions.column(f"max.{column}")[i].as_py() == pc.max(rows.column(column)).as_py()
        low = pc.min(rows.column("start_time")).as_py()
        assert actions.column("min.start_time")[i].as_py() == low.replace(
            microsecond=low.microsecond // 1000 * 1000
        )
        assert actions.column("null_count.source_offset")[i].as_py() == 0
    # a pruning read gives the same rows as a full one
    first = streamed.read_rated(CYCLES[0])
    some = pc.min(first.column("start_time")).as_py()
    data = streamed.dataset(RATED)
    assert data is not None
    pruned = data.to_table(filter=pc.field("start_time") <= some)
    assert pruned.num_rows >= 1


def test_a_compaction_losing_every_race_gives_up_with_nothing_committed(
    streamed: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    cycle = streamed.cycles()[0]
    stale = [handles.open_fresh(streamed, RATED) for _ in range(3)]
    compact_table(streamed, RATED, cycle=cycle)
    version = streamed.version(RATED)
    monkeypatch.setattr(compaction, "open_fresh", lambda lake, name: stale.pop())
    with pytest.raises(compaction.CompactionConflict, match="lost 3 races"):
        compact_table(streamed, RATED, cycle=cycle, attempts=3, backoff_s=0)
    assert streamed.version(RATED) == version


def test_dead_letters_are_compacted_whole(tmp_path: Path) -> None:
    avro = tmp_path / "calls.avro"
    write_generated(avro, 1_000, seed=3, refdata_dir=SAMPLE_REFDATA_DIR)
    lake = Lake(tmp_path / "lake")
    ref, tariffs = load_reference_dir(SAMPLE_REFDATA_DIR), load_tariff_dir(DEFAULT_TARIFFS_DIR)
    rate_files([avro], lake, ref, tariffs)
    dead = lake.read_dead_letters()
    assert dead.num_rows > 0
    for _ in range(4):
        lake.write_dead_letters(dead)
    assert len(lake.live_files(DEAD)) >= 5
    (done,) = compact_lake(lake, [DEAD])
    assert done.cycle is None
    assert len(lake.live_files(DEAD)) == 1
    assert lake.read_dead_letters().num_rows == 5 * dead.num_rows
    with pytest.raises(ConfigError, match="not partitioned"):
        compact_table(lake, DEAD, cycle="2026-01")


# ----------------------------------------------------------------------------- vacuum
def test_vacuum_removes_what_compaction_replaced(streamed: Lake) -> None:
    root = streamed.location.path
    assert root is not None
    on_disk = data_files(root)
    compact_lake(streamed, [RATED])
    rows = all_rated(streamed)
    assert data_files(root) > on_disk  # replaced files stay

    kept = vacuum_lake(streamed, 168)  # nothing is a week old
    assert [v.files for v in kept if v.table == RATED] == [[]]
    listed = vacuum_lake(streamed, 0, force=True, dry_run=True)
    (rated,) = [v for v in listed if v.table == RATED]
    assert len(rated.files) == on_disk
    assert data_files(root) == on_disk + len(streamed.cycles())

    done = vacuum_lake(streamed, 0, force=True)
    (rated,) = [v for v in done if v.table == RATED]
    assert len(rated.files) == on_disk
    assert data_files(root) == live_files(streamed)
    assert all_rated(streamed).equals(rows)
    assert list((root / RATED / "_delta_log").glob("*.checkpoint.parquet"))


def test_vacuum_full_removes_files_no_commit_listed(streamed: Lake) -> None:
    root = streamed.location.path
    assert root is not None
    cycle = streamed.cycles()[0]
    orphan = root / RATED / f"billing_cycle={cycle}" / "part-orphan-of-a-killed-writer.parquet"
    orphan.write_bytes(b"PAR1")
    assert vacuum_lake(streamed, 0, force=True)[0].files == []
    assert orphan.exists()
    with pytest.raises(ConfigError, match="--full"):
        vacuum_lake(streamed, 0, force=True, full=True)
    assert orphan.exists()


@pytest.mark.parametrize(
    ("hours", "force", "full", "message"),
    [
        (24, False, False, "below the safe minimum of 168 hours"),
        (167, False, True, "below the safe minimum of 168 hours"),
        (0, True, True, "running writer"),
    ],
)
def test_short_retentions_are_refused(
    streamed: Lake, hours: int, force: bool, full: bool, message: str
) -> None:
    compact_lake(streamed, [RATED])
    root = streamed.location.path
    assert root is not None
    before = _snapshot(root)
    with pytest.raises(ConfigError, match=message):
        vacuum_lake(streamed, hours, force=force, full=full)
    assert _snapshot(root) == before


# ----------------------------------------------------------------------------- CLI
def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(argv)
    out = capsys.readouterr()
    return rc, " ".join((out.out + out.err).split())


def test_cli_compact_and_vacuum(streamed: Lake, capsys: pytest.CaptureFixture[str]) -> None:
    cycle = streamed.cycles()[0]
    rc, out = _cli(["lake", "compact", "--lake", streamed.uri, "--cycle", cycle], capsys)
    assert rc == 0, out
    assert f"compacted rated_calls billing_cycle={cycle}" in out
    assert live_files(streamed, cycle) == 1
    assert live_files(streamed) > 1  # the other cycle untouched
    rc, out = _cli(["lake", "compact", "--lake", streamed.uri, "--target-size", "64MiB"], capsys)
    assert rc == 0, out
    assert live_files(streamed) == len(streamed.cycles())
    rc, out = _cli(
        ["lake", "vacuum", "--lake", streamed.uri, "--retain-hours", "0", "--force", "--dry-run"],
        capsys,
    )
    assert rc == 0, out
    assert "rated_calls: would remove" in out
    rc, out = _cli(["lake", "vacuum", "--lake", streamed.uri, "--retain-hours", "168"], capsys)
    assert rc == 0, out
    assert "rated_calls: removed 0 unreferenced files" in out


def test_cli_compact_takes_the_lake_from_the_settings(
    streamed: Lake, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CDR_OUTPUT", streamed.uri)
    rc, out = _cli(["lake", "compact"], capsys)
    assert rc == 0, out
    assert live_files(streamed) == len(streamed.cycles())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compact", "--lake", "{missing}"], "does not exist"),
        (["compact", "--lake", "{lake}", "--cycle", "2026-13"], "is not a billing cycle"),
        (["compact", "--lake", "{lake}", "--cycle", "\uff12\uff10\uff12\uff16-01"], "is not a billing cycle"),
        (["compact", "--lake", "{lake}", "--cycle", "1999-01"], "has no rated calls"),
        (["compact", "--lake", "{lake}", "--table", "dead_letters", "--cycle", "2026-01"], "not partitioned"),
        (["compact", "--lake", "{lake}", "--target-size", "128MiB "], None),
        (["compact", "--lake", "{lake}", "--target-size", "0"], "is 0 B"),
        (["compact", "--lake", "{lake}", "--target-size", "-5"], "is not a size"),
        (["compact", "--lake", "{lake}", "--target-size", "abc"], "is not a size"),
        (["compact", "--lake", "{lake}", "--target-size", "\uff11\uff12\uff18MiB"], "is not a size"),
        (["compact", "--lake", "s3://"], "names no bucket"),
        (["vacuum", "--lake", "{missing}", "--retain-hours", "168"], "does not exist"),
        (["vacuum", "--lake", "{lake}", "--retain-hours", "24"], "safe minimum of 168 hours"),
        (["vacuum", "--lake", "{lake}", "--retain-hours", "-5"], "not a whole number"),
        (["vacuum", "--lake", "{lake}", "--retain-hours", "abc"], "not a whole number"),
        (["vacuum", "--lake", "{lake}", "--retain-hours", "\uff11\uff16\uff18"], "not a whole number"),
        (["vacuum", "--lake", "{lake}", "--retain-hours", "0", "--force", "--full"], "running writer"),
    ],
)  # fmt: skip
def test_cli_refusals_exit_2_and_write_nothing(
    streamed: Lake,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str | None,
) -> None:
    root = streamed.location.path
    assert root is not None
    argv = ["lake", *(a.format(lake=root, missing=tmp_path / "nope") for a in args)]
    if message is None:  # surrounding blanks are fine
        assert main(argv) == 0
        return
    before = _snapshot(tmp_path)
    rc, out = _cli(argv, capsys)
    assert rc == 2, out
    assert "refused:" in out
    assert message in out
    assert "Traceback" not in out
    assert _snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- scheduled
def _flush(template: pa.Table, partition: int, first: int, n: int) -> Flush:
    return Flush(TOPIC, partition, first, first + n - 1, flush_rows(template, partition, first, n),
                 pa.table({}), np.zeros(n, np.int64))  # fmt: skip


def test_the_recorder_notes_the_cycles_of_each_commit(tmp_path: Path, template: pa.Table) -> None:
    recorder = CycleRecorder(PartitionTable(Lake(tmp_path / "lake")))
    assert recorder.resume_offset(TOPIC, 0) is None
    marks: list[str] = []
    assert recorder.commit(_flush(template, 0, 0, 100), marks.append) == 1
    assert marks == ["committed"]
    cycles = set(pc.unique(template.slice(0, 100).column("billing_cycle")).to_pylist())
    assert recorder.take() == cycles
    assert recorder.take() == set()


def test_a_scheduled_round_compacts_the_cycles_written(
    tmp_path: Path, template: pa.Table, caplog: pytest.LogCaptureFixture
) -> None:
    lake = Lake(tmp_path / "lake")
    recorder = CycleRecorder(PartitionTable(lake))
    recorder.resume_offset(TOPIC, 0)
    for i in range(12):
        recorder.commit(_flush(template, 0, i * 40, 40), lambda _: None)
    registry = CollectorRegistry()
    settings = CompactionSettings(interval_s=3600, min_files=5)
    scheduled = ScheduledCompaction(
        Lake(lake.uri), settings, recorder, threading.Event(), CompactionMetrics(registry)
    )
    rows = all_rated(lake)
    with caplog.at_level(logging.INFO, logger="pipeline.runtime.compaction"):
        done = scheduled.round()
    compacted = [d for d in done if d.version is not None]
    assert compacted
    for d in compacted:
        assert live_files(lake, d.cycle) == 1
    assert all_rated(lake).equals(rows)
    assert registry.get_sample_value("cdr_compactions_total", {"outcome": "compacted"}) == len(
        compacted
    )
    assert registry.get_sample_value("cdr_compaction_files_removed_total") == sum(
        d.removed for d in compacted
    )
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("compacted"))
    assert "files_before=" in line
    assert "files_after=1" in line
    assert "seconds=" in line
    assert scheduled.round() == []  # nothing written since


def test_the_scheduled_thread_runs_on_its_interval_and_stops(
    tmp_path: Path, template: pa.Table
) -> None:
    lake = Lake(tmp_path / "lake")
    recorder = CycleRecorder(PartitionTable(lake))
    recorder.resume_offset(TOPIC, 0)
    stopping = threading.Event()
    scheduled = ScheduledCompaction(
        Lake(lake.uri),
        CompactionSettings(interval_s=0.2, min_files=2),
        recorder,
        stopping,
        CompactionMetrics(),
    )
    scheduled.start()
    try:
        for i in range(10):
            recorder.commit(_flush(template, 0, i * 40, 40), lambda _: None)
        deadline = time.monotonic() + 30
        while not any(d.version for d in scheduled.done) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(d.version for d in scheduled.done)
    finally:
        stopping.set()
        scheduled.join(30)
    assert not scheduled.is_alive()
    assert all_rated(lake).num_rows == 400


def test_compaction_is_off_with_interval_zero() -> None:
    assert not CompactionSettings(interval_s=0).enabled
    with pytest.raises(ValueError, match="greater than or equal to 2"):
        CompactionSettings(min_files=1)
    assert LakeSettings.model_construct()  # the lake section is untouched
