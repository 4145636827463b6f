"""The lake in object storage: every command against a real S3-compatible server
(SeaweedFS on loopback, :mod:`tests.integration.object_store`), no S3 mocks.

The same input rated into an ``s3://`` lake and into a local lake gives the same
rows (R1: every record once, rated or dead-lettered), the same invoice lines (C1-C4),
the same query answers and a report; dead letters exported to an S3 lake keep one row
per source event; credentials are never printed, and a wrong secret is refused.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from confluent_kafka import Producer

from pipeline.cli import main
from pipeline.embedded import EmbeddedKafka
from pipeline.generate import write_generated
from pipeline.io import dead_letter_codec, dead_letter_topic
from pipeline.lake.lake import Lake
from pipeline.lake.tables import RATED
from pipeline.refdata.files import SAMPLE_REFDATA_DIR
from pipeline.settings import KafkaSettings
from tests.integration.object_store import ObjectStore

pytestmark = pytest.mark.integration

CYCLE = "2026-11"
ORDER = [("source_file", "ascending"), ("source_index", "ascending")]


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("s3-traffic") / "calls.avro"
    write_generated(path, 6_000, seed=91, refdata_dir=SAMPLE_REFDATA_DIR)
    return path


@pytest.fixture
def s3_env(object_store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> ObjectStore:
    for name, value in object_store.env().items():
        monkeypatch.setenv(name, value)
    return object_store


def _uri(store: ObjectStore, name: str) -> str:
    return f"s3://{store.bucket}/{name}-{uuid.uuid4().hex[:8]}/lake"


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


@pytest.fixture(scope="module")
def lakes(
    traffic: Path, object_store: ObjectStore, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Lake, Lake]:
    """The same file rated and closed into a local lake and an S3 lake (by the CLI)."""
    local = tmp_path_factory.mktemp("local") / "lake"
    remote = _uri(object_store, "rate")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in object_store.env().items():
            mp.setenv(name, value)
        for lake in (str(local), remote):
            assert main(["rate", "--batch-size", "2000", "--output", lake, str(traffic)]) == 0
            assert main(["close-cycle", "--lake", lake, "--cycle", CYCLE]) == 0
    return Lake(local), Lake(remote, object_store.settings())


def test_rate_and_close_on_s3_equal_the_local_lake(lakes: tuple[Lake, Lake]) -> None:
    """R1 and C1-C4: row for row the same rated records, dead letters and invoice lines."""
    local, remote = lakes
    assert remote.cycles() == local.cycles()
    for cycle in local.cycles():
        assert (
            remote.read_rated(cycle).sort_by(ORDER).equals(local.read_rated(cycle).sort_by(ORDER))
        )
    assert (
        remote.read_dead_letters().sort_by(ORDER).equals(local.read_dead_letters().sort_by(ORDER))
    )
    lines = local.read_invoice_lines(CYCLE)
    assert lines.num_rows > 0
    keys = [(c, "ascending") for c in ("account_id", "line_type", "trunk_id", "tariff_id")]
    assert remote.read_invoice_lines(CYCLE).sort_by(keys).equals(lines.sort_by(keys))
    total = sum(local.read_rated(c).num_rows for c in local.cycles())
    assert total + local.read_dead_letters().num_rows == 6_000


def test_rate_again_on_s3_adds_nothing(
    lakes: tuple[Lake, Lake], traffic: Path, s3_env: ObjectStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """A re-run (another batch size) skips the chunks the tables hold: no duplicate."""
    _, remote = lakes
    before = remote.version(RATED)
    rc, output = _cli(["rate", "--batch-size", "500", "--output", remote.uri, str(traffic)], capsys)
    assert rc == 0
    assert "6,000 events were already in the lake" in output
    assert remote.version(RATED) == before


def test_query_and_report_on_s3(
    lakes: tuple[Lake, Lake],
    s3_env: ObjectStore,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    local, remote = lakes
    sql = (
        "SELECT billing_cycle, call_class, count(*) AS calls, sum(total_charge) AS charges "
        "FROM rated_calls GROUP BY ALL ORDER BY ALL"
    )
    answers = []
    for lake in (local.uri, remote.uri):
        rc, output = _cli(["query", sql, "--lake", lake, "--format", "csv"], capsys)
        assert rc == 0, output
        answers.append(output)
    assert answers[0] == answers[1]
    assert answers[0].count("\n") > 3
    rc, output = _cli(
        ["query", "SELECT count(*) FROM rated_calls", "--lake", remote.uri, "--analyst"], capsys
    )
    assert rc == 0, output
    page = tmp_path / "report.html"
    rc, output = _cli(
        ["report", "--lake", remote.uri, "--cycle", CYCLE, "--output", str(page)], capsys
    )
    assert rc == 0, output
    assert remote.uri in page.read_text(encoding="utf-8")


def test_readers_duckdb_polars_pyarrow_on_s3(
    lakes: tuple[Lake, Lake], object_store: ObjectStore
) -> None:
    """Issue item 8: the tables in S3 read by DuckDB, polars and pyarrow agree."""
    _, remote = lakes
    options = remote.storage.delta_options()
    uri = remote.table_uri(RATED)
    data = remote.dataset(RATED)
    assert data is not None
    arrow = data.to_table(filter=pa.compute.field("billing_cycle") == CYCLE)
    con = duckdb.connect()
    con.register("calls", data)
    ((n, total),) = con.execute(
        "SELECT count(*), sum(total_charge) FROM calls WHERE billing_cycle = ?", [CYCLE]
    ).fetchall()
    frame = pl.scan_delta(uri, storage_options=options).filter(pl.col("billing_cycle") == CYCLE)
    got = frame.select(pl.len(), pl.col("total_charge").sum()).collect()
    assert n == arrow.num_rows == got.item(0, 0) > 0
    assert total == pa.compute.sum(arrow.column("total_charge")).as_py() == got.item(0, 1)
    column = frame.collect_schema()["total_charge"]
    assert (column.precision, column.scale) == (18, 6)  # type: ignore[attr-defined]


def test_dead_letters_export_to_s3_once_per_event(
    kafka_broker: EmbeddedKafka,
    object_store: ObjectStore,
    s3_env: ObjectStore,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Dead letters too big for the topic keep their payload in the S3 lake; export
    appends them to the dead_letters table, and exporting again adds none."""
    lake_uri = _uri(object_store, "dlq")
    lake = Lake(lake_uri, object_store.settings())
    topic = f"dlq-{uuid.uuid4().hex[:8]}"
    kafka = KafkaSettings(brokers=kafka_broker.bootstrap)
    big = b"\x00" * 40_000
    rows = [
        {"reason": "DECODE_ERROR", "detail": f"bad {i}", "source_topic": "calls",
         "source_partition": 0, "source_offset": i, "payload": big if i == 0 else b"x"}
        for i in range(5)
    ]  # fmt: skip
    producer = dead_letter_topic.DeadLetterProducer(
        Producer({"bootstrap.servers": kafka_broker.bootstrap}),
        topic,
        lake=lake.payloads,
        max_message_bytes=16_384,
    )
    producer.send(dead_letter_codec.to_table(rows))
    argv = ["dead-letters", "export", "--topic", topic, "--output", lake_uri]
    rc, output = _cli([*argv, "--brokers", kafka.brokers], capsys)
    assert rc == 0, output
    assert "exported 5 new dead letters" in output
    rc, output = _cli([*argv, "--brokers", kafka.brokers], capsys)
    assert rc == 0, output
    assert "exported 0 new dead letters" in output
    dead = lake.read_dead_letters()
    assert dead.num_rows == 5
    assert sorted(dead.column("source_offset").to_pylist()) == list(range(5))
    assert big in dead.column("payload").to_pylist()  # whole, from the S3 payload store


