"""The lake package: locations, storage options, Delta tables, exactly once through
application transactions (batch re-runs, streaming fencing) and the readers."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from pipeline.batch import file_digest, rate_app_ids, rate_files
from pipeline.errors import ConfigError, FencedError, InfrastructureError
from pipeline.generate import write_generated
from pipeline.lake.lake import Lake, partition_app_id
from pipeline.lake.location import parse_location
from pipeline.lake.storage import Storage, describe_error
from pipeline.lake.tables import DEAD, INVOICES, RATED
from pipeline.rating.columns import INVOICE_LINE_SCHEMA, RATED_SCHEMA
from pipeline.refdata.files import SAMPLE_REFDATA_DIR, load_reference_dir
from pipeline.settings import LakeSettings, load_settings
from pipeline.tariff_files import DEFAULT_TARIFFS_DIR, load_tariff_dir

REF = load_reference_dir(SAMPLE_REFDATA_DIR)
TARIFFS = load_tariff_dir(DEFAULT_TARIFFS_DIR)
ORDER = [("source_file", "ascending"), ("source_index", "ascending")]


# ----------------------------------------------------------------------------- locations
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("s3://", "names no bucket"),
        ("s3:///prefix", "names no bucket"),
        ("s3://Bucket/x", "is not an S3 bucket name"),
        ("s3://b/x", "is not an S3 bucket name"),  # too short
        ("s3://bücket/x", "is not an S3 bucket name"),  # odd Unicode in the bucket
        ("s3://bucket\u200b/x", "is not an S3 bucket name"),  # zero-width space
        ("s3://bucket/a//b", "empty, '.' or '..' segment"),
        ("s3://bucket/a/../b", "empty, '.' or '..' segment"),
        ("s3://bucket/a?versionId=1", "which S3 URIs cannot carry"),
        ("lake\nrm -rf", "control character"),
        ("lake\x00", "control character"),
        ("gs://bucket/x", "gs:// is not supported"),
        ("s3a://bucket/x", "s3a:// is not supported"),
        ("http://127.0.0.1:9000/bucket", "http:// is not supported"),
        ("file://otherhost/lake", "must be local"),
    ],
)
def test_bad_locations_are_refused_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace(".", r"\.")):
        parse_location(text)


def test_good_locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = parse_location("s3://my-bucket.data/carrier/lake/")
    assert (s3.bucket, s3.prefix, s3.uri) == ("my-bucket.data", "carrier/lake", s3.uri)
    assert s3.uri == "s3://my-bucket.data/carrier/lake"
    assert s3.child("rated_calls") == "s3://my-bucket.data/carrier/lake/rated_calls"
    assert (
        s3.key("dead_letter_payloads/x.bin")
        == "my-bucket.data/carrier/lake/dead_letter_payloads/x.bin"
    )
    assert parse_location("s3://my-bucket").uri == "s3://my-bucket"
    assert parse_location("s3://my-bucket/größe/2026").prefix == "größe/2026"  # UTF-8 keys
    monkeypatch.chdir(tmp_path)
    relative = parse_location("lake")
    assert relative.path == tmp_path / "lake"  # absolute: workers may run elsewhere
    assert parse_location("file:///srv/lake%20one").path == Path("/srv/lake one")
    assert parse_location("file://localhost/srv/lake").path == Path("/srv/lake")
    assert parse_location(Path("données")).path == tmp_path / "données"


def test_settings_output_is_a_checked_location() -> None:
    assert load_settings(output="s3://my-bucket/lake").output == "s3://my-bucket/lake"
    with pytest.raises(ConfigError, match="names no bucket"):
        load_settings(output="s3://")


# ----------------------------------------------------------------------------- storage
def test_storage_options_for_an_s3_compatible_store() -> None:
    settings = LakeSettings(
        s3_endpoint="http://127.0.0.1:8333/",
        s3_access_key_id="AKIDEXAMPLE",
        s3_secret_access_key="s3cr3t-value",
        s3_session_token="t0ken-value",
    )
    storage = Storage.for_location(parse_location("s3://bucket-a/lake"), settings)
    options = storage.delta_options()
    assert options["conditional_put"] == "etag"  # safe concurrent commits
    assert options["AWS_ALLOW_HTTP"] == "true"
    assert options["AWS_ENDPOINT_URL"] == "http://127.0.0.1:8333"
    assert options["AWS_REGION"] == "us-east-1"
    assert options["AWS_SECRET_ACCESS_KEY"] == "s3cr3t-value"
    assert options["AWS_SESSION_TOKEN"] == "t0ken-value"
    assert "s3cr3t" not in repr(storage) + repr(settings) + str(settings)
    local = Storage.for_location(parse_location("/tmp/lake"), settings)
    assert local.delta_options() == {}


def test_lake_settings_fall_back_to_the_aws_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CDR_LAKE__S3_ACCESS_KEY_ID",
        "CDR_LAKE__S3_SECRET_ACCESS_KEY",
        "CDR_LAKE__S3_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-token")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://s3.example.net")
    lake = load_settings().lake
    assert lake.s3_access_key_id == "AKIDENV"
    assert lake.s3_secret_access_key is not None
    assert lake.s3_secret_access_key.get_secret_value() == "env-secret"
    assert lake.s3_region == "eu-west-3"
    assert lake.s3_endpoint == "https://s3.example.net"
    # our own settings win, and the AWS token never pairs with another key
    monkeypatch.setenv("CDR_LAKE__S3_ACCESS_KEY_ID", "AKIDCDR")
    monkeypatch.setenv("CDR_LAKE__S3_SECRET_ACCESS_KEY", "cdr-secret")
    mine = load_settings().lake
    assert mine.s3_access_key_id == "AKIDCDR"
    assert mine.s3_session_token is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"s3_access_key_id": "AKID"}, "go together"),
        ({"s3_endpoint": "ftp://host"}, "must be http"),
        ({"s3_endpoint": "http://user:pw@host"}, "must not carry credentials"),
        ({"s3_endpoint": "http://host:99999"}, "invalid port"),
        ({"s3_endpoint": "http://host:1", "s3_allow_http": False}, "s3_allow_http is false"),
    ],
)
def test_bad_lake_settings_are_refused(
    fields: dict[str, object], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match=message):
        load_settings(lake=fields)


def test_errors_from_the_store_never_carry_the_secret() -> None:
    settings = LakeSettings(s3_access_key_id="AKID", s3_secret_access_key="hunter2-secret")
    storage = Storage.for_location(parse_location("s3://bucket-a/lake"), settings)
    denied = describe_error(
        OSError("403 Forbidden signing with hunter2-secret"), storage, "reading"
    )
    assert isinstance(denied, ConfigError)
    assert "hunter2" not in str(denied)
    other = describe_error(OSError("connection reset, key hunter2-secret"), storage, "reading")
    assert "hunter2" not in str(other)
    assert "***" in str(other)


# ----------------------------------------------------------------------------- tables
@pytest.fixture(scope="module")
def avro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("avro") / "calls.avro"
    write_generated(path, 3_000, seed=7, refdata_dir=SAMPLE_REFDATA_DIR)
    return path


def _rated(lake: Lake) -> pa.Table:
    return pa.concat_tables([lake.read_rated(c) for c in lake.cycles()]).sort_by(ORDER)


def test_tables_are_delta_tables_with_exact_types(avro: Path, tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    rate_files([avro], lake, REF, TARIFFS, batch_size=1_000)
    table = DeltaTable(str(tmp_path / "lake" / RATED))
    assert table.metadata().partition_columns == ["billing_cycle"]
    assert DeltaTable(str(tmp_path / "lake" / DEAD)).metadata().partition_columns == []
    schema = _rated(lake).schema
    assert schema.field("total_charge").type == pa.decimal128(18, 6)
    assert schema.field("start_time").type == pa.timestamp("us", tz="UTC")
    # the partition column is not repeated inside the data files (Spark, Trino)
    some = tmp_path / "lake" / RATED / lake.live_files(RATED)[0]
    assert "billing_cycle" not in pq.read_schema(some).names


def test_a_rerun_skips_what_the_tables_hold(avro: Path, tmp_path: Path) -> None:
    """Application transactions: the same file again (even with another batch size)
    commits nothing; R1 every record once."""
    lake = Lake(tmp_path / "lake")
    first = rate_files([avro], lake, REF, TARIFFS, batch_size=1_000)
    assert first.events == 3_000 == first.rated + first.dead_letters
    versions = (lake.version(RATED), lake.version(DEAD))
    app, size_app = rate_app_ids(file_digest(avro))
    assert lake.transaction_version(RATED, app) == 3
    assert lake.transaction_version(RATED, size_app) == 1_000
    again = rate_files([avro], lake, REF, TARIFFS, batch_size=700)
    assert again.skipped == 3_000
    assert again.events == 0
    assert (lake.version(RATED), lake.version(DEAD)) == versions
    assert _rated(lake).num_rows == first.rated


def test_a_rerun_completes_each_table_on_its_own(
    avro: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dead-letter commit of the second chunk fails after its rated commit: a re-run
    commits the missing dead letters and the later chunks, nothing twice. (Failed
    before the fix: the writer thread still committed chunk 3's dead letters after
    chunk 2's failed, so the re-run skipped chunk 2's.)"""
    clean = Lake(tmp_path / "clean")
    rate_files([avro], clean, REF, TARIFFS, batch_size=1_000)
    lake = Lake(tmp_path / "lake")
    original = Lake.append
    seen = {"dead": 0}

    def failing(self: Lake, name: str, rows: pa.Table, transactions: object = ()) -> int | None:
        if name == DEAD:
            seen["dead"] += 1
            if seen["dead"] == 2:
                raise OSError("disk full")
        return original(self, name, rows, transactions)  # type: ignore[arg-type]

    monkeypatch.setattr(Lake, "append", failing)
    with pytest.raises(OSError, match="disk full"):
        rate_files([avro], lake, REF, TARIFFS, batch_size=1_000)
    monkeypatch.setattr(Lake, "append", original)
    rate_files([avro], lake, REF, TARIFFS, batch_size=300)  # the first run's chunks are used
    assert _rated(lake).equals(_rated(clean))
    assert lake.read_dead_letters().sort_by(ORDER).equals(clean.read_dead_letters().sort_by(ORDER))


