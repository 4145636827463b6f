"""Compaction while the lake is in use: members keep committing, readers keep
counting, on a local lake and on an S3 lake (SeaweedFS on loopback, no mocks).

What is checked, throughout:

* every read sees exactly the rows committed up to the version it read: count(*) at
  version v == the rows of the writers' commits up to v (a compaction adds none), and
  no (partition, offset) twice (R1: each event one rated record, never two);
* the writers' commits never fail because of a compaction, and the partitions'
  application transactions (exactly once) end at the last offsets written;
* two compactions running at once (a member's and the CronJob's) do not duplicate;
* the file count drops.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pytest
from deltalake import DeltaTable

from pipeline.cli import main
from pipeline.embedded import EmbeddedKafka, EmbeddedRedis
from pipeline.lake.compaction import compact_table
from pipeline.lake.lake import Lake, partition_app_id
from pipeline.lake.partitions import PartitionTable
from pipeline.lake.tables import RATED
from pipeline.streaming import produce_files
from tests.integration.object_store import ObjectStore
from tests.integration.streaming import (
    ServiceThread,
    lake_rated,
    load_sample_refdata,
    settings_for,
    unique,
)
from tests.unit.test_lake_maintenance import flush_rows, rated_template

pytestmark = pytest.mark.integration

TOPIC = "calls"
ROWS_PER_FLUSH = 40


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    return rated_template(tmp_path_factory.mktemp("template"))


@dataclass(eq=False)
class Writer(threading.Thread):
    """A streaming member's commits: one flush per partition in turn, forever."""

    lake: Lake
    template: pa.Table
    partitions: tuple[int, ...] = (0, 1)
    stop: threading.Event = field(default_factory=threading.Event)
    next_offset: dict[int, int] = field(default_factory=dict)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        super().__init__(daemon=True)

    def run(self) -> None:
        table = PartitionTable(self.lake)
        try:
            for p in self.partitions:
                self.next_offset[p] = table.resume_offset(TOPIC, p) or 0
            while not self.stop.is_set():
                for p in self.partitions:
                    first = self.next_offset[p]
                    rows = flush_rows(self.template, p, first, ROWS_PER_FLUSH)
                    last = first + ROWS_PER_FLUSH - 1
                    table.commit_range(TOPIC, p, rows, first, last)
                    self.next_offset[p] = last + 1
        except BaseException as exc:  # surfaced by the test
            self.error = exc


@dataclass(eq=False)
class Reader(threading.Thread):
    """Counts the rows of the table at its latest version, again and again."""

    uri: str
    options: dict[str, str]
    filesystem: object
    stop: threading.Event = field(default_factory=threading.Event)
    seen: list[tuple[int, int, int]] = field(default_factory=list)  # version, rows, distinct
    error: BaseException | None = None

    def __post_init__(self) -> None:
        super().__init__(daemon=True)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                table = DeltaTable(self.uri, storage_options=self.options)
                version = table.version()
                data = table.to_pyarrow_dataset(filesystem=self.filesystem)
                keys = data.to_table(columns=["source_partition", "source_offset"])
                distinct = keys.group_by(["source_partition", "source_offset"]).aggregate([])
                self.seen.append((version, keys.num_rows, distinct.num_rows))
        except BaseException as exc:
            self.error = exc


def rows_per_version(lake: Lake) -> dict[int, int]:
    """Rows each commit of ``rated_calls`` added (compactions: 0), from its history."""
    table = DeltaTable(lake.table_uri(RATED), storage_options=lake.storage.delta_options())
    out = {}
    for commit in table.history():
        metrics = commit.get("operationMetrics") or {}
        added = 0 if commit.get("cdr.operation") == "compact" else metrics.get("num_added_rows", 0)
        out[int(commit["version"])] = int(added)
    return out


@pytest.fixture(params=["local", "s3"])
def lake(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Lake]:
    if request.param == "local":
        yield Lake(tmp_path / "lake")
        return
    store: ObjectStore = request.getfixturevalue("object_store")
    for name, value in store.env().items():
        monkeypatch.setenv(name, value)
    yield Lake(f"s3://{store.bucket}/compact-{uuid.uuid4().hex[:8]}/lake", store.settings())


def _compact_cli(lake: Lake, *extra: str) -> int:
    return main(["lake", "compact", "--lake", lake.uri, "--table", "rated_calls", *extra])