def test_a_wrong_secret_is_refused_and_never_printed(
    traffic: Path,
    object_store: ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "WRONG-secret-" + uuid.uuid4().hex
    for name, value in object_store.env(secret=wrong).items():
        monkeypatch.setenv(name, value)
    lake = _uri(object_store, "refused")
    for argv in (
        ["rate", "--output", lake, str(traffic)],
        ["close-cycle", "--lake", lake, "--cycle", CYCLE],
        ["query", "SELECT 1", "--lake", lake],
    ):
        rc, output = _cli(argv, capsys)
        assert rc == 2, (argv, output)
        assert "refused access" in output
        assert "check lake.s3_access_key_id" in output
        assert wrong not in output
        assert object_store.secret_key not in output
    assert wrong not in caplog.text


def test_an_unreachable_store_is_unavailable_not_a_traceback(
    traffic: Path,
    object_store: ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing listens at the endpoint: exit 3 (infrastructure), one line, no secret."""
    from pipeline.embedded import free_port

    env = object_store.env() | {"CDR_LAKE__S3_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CDR_LAKE__S3_SECRET_ACCESS_KEY", object_store.secret_key)
    rc, output = _cli(
        ["close-cycle", "--lake", f"s3://{object_store.bucket}/x", "--cycle", CYCLE], capsys
    )
    assert rc == 3, output
    assert "lake unavailable" in output
    assert object_store.secret_key not in output
    assert "Traceback" not in output