def test_invoice_lines_replace_one_cycle_only(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")

    def lines(cycle: str, amount: str) -> pa.Table:
        from decimal import Decimal

        row = {"account_id": "A", "billing_cycle": cycle, "line_type": "USAGE", "trunk_id": None,
               "quantity": Decimal(1), "unit": "call", "unit_price": None,
               "amount": Decimal(amount), "tariff_id": "t", "tariff_version": "1"}  # fmt: skip
        return pa.Table.from_pylist(
            [row | {"account_id": a} for a in "AB"], schema=INVOICE_LINE_SCHEMA
        )

    lake.write_invoice_lines(lines("2026-10", "1.00"), "2026-10")
    lake.write_invoice_lines(lines("2026-11", "2.00"), "2026-11")
    lake.write_invoice_lines(lines("2026-11", "3.00"), "2026-11")
    assert [str(a) for a in lake.read_invoice_lines("2026-11").column("amount").to_pylist()] == [
        "3.00",
        "3.00",
    ]
    assert {str(a) for a in lake.read_invoice_lines("2026-10").column("amount").to_pylist()} == {
        "1.00"
    }
    assert len(lake.live_files(INVOICES, "2026-11")) == 1
    with pytest.raises(ConfigError, match="not a billing cycle"):
        lake.write_invoice_lines(lines("2026-11", "1.00"), "2026-11' OR '1'='1")


def test_an_old_plain_parquet_lake_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "lake" / RATED / "billing_cycle=2026-11"
    old.mkdir(parents=True)
    pq.write_table(RATED_SCHEMA.empty_table().drop_columns(["billing_cycle"]), old / "p.parquet")
    with pytest.raises(ConfigError, match="lake convert"):
        Lake(tmp_path / "lake").require_existing()
    with pytest.raises(ConfigError, match="lake convert"):
        Lake(tmp_path / "lake").check_writable()


# ----------------------------------------------------------------------------- streaming
def _rows(n: int, offset: int, template: pa.Table) -> pa.Table:
    rows = template.slice(0, n)
    return rows.set_column(
        rows.schema.get_field_index("source_offset"),
        "source_offset",
        pa.array(range(offset, offset + n), pa.int64()),
    )


@pytest.fixture(scope="module")
def template(avro: Path, tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    lake = Lake(tmp_path_factory.mktemp("template"))
    rate_files([avro], lake, REF, TARIFFS)
    return _rated(lake).slice(0, 10)


def test_commit_partition_records_the_offset_in_the_same_commit(
    tmp_path: Path, template: pa.Table
) -> None:
    lake = Lake(tmp_path / "lake")
    assert lake.resume_offset("calls", 0) is None
    version = lake.commit_partition("calls", 0, _rows(3, 0, template), 0, 4, expected=None)
    assert lake.resume_offset("calls", 0) == 5
    assert lake.resume_offset("calls", 1) is None
    table = DeltaTable(str(tmp_path / "lake" / RATED))
    assert table.version() == version
    assert table.transaction_version(partition_app_id("calls", 0)) == 4
    # a range of dead letters only: no rows, the offset still advances
    lake.commit_partition("calls", 0, template.slice(0, 0), 5, 9, expected=4)
    assert lake.resume_offset("calls", 0) == 10
    assert sum(lake.read_rated(c).num_rows for c in lake.cycles()) == 3


def test_a_stale_member_is_fenced(tmp_path: Path, template: pa.Table) -> None:
    """A member that expects an older offset (another member committed since: it was
    paused past its session) is refused, nothing written."""
    lake, zombie = Lake(tmp_path / "lake"), Lake(tmp_path / "lake")
    lake.commit_partition("calls", 0, _rows(2, 0, template), 0, 9, expected=None)
    zombie_expects = 9
    lake.commit_partition("calls", 0, _rows(2, 10, template), 10, 19, expected=9)
    before = lake.version(RATED)
    with pytest.raises(FencedError, match="holds offset=19"):
        zombie.commit_partition("calls", 0, _rows(2, 10, template), 10, 19, expected=zombie_expects)
    with pytest.raises(FencedError):  # a fresh member that thinks nothing was committed
        Lake(tmp_path / "lake").commit_partition(
            "calls", 0, _rows(1, 0, template), 0, 0, expected=None
        )
    assert lake.version(RATED) == before
    assert not issubclass(FencedError, InfrastructureError)  # never retried


def test_a_gap_is_fenced(tmp_path: Path, template: pa.Table) -> None:
    """Expecting an offset the table does not hold (a gap) is refused too."""
    lake = Lake(tmp_path / "lake")
    lake.commit_partition("calls", 3, _rows(1, 0, template), 0, 4, expected=None)
    with pytest.raises(FencedError):
        lake.commit_partition("calls", 3, _rows(1, 8, template), 8, 9, expected=7)
    with pytest.raises(ValueError, match="bad range"):
        lake.commit_partition("calls", 3, _rows(1, 3, template), 3, 9, expected=4)


def test_concurrent_commits_of_one_partition_fence_the_loser(
    tmp_path: Path, template: pa.Table
) -> None:
    """Two handles read the table at the same version; the second commit of the same
    application id conflicts (Delta's concurrency check) and becomes FencedError."""
    lake = Lake(tmp_path / "lake")
    lake.commit_partition("calls", 0, _rows(1, 0, template), 0, 0, expected=None)
    loser = Lake(tmp_path / "lake")
    stale = loser._open(RATED, create=False)  # the loser's handle, read now
    assert stale is not None
    lake.commit_partition("calls", 0, _rows(1, 1, template), 1, 1, expected=0)

    # the loser checked the offset (0) before the winner committed: simulate by
    # freezing its handle at that version
    stale_version = stale.version()
    stale.update_incremental = lambda: None  # type: ignore[method-assign]
    assert stale.version() == stale_version
    with pytest.raises(FencedError, match="concurrently"):
        loser.commit_partition("calls", 0, _rows(1, 1, template), 1, 1, expected=0)
    # another partition's commit at the same time is not a conflict (appends retry)
    other = DeltaTable(str(tmp_path / "lake" / RATED), version=stale_version)
    write_deltalake(
        other,
        _rows(1, 0, template).cast(RATED_SCHEMA),
        mode="append",
        commit_properties=CommitProperties(
            app_transactions=[Transaction(partition_app_id("calls", 1), 0)]
        ),
    )
    assert lake.resume_offset("calls", 1) == 1
    assert lake.resume_offset("calls", 0) == 2
    offsets = pc.sort_indices(lake.read_rated(lake.cycles()[0], ["source_offset"]).column(0))
    assert len(offsets) == 3


# ----------------------------------------------------------------------------- readers
def test_duckdb_polars_and_pyarrow_read_the_same_table(avro: Path, tmp_path: Path) -> None:
    """Issue item 8: three readers, one answer, exact decimals."""
    lake = Lake(tmp_path / "lake")
    rate_files([avro], lake, REF, TARIFFS)
    uri = lake.table_uri(RATED)
    data = lake.dataset(RATED)
    assert data is not None
    arrow = data.to_table(columns=["billing_cycle", "total_charge"])
    want = pc.sum(arrow.column("total_charge")).as_py()
    con = duckdb.connect()
    con.register("calls", data)
    ((n, total),) = con.execute("SELECT count(*), sum(total_charge) FROM calls").fetchall()
    frame = pl.read_delta(uri)
    lazy = pl.scan_delta(uri).select(pl.len(), pl.col("total_charge").sum()).collect()
    assert n == arrow.num_rows == frame.height == lazy.item(0, 0)
    assert total == want == lazy.item(0, 1)
    dtype = frame.schema["total_charge"]
    assert (dtype.precision, dtype.scale) == (18, 6)  # type: ignore[attr-defined]
    assert DeltaTable(uri).to_pyarrow_table(columns=["call_id"]).num_rows == n


# ----------------------------------------------------------------------------- convert
def test_an_old_layout_lake_is_converted_in_place(
    avro: Path, tmp_path: Path, template: pa.Table, capsys: pytest.CaptureFixture[str]
) -> None:
    """``lake convert``: the old files become Delta tables (same rows), the streaming
    checkpoint becomes the partition's offset, an orphan part beyond it is dropped."""
    import json

    from pipeline.cli import main

    new = Lake(tmp_path / "new")
    rate_files([avro], new, REF, TARIFFS)
    old = tmp_path / "old"
    for cycle in new.cycles():  # the old writer's layout, from the same rows
        folder = old / RATED / f"billing_cycle={cycle}"
        folder.mkdir(parents=True)
        pq.write_table(
            new.read_rated(cycle).drop_columns(["billing_cycle"]), folder / "batch-x.parquet"
        )
    (old / DEAD).mkdir()
    pq.write_table(new.read_dead_letters(), old / DEAD / "batch-x.parquet")
    cycle = new.cycles()[0]
    part = _rows(2, 0, template).drop_columns(["billing_cycle"])
    stream = old / RATED / f"billing_cycle={cycle}"
    pq.write_table(part, stream / f"calls+00000+{0:020d}+{9:020d}.parquet")
    pq.write_table(part, stream / f"calls+00000+{10:020d}+{19:020d}.parquet")  # orphan
    (stream / ".tmp-part.parquet.tmp").write_bytes(b"half")
    (old / "_checkpoints").mkdir()
    (old / "_checkpoints" / "calls+00000.json").write_text(
        json.dumps({"topic": "calls", "partition": 0, "last_offset": 9})
    )
    with pytest.raises(ConfigError, match="lake convert"):
        Lake(old).require_existing()
    assert main(["lake", "convert", str(old)]) == 0
    printed = capsys.readouterr()
    assert "converted rated_calls" in printed.out + printed.err
    lake = Lake(old).require_existing()
    assert lake.resume_offset("calls", 0) == 10
    assert not (old / "_checkpoints").exists()
    got = _rated(lake)
    assert got.num_rows == _rated(new).num_rows + 2
    assert lake.read_dead_letters().num_rows == new.read_dead_letters().num_rows
    lake.commit_partition("calls", 0, _rows(1, 10, template), 10, 10, expected=9)  # appends work
    assert main(["lake", "convert", str(old)]) == 2  # nothing left to convert


def test_partition_table_is_the_services_lake_port(tmp_path: Path, template: pa.Table) -> None:
    """``PartitionTable``: resume sets what the next commit expects, each commit advances
    it; a member whose view is stale is fenced (the shape of the service's LakeTable)."""
    from dataclasses import dataclass

    import numpy as np

    from pipeline.lake.partitions import PartitionTable

    @dataclass(frozen=True)
    class Flush:
        topic: str
        partition: int
        first: int
        last: int
        rated: pa.Table
        stamps: np.ndarray

    def flush(first: int, last: int) -> Flush:
        return Flush("calls", 2, first, last, _rows(1, first, template), np.zeros(1, np.int64))

    owner, zombie = PartitionTable(Lake(tmp_path)), PartitionTable(Lake(tmp_path))
    marks: list[str] = []
    assert owner.resume_offset("calls", 2) is None
    assert zombie.resume_offset("calls", 2) is None
    assert owner.commit(flush(0, 9), marks.append) == 1
    assert owner.commit(flush(10, 19), marks.append) == 1
    assert marks == ["committed", "committed"]
    with pytest.raises(FencedError):
        zombie.commit(flush(0, 9), marks.append)
    assert zombie.resume_offset("calls", 2) == 20  # reassigned: resumes after the owner
    zombie.commit(flush(20, 29), marks.append)
    with pytest.raises(FencedError):
        owner.commit(flush(20, 29), marks.append)
    assert Lake(tmp_path).resume_offset("calls", 2) == 30
