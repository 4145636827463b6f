"""Issue 10 #7, #9-#12: secrets stay out of messages, bad input gets a clear refusal
(exit 2, no traceback) and a refused command writes nothing; ``rate`` tells an
unreadable input file from a good one (exit 4) and a run that failed part-way is
completed by a re-run without duplicates.

Every test drives :func:`pipeline.cli.main` as a user would, with small Avro files
from :func:`pipeline.generate.write_generated` and the shipped reference data.
"""

from __future__ import annotations

import hashlib
import http.server
import shutil
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pytest
from pydantic import SecretStr

from pipeline.batch import RateStats, rate_files
from pipeline.cli import EXIT_UNREADABLE_INPUT, build_parser, main
from pipeline.embedded import free_port
from pipeline.errors import ConfigError, SinkError
from pipeline.generate import write_generated
from pipeline.io.schemas import load_call_event_json
from pipeline.io.wire import RegistrySchemas, SchemaRegistryError, call_event_schema
from pipeline.lake.lake import Lake
from pipeline.lake.tables import check_cycle
from pipeline.refdata.files import SAMPLE_REFDATA_DIR, load_reference_dir
from pipeline.settings import load_settings, redact_url
from pipeline.tariff_files import DEFAULT_TARIFFS_DIR, load_tariff_dir

CYCLE = "2026-11"  # the cycle write_generated's default traffic falls in
SECRET = "s3cr3t"
REGISTRY = f"http://svc:{SECRET}@127.0.0.1"


# --------------------------------------------------------------------------- helpers


def run(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``main(argv)`` -> (exit code, stdout + stderr); never a traceback."""
    rc = main(list(argv))
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "Traceback" not in output, output
    return rc, " ".join(output.split())  # rich wraps long lines


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` (``root`` itself as ``.``) -> content hash or ``dir``;
    ``{}`` if ``root`` does not exist. Two equal trees: nothing was written."""
    if not root.exists():
        return {}
    out = {".": "dir" if root.is_dir() else hashlib.sha256(root.read_bytes()).hexdigest()}
    if root.is_dir():
        for path in sorted(root.rglob("*")):
            rel = str(path.relative_to(root))
            out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small generated Avro files in one directory."""
    base = tmp_path_factory.mktemp("traffic")
    for i in range(2):
        write_generated(base / f"part-{i}.avro", 1_500, seed=70 + i, refdata_dir=SAMPLE_REFDATA_DIR)
    return base


@pytest.fixture(scope="module")
def rated_lake(traffic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake with the rated traffic (copy it before changing it)."""
    lake = tmp_path_factory.mktemp("rated") / "lake"
    assert main(["rate", "--output", str(lake), str(traffic)]) == 0
    return lake


@pytest.fixture
def lake(rated_lake: Path, tmp_path: Path) -> Path:
    """A private copy of :func:`rated_lake`."""
    copy = tmp_path / "lake"
    shutil.copytree(rated_lake, copy)
    return copy


# --------------------------------------------------------------------------- #7 secrets


def test_registry_url_is_a_secret_in_the_settings() -> None:
    """#7: ``schema_registry`` is a ``SecretStr``: repr and dumps never show the password."""
    settings = load_settings(schema_registry=f"{REGISTRY}:8081")
    assert isinstance(settings.schema_registry, SecretStr)
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())
    assert settings.redacted_schema_registry == "http://svc:***@127.0.0.1:8081"
    assert load_settings(schema_registry="").schema_registry is None  # empty: no registry