def test_readers_see_every_row_once_while_compaction_runs_beside_writers(
    lake: Lake, template: pa.Table
) -> None:
    """Two writers (four partitions) commit without pause; a reader counts the table
    at every version it can; `lake compact` runs three times meanwhile, twice of them
    at the same moment (a member's and the CronJob's)."""
    lake.create_tables()
    writers = [Writer(Lake(lake.uri, lake.storage.settings), template, (0, 1)),
               Writer(Lake(lake.uri, lake.storage.settings), template, (2, 3))]  # fmt: skip
    for w in writers:
        w.start()
    deadline = time.monotonic() + 60
    while len(lake.live_files(RATED)) < 40 and time.monotonic() < deadline:
        time.sleep(0.1)
    reader = Reader(
        lake.table_uri(RATED), lake.storage.delta_options(), lake.storage.subtree(RATED)
    )
    reader.start()
    try:
        before = len(lake.live_files(RATED))
        assert _compact_cli(lake) == 0
        # two at once: one of them loses the race or finds nothing left, never both commit
        results: list[int] = []
        twins = [
            threading.Thread(target=lambda: results.append(_compact_cli(lake))) for _ in range(2)
        ]
        for t in twins:
            t.start()
        for t in twins:
            t.join(120)
        assert results == [0, 0]
        time.sleep(0.5)
    finally:
        for w in writers:
            w.stop.set()
        for w in writers:
            w.join(60)
        reader.stop.set()
        reader.join(60)
    for w in writers:
        assert w.error is None, w.error
    assert reader.error is None, reader.error

    # after the writers stopped: compact once more, everything is in few files
    assert _compact_cli(lake) == 0
    after = len(lake.live_files(RATED))
    assert after < before / 10, (before, after)

    added = rows_per_version(lake)
    total = {v: sum(n for w, n in added.items() if w <= v) for v in added}
    assert reader.seen, "the reader never read"
    versions = {v for v, _, _ in reader.seen}
    first_compaction = min(v for v, n in added.items() if n == 0 and v > 0)
    assert min(versions) < first_compaction < max(versions), (
        "the reader did not read before and after a compaction"
    )
    for version, rows, distinct in reader.seen:
        assert rows == total[version], f"version {version}: {rows} rows, committed {total[version]}"
        assert distinct == rows, f"version {version}: a row seen twice"

    final = lake_rated_any(lake)
    written = sum(o for w in writers for o in w.next_offset.values())
    assert final.num_rows == written
    assert final.group_by(["source_partition", "source_offset"]).aggregate([]).num_rows == written
    for w in writers:
        for p, nxt in w.next_offset.items():
            assert lake.transaction_version(RATED, partition_app_id(TOPIC, p)) == nxt - 1

    # vacuum: the replaced files go, the live ones and every row stay
    assert _data_files(lake) > after
    assert main(["lake", "vacuum", "--lake", lake.uri, "--retain-hours", "0", "--force"]) == 0
    assert _data_files(lake) == len(lake.live_files(RATED)) == after
    assert lake_rated_any(lake).num_rows == written


def _data_files(lake: Lake) -> int:
    """Parquet data files stored under the table (live or not; not the log)."""
    fs = lake.storage.filesystem
    found = fs.get_file_info(pafs.FileSelector(lake.location.key(RATED), recursive=True))
    return sum(
        1
        for info in found
        if info.type == pafs.FileType.File
        and info.path.endswith(".parquet")
        and "/_delta_log/" not in info.path
    )


def lake_rated_any(lake: Lake) -> pa.Table:
    return pa.concat_tables([lake.read_rated(c) for c in lake.cycles()])


def test_a_compaction_in_progress_never_fails_a_members_commit(
    tmp_path: Path, template: pa.Table
) -> None:
    """A compaction is slow (many files); the member commits throughout it, and the
    compaction lands after them: neither fails, nothing is lost or doubled."""
    lake = Lake(tmp_path / "lake")
    member = PartitionTable(lake)
    member.resume_offset(TOPIC, 0)
    for i in range(300):
        member.commit_range(TOPIC, 0, flush_rows(template, 0, i * 10, 10), i * 10, i * 10 + 9)
    done: list[object] = []
    compactor = threading.Thread(
        target=lambda: done.append(compact_table(Lake(lake.uri), RATED, cycle=lake.cycles()[0]))
    )
    compactor.start()
    offset = 3000
    while compactor.is_alive():
        member.commit_range(TOPIC, 0, flush_rows(template, 0, offset, 10), offset, offset + 9)
        offset += 10
    compactor.join()
    (result,) = done
    assert getattr(result, "version", None) is not None
    assert getattr(result, "attempts", None) == 1
    assert offset > 3000, "no commit happened during the compaction"
    rows = lake_rated_any(lake)
    assert rows.num_rows == offset
    assert pc.count_distinct(rows.column("source_offset")).as_py() == offset
    assert lake.resume_offset(TOPIC, 0) == offset


def test_the_service_compacts_on_its_own_schedule(
    kafka_broker: EmbeddedKafka, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """A real member (broker, Redis) with compaction every second: the cycles it writes
    are compacted while it runs; every event once (R1); the metric counts it."""
    from pipeline.generate import write_generated
    from pipeline.refdata.files import SAMPLE_REFDATA_DIR
    from pipeline.settings import KafkaSettings

    traffic = tmp_path / "traffic.avro"
    write_generated(traffic, 6_000, seed=17, refdata_dir=SAMPLE_REFDATA_DIR)
    load_sample_refdata(redis_server.url)
    topic = unique("compact")
    settings = settings_for(
        kafka_broker.bootstrap,
        redis_server.url,
        tmp_path / "lake",
        topic,
        batch={"max_rows": 200, "max_age_s": 0.2},
        compaction={"interval_s": 1.0, "min_files": 3},
        stop_when_idle=None,
    )
    worker = ServiceThread(settings)
    worker.start()
    produced = produce_files([traffic], KafkaSettings(brokers=kafka_broker.bootstrap), topic)
    registry = worker.service.metrics.registry
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        stats = worker.service.stats
        compacted = registry.get_sample_value("cdr_compactions_total", {"outcome": "compacted"})
        if stats.consumed == produced.events and compacted:
            break
        time.sleep(0.2)
    stats = worker.stop()
    assert stats.consumed == produced.events
    assert registry.get_sample_value("cdr_compactions_total", {"outcome": "compacted"})
    rated = lake_rated(tmp_path / "lake")
    assert rated.num_rows == stats.rated
    keys = rated.group_by(["source_partition", "source_offset"]).aggregate([])
    assert keys.num_rows == rated.num_rows  # no event twice
    cycles = Lake(tmp_path / "lake").cycles()
    assert len(Lake(tmp_path / "lake").live_files(RATED)) < stats.files
    assert cycles