@pytest.mark.parametrize(
    "url",
    [
        f"ftp://svc:{SECRET}@host:8081",  # scheme
        f"http://svc:{SECRET}@host:port",  # port
        f"http://svc:{SECRET}@",  # no host
        f"http://svc:{SECRET}@[::1:8081",  # bad IPv6
        f"svc:{SECRET}@host:8081",  # no scheme
    ],
)
def test_refused_registry_url_never_shows_the_password(
    url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """#7: a refused URL is refused before anything connects, without quoting it (the
    broker address is unreachable: a connection attempt would be exit 3, not 2)."""
    argv = ["--schema-registry", url, "--brokers", f"127.0.0.1:{free_port()}"]
    rc, output = run(["run", *argv, "--output", str(tmp_path / "lake")], capsys)
    assert rc == 2
    assert "schema_registry" in output
    assert SECRET not in output
    rc, output = run(["produce", *argv, str(tmp_path / "none.avro")], capsys)
    assert rc == 2
    assert SECRET not in output
    with pytest.raises(ConfigError) as refused:
        RegistrySchemas(url)
    assert SECRET not in str(refused.value)
    assert not (tmp_path / "lake").exists()


def test_unreachable_registry_never_shows_the_password() -> None:
    """#7: an outage names the registry without its credentials."""
    client = RegistrySchemas(SecretStr(f"{REGISTRY}:{free_port()}"), timeout=2)
    assert SECRET not in client.url
    with pytest.raises(SchemaRegistryError) as down:
        client.register("cdr-value", call_event_schema())
    assert "unreachable" in str(down.value)
    assert SECRET not in str(down.value)


class _Refusing(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error_code": 401, "message": "Unauthorized"}')

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def refusing_registry() -> Iterator[str]:
    """A registry answering HTTP 401 to everything; yields ``host:port``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_registry_refusing_access_never_shows_the_password(refusing_registry: str) -> None:
    """#7: HTTP 401 names the registry without its credentials."""
    client = RegistrySchemas(SecretStr(f"http://svc:{SECRET}@{refusing_registry}"))
    with pytest.raises(ConfigError) as refused:
        client.register("cdr-value", load_call_event_json())
    assert "HTTP 401" in str(refused.value)
    assert SECRET not in str(refused.value)


def test_redact_url() -> None:
    assert redact_url(f"https://svc:{SECRET}@h:1/p?password={SECRET}") == (
        "https://svc:***@h:1/p?password=***"
    )
    assert redact_url("http://h:8081") == "http://h:8081"
    assert redact_url("http://[::1") == "<malformed URL>"


# --------------------------------------------------------------------------- #9 #10 cycles


BAD_CYCLES = [
    "2026-13",
    "2026-00",
    "../x",
    "2026-1",
    "",
    "２０２６-01",
    "2026-01\n",
    "26-01",
    "2026/01",
]


@pytest.mark.parametrize("cycle", BAD_CYCLES)
def test_check_cycle_refuses(cycle: str) -> None:
    """#9: YYYY-MM, ASCII digits (not full-width), month 01-12, nothing around it."""
    with pytest.raises(ConfigError, match="YYYY-MM"):
        check_cycle(cycle)


@pytest.mark.parametrize("cycle", ["2026-01", "2026-12", "1999-09"])
def test_check_cycle_accepts(cycle: str) -> None:
    assert check_cycle(cycle) == cycle


@pytest.mark.parametrize("cycle", BAD_CYCLES)
def test_close_cycle_refuses_a_malformed_cycle_and_writes_nothing(
    cycle: str, lake: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """#9/#10: was a traceback (2026-13, ../x, '') or a new ``billing_cycle=2026-1``."""
    before = tree(lake)
    rc, output = run(["close-cycle", "--lake", str(lake), "--cycle", cycle], capsys)
    assert rc == 2
    assert "YYYY-MM" in output
    assert tree(lake) == before


@pytest.mark.parametrize("cycle", ["2026-13", "../x", "２０２６-01"])
def test_report_refuses_a_malformed_cycle_and_writes_nothing(
    cycle: str, lake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """#9: the report's check was ``\\d`` (any Unicode digit) and ``$`` (a newline)."""
    out = tmp_path / "out"
    out.mkdir()
    rc, output = run(
        ["report", "--lake", str(lake), "--cycle", cycle, "--output", str(out / "r.html")], capsys
    )
    assert rc == 2
    assert "YYYY-MM" in output
    assert tree(out) == {".": "dir"}


def test_close_cycle_refuses_a_lake_that_does_not_exist(
    lake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """#10: a mistyped ``--lake`` created a new lake with an empty invoice (exit 0)."""
    typo = tmp_path / "lkae"
    rc, output = run(["close-cycle", "--lake", str(typo), "--cycle", CYCLE], capsys)
    assert rc == 2
    assert "does not exist" in output
    assert not typo.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, output = run(["close-cycle", "--lake", str(empty), "--cycle", CYCLE], capsys)
    assert rc == 2
    assert "rated_calls" in output
    assert tree(empty) == {".": "dir"}
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    rc, output = run(["close-cycle", "--lake", str(not_a_dir), "--cycle", CYCLE], capsys)
    assert rc == 2
    assert "not a directory" in output


def test_close_cycle_of_an_empty_cycle_needs_allow_empty(
    lake: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """#10: a cycle with no rated calls wrote an empty invoice file; now it is refused
    naming the cycles that do have calls, unless ``--allow-empty``."""
    before = tree(lake)
    rc, output = run(["close-cycle", "--lake", str(lake), "--cycle", "2025-02"], capsys)
    assert rc == 2
    assert "no rated calls" in output
    assert CYCLE in output  # the cycles that have some
    assert "--allow-empty" in output
    assert tree(lake) == before
    argv = ["close-cycle", "--lake", str(lake), "--cycle", "2025-02", "--allow-empty"]
    rc, _ = run(argv, capsys)
    assert rc == 0
    assert Lake(lake).read_invoice_lines("2025-02").num_rows == 0


def test_close_cycle_still_closes_a_cycle_with_calls(
    lake: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _ = run(["close-cycle", "--lake", str(lake), "--cycle", CYCLE], capsys)
    assert rc == 0
    assert Lake(lake).read_invoice_lines(CYCLE).num_rows > 0


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_close_cycle_over_a_corrupt_parquet_file_names_it(
    damage: str, lake: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """#9: a corrupt lake file was a pyarrow traceback; now a refusal naming the file."""
    victim = lake / "rated_calls" / Lake(lake).live_files("rated_calls", CYCLE)[0]
    data = victim.read_bytes()
    victim.write_bytes(
        {"garbage": b"not parquet at all", "truncated": data[: len(data) // 2], "empty": b""}[
            damage
        ]
    )
    before = tree(lake)
    rc, output = run(["close-cycle", "--lake", str(lake), "--cycle", CYCLE], capsys)
    assert rc == 2
    assert victim.name in output
    assert "cannot be read" in output
    assert tree(lake) == before


# --------------------------------------------------------------------------- #9 --config


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("topic: [a\n", "not valid YAML at line 2"),
        ("topic: a\n\tgroup: b\n", "not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
        ("just a string\n", "must be a mapping"),
        ("bogus: 1\nkafka: {nope: 2}\n", "bogus: Extra inputs are not permitted"),
        (f"schema_registry: 'ftp://u:{SECRET}@h'\n", "schema_registry"),
        (b"\xff\xfe\x00 not utf-8", "not UTF-8"),
    ],
)
def test_run_with_a_bad_config_is_refused_before_connecting(
    text: str | bytes, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """#9: a YAML syntax error (or a list, a scalar, bytes that are not UTF-8) was a
    traceback. No broker runs here: a refusal must come before any connection."""
    config = tmp_path / "settings.yaml"
    if isinstance(text, bytes):
        config.write_bytes(text)
    else:
        config.write_text(text, encoding="utf-8")
    argv = ["run", "--config", str(config), "--brokers", f"127.0.0.1:{free_port()}"]
    rc, output = run([*argv, "--output", str(tmp_path / "lake")], capsys)
    assert rc == 2
    assert expected in output
    assert SECRET not in output
    assert not (tmp_path / "lake").exists()


def test_run_with_a_config_that_is_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rc, output = run(["run", "--config", str(tmp_path)], capsys)
    assert rc == 2
    assert "is a directory" in output
    monkeypatch.setenv("CDR_CONFIG", str(tmp_path / "missing.yaml"))
    rc, output = run(["run"], capsys)
    assert rc == 2
    assert "CDR_CONFIG" in output
    assert "not found" in output


# --------------------------------------------------------------------------- #11 report


def test_report_refuses_an_output_inside_the_lake(
    lake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """#11: HTML written into a table directory broke every later read of the lake.
    Paths are compared resolved: ``..``, a symlink to the lake, the lake itself."""
    link = tmp_path / "link"
    link.symlink_to(lake / "rated_calls")
    outputs = [
        lake / "rated_calls" / f"billing_cycle={CYCLE}" / "r.html",
        lake / "r.html",
        lake,
        tmp_path / "elsewhere" / ".." / "lake" / "invoice_lines" / "r.html",
        link / "r.html",
    ]
    before = tree(lake)
    for output in outputs:
        argv = ["report", "--lake", str(lake), "--cycle", CYCLE, "--output", str(output)]
        rc, message = run(argv, capsys)
        assert rc == 2, output
        assert "inside the lake" in message
    assert tree(lake) == before
    assert not (tmp_path / "elsewhere").exists()


def test_report_outside_the_lake_is_written(
    lake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "lake-report.html"  # a sibling whose name starts like the lake
    argv = ["report", "--lake", str(lake), "--cycle", CYCLE, "--output", str(output)]
    rc, _ = run(argv, capsys)
    assert rc == 0
    assert output.stat().st_size > 0


# --------------------------------------------------------------------------- #12 rate


def _write_records(path: Path, schema: Mapping[str, Any], records: list[dict[str, Any]]) -> None:
    with path.open("wb") as fh:
        fastavro.writer(fh, fastavro.parse_schema(dict(schema)), records)


@pytest.fixture
def bad_inputs(traffic: Path, tmp_path: Path) -> dict[str, Path]:
    """One file per way a whole file can be unreadable, with a good file among them."""
    base = tmp_path / "in"
    base.mkdir()
    good = (traffic / "part-0.avro").read_bytes()
    files = {
        "good": base / "a-good.avro",
        "zero_bytes": base / "b-zero.avro",
        "not_avro": base / "c-text.avro",
        "header_cut": base / "d-header-cut.avro",
        "wrong_schema": base / "e-wrong.avro",
        "no_records": base / "f-no-records.avro",
        "incompatible": base / "g-incompatible.avro",
    }
    files["good"].write_bytes(good)
    files["zero_bytes"].write_bytes(b"")
    files["not_avro"].write_text("call_id,account_id\n1,2\n")
    files["header_cut"].write_bytes(good[:200])
    other = {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "string"}]}
    _write_records(files["wrong_schema"], other, [{"x": "a"}] * 5)
    _write_records(files["no_records"], load_call_event_json(), [])
    changed = load_call_event_json() | {
        "fields": [
            {"name": f["name"], "type": "double"} if f["name"] == "duration_ms" else f
            for f in load_call_event_json()["fields"]
        ]
    }
    record = next(iter(fastavro.reader((traffic / "part-0.avro").open("rb"))))
    assert isinstance(record, dict)
    _write_records(files["incompatible"], changed, [record | {"duration_ms": 1.5}])
    return files


def test_rate_lists_unreadable_files_and_exits_4(
    bad_inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """#12: exit 0 before, whatever the files held. Now every readable file is rated,
    each unreadable one is listed with its reason, and the exit code is 4."""
    lake = tmp_path / "lake"
    rc, output = run(["rate", "--output", str(lake), str(bad_inputs["good"].parent)], capsys)
    assert rc == EXIT_UNREADABLE_INPUT == 4
    listing = output[output.index("unreadable input files") :]
    for kind, path in bad_inputs.items():
        assert (str(path) in listing) == (kind != "good"), kind
    assert "empty file" in listing
    assert "not an Avro object container" in listing
    assert "lacks required CallEvent field" in listing
    assert "no records" in listing
    assert "field 'duration_ms': writer double cannot be read as long" in listing
    rated = pa.concat_tables([Lake(lake).read_rated(c) for c in Lake(lake).cycles()])
    sources = set(rated.column("source_file").to_pylist())
    assert sources == {str(bad_inputs["good"])}  # the good file was rated in full
    assert rated.num_rows > 1_400


def test_rate_parallel_lists_the_same_unreadable_files(
    bad_inputs: dict[str, Path], tmp_path: Path
) -> None:
    ref, tariffs = load_reference_dir(SAMPLE_REFDATA_DIR), load_tariff_dir(DEFAULT_TARIFFS_DIR)
    files = sorted(bad_inputs.values())
    one = rate_files(files, Lake(tmp_path / "one"), ref, tariffs)
    from pipeline.batch import rate_files_parallel

    two = rate_files_parallel(files, Lake(tmp_path / "two"), ref, tariffs, workers=2)
    assert two.unreadable == one.unreadable
    assert len(one.unreadable) == 6


def test_rate_of_good_files_exits_0(
    traffic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, output = run(["rate", "--output", str(tmp_path / "lake"), str(traffic)], capsys)
    assert rc == 0
    assert "unreadable" not in output


def test_a_truncated_tail_is_readable_with_dead_letters(traffic: Path, tmp_path: Path) -> None:
    """Decision (docs/decisions.md): a file with decodable records is readable; its
    damaged tail is ``DECODE_ERROR`` dead letters, the rest is rated."""
    data = (traffic / "part-0.avro").read_bytes()
    cut = tmp_path / "cut.avro"
    cut.write_bytes(data[: len(data) * 2 // 3])
    ref, tariffs = load_reference_dir(SAMPLE_REFDATA_DIR), load_tariff_dir(DEFAULT_TARIFFS_DIR)
    stats = rate_files([cut], Lake(tmp_path / "lake"), ref, tariffs)
    assert stats.unreadable == []
    assert stats.rated > 0
    assert stats.by_reason.get("DECODE_ERROR", 0) >= 1


def test_a_file_that_cannot_be_opened_is_unreadable(traffic: Path, tmp_path: Path) -> None:
    """Permissions do not stop root; a dangling symlink stands for a file that vanished
    or cannot be opened between listing and rating."""
    gone = tmp_path / "gone.avro"
    gone.symlink_to(tmp_path / "nowhere.avro")
    ref, tariffs = load_reference_dir(SAMPLE_REFDATA_DIR), load_tariff_dir(DEFAULT_TARIFFS_DIR)
    files = [traffic / "part-0.avro", gone]
    stats = rate_files(files, Lake(tmp_path / "lake"), ref, tariffs)
    assert stats.unreadable == [(str(gone), "cannot open: No such file or directory")]
    assert stats.rated > 0


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p, "no such file or directory"),
        (lambda p: (p.mkdir(), p)[1], "directory has no .avro files"),
        (lambda p: p / "*.avro", "matches no file"),
    ],
)
def test_rate_refuses_inputs_that_name_nothing_and_writes_nothing(
    make: object, expected: str, traffic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """#12: a missing path or an empty directory is refused before anything is written,
    even next to good inputs."""
    assert callable(make)
    missing = make(tmp_path / "in")
    lake = tmp_path / "lake"
    rc, output = run(["rate", "--output", str(lake), str(traffic), str(missing)], capsys)
    assert rc == 2
    assert expected in output
    assert not lake.exists()


def test_rate_refuses_an_output_that_is_a_file(
    traffic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lake = tmp_path / "lake"
    lake.write_text("not a lake")
    rc, output = run(["rate", "--output", str(lake), str(traffic)], capsys)
    assert rc == 2
    assert "not a directory" in output


def _lake_rows(lake: Lake) -> tuple[pa.Table, pa.Table]:
    rated = pa.concat_tables([lake.read_rated(c) for c in lake.cycles()])
    return rated, lake.read_dead_letters()


def test_a_rerun_completes_a_run_that_failed_part_way(
    traffic: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """#12: the dead-letter write fails after the rated part of a batch was written
    (exit 3, a partial lake). The same command again completes the lake: the same rows
    as a clean run, no duplicate (source_file, source_index), every record once (R1)."""
    argv = ["rate", "--batch-size", "500", str(traffic)]
    clean = tmp_path / "clean"
    assert main([*argv[:1], "--output", str(clean), *argv[1:]]) == 0
    want_rated, want_dead = _lake_rows(Lake(clean))
    assert want_dead.num_rows > 0  # the failure below has something to fail on

    original = Lake.append
    calls = {"n": 0}

    def failing(self: Lake, name: str, rows: pa.Table, transactions: Any = ()) -> int | None:
        if name == "dead_letters":
            calls["n"] += 1
            if rows.num_rows and calls["n"] >= 3:
                raise SinkError(f"cannot write {self.table_uri(name)}: No space left on device")
        return original(self, name, rows, transactions)

    lake = tmp_path / "lake"
    monkeypatch.setattr(Lake, "append", failing)
    rc, output = run([*argv[:1], "--output", str(lake), *argv[1:]], capsys)
    assert rc == 3
    assert "No space left" in output
    partial_rated, _ = _lake_rows(Lake(lake))
    assert partial_rated.num_rows > 0  # the failure left part of the work behind

    monkeypatch.setattr(Lake, "append", original)
    rc, _ = run([*argv[:1], "--output", str(lake), *argv[1:]], capsys)
    assert rc == 0
    rated, dead = _lake_rows(Lake(lake))
    assert rated.num_rows == want_rated.num_rows
    assert dead.num_rows == want_dead.num_rows
    keys = [
        (f, i)
        for table in (rated, dead)
        for f, i in zip(
            table.column("source_file").to_pylist(),
            table.column("source_index").to_pylist(),
            strict=True,
        )
    ]
    assert len(set(keys)) == len(keys) == 3_000  # every record exactly once, R1
    assert sorted(rated.column("call_id").to_pylist()) == sorted(
        want_rated.column("call_id").to_pylist()
    )


def test_rate_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["rate", "--help"])
    text = capsys.readouterr().out
    assert "exit codes:" in text
    for code in ("0", "1", "2", "3", "4", "130"):
        assert f"\n  {code} " in text
    assert "unreadable" in text


def test_rate_stats_add() -> None:
    a, b = RateStats(events=2, rated=1, dead_letters=1, by_reason={"X": 1}), RateStats(events=1)
    b.unreadable.append(("f", "empty file"))
    a.add(b)
    assert (a.events, a.by_reason, a.unreadable) == (3, {"X": 1}, [("f", "empty file")])
