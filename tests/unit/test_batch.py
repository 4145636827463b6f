"""Batch mode end to end on real files: ``rate`` into a lake, re-runs, ``--workers``,
and ``close-cycle`` twice (issue 2 #6/#7, issue 4 #6)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.batch import close, rate_files, rate_files_parallel
from pipeline.cli import main
from pipeline.generate import write_generated
from pipeline.lake.lake import Lake
from pipeline.lake.tables import INVOICES
from pipeline.refdata.files import SAMPLE_REFDATA_DIR, load_reference_dir
from pipeline.tariff_files import DEFAULT_TARIFFS_DIR, load_tariff_dir

REF = load_reference_dir(SAMPLE_REFDATA_DIR)
TARIFFS = load_tariff_dir(DEFAULT_TARIFFS_DIR)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("avro")
    out = []
    for i in range(3):
        path = base / f"part-{i}.avro"
        write_generated(path, 4_000, seed=40 + i, refdata_dir=SAMPLE_REFDATA_DIR)
        out.append(path)
    return out


def _all_rated(lake: Lake) -> pa.Table:
    tables = [lake.read_rated(c) for c in lake.cycles()]
    return pa.concat_tables(tables).sort_by(
        [("source_file", "ascending"), ("source_index", "ascending")]
    )


def test_every_record_is_rated_or_dead_lettered_once(files: list[Path], tmp_path: Path) -> None:
    """R1: each input record ends as exactly one rated record or one dead letter."""
    lake = Lake(tmp_path / "lake")
    stats = rate_files(files, lake, REF, TARIFFS, batch_size=1_500)
    assert stats.events == 12_000 == stats.rated + stats.dead_letters
    rated, dead = _all_rated(lake), lake.read_dead_letters()
    assert rated.num_rows == stats.rated
    assert dead.num_rows == stats.dead_letters
    keys = set(
        zip(
            rated.column("source_file").to_pylist(),
            rated.column("source_index").to_pylist(),
            strict=True,
        )
    )
    dead_keys = set(
        zip(
            dead.column("source_file").to_pylist(),
            dead.column("source_index").to_pylist(),
            strict=True,
        )
    )
    assert len(keys) == rated.num_rows
    assert not keys & dead_keys
    assert len(keys | dead_keys) == 12_000
    assert all(p is not None for p in dead.column("payload").to_pylist())


def test_rating_again_replaces_instead_of_duplicating(files: list[Path], tmp_path: Path) -> None:
    """Deterministic names: re-rating a file (even with another batch size) replaces it."""
    lake = Lake(tmp_path / "lake")
    rate_files(files[:1], lake, REF, TARIFFS, batch_size=1_000)
    first = _all_rated(lake)
    rate_files(files[:1], lake, REF, TARIFFS, batch_size=3_000)
    assert _all_rated(lake).equals(first)


def test_workers_give_the_same_lake(files: list[Path], tmp_path: Path) -> None:
    """Issue 4 #6: ``--workers 2`` rates files in parallel processes, same output."""
    one, two = Lake(tmp_path / "one"), Lake(tmp_path / "two")
    seen: list[int] = []
    rate_files(files, one, REF, TARIFFS)
    stats = rate_files_parallel(files, two, REF, TARIFFS, workers=2, progress=seen.append)
    assert sum(seen) == stats.events == 12_000
    assert _all_rated(one).equals(_all_rated(two))


def test_close_cycle_twice_gives_same_lines_and_one_file(files: list[Path], tmp_path: Path) -> None:
    """Section 4: closing the same cycle twice gives the same lines, no duplicate files."""
    lake = Lake(tmp_path / "lake")
    rate_files(files, lake, REF, TARIFFS)
    first = close(lake, REF, TARIFFS, "2026-11")
    second = close(lake, REF, TARIFFS, "2026-11")
    assert first.equals(second)
    assert first.num_rows > 0
    assert len(lake.live_files(INVOICES, "2026-11")) == 1  # the first close's file replaced
    assert lake.read_invoice_lines("2026-11").num_rows == first.num_rows


def test_cli_rate_directory_and_close(files: list[Path], tmp_path: Path) -> None:
    """Spec section 7 command forms: ``rate`` on a directory, then ``close-cycle``."""
    lake = tmp_path / "lake"
    assert main(["rate", "--output", str(lake), str(files[0].parent)]) == 0
    assert main(["close-cycle", "--lake", str(lake), "--cycle", "2026-11"]) == 0
    assert Lake(lake).read_invoice_lines("2026-11").num_rows > 0


def test_cli_refuses_bad_tariffs_with_a_clear_message(
    tmp_path: Path, files: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad tariff file is refused naming file and field (exit code 2)."""
    bad = tmp_path / "tariffs"
    bad.mkdir()
    (bad / "standard.yaml").write_text(
        (DEFAULT_TARIFFS_DIR / "standard.yaml")
        .read_text()
        .replace('did_per_min: "0.0000"', "did_per_min: 0.0")
    )
    (bad / "wholesale.yaml").write_text((DEFAULT_TARIFFS_DIR / "wholesale.yaml").read_text())
    assert (
        main(["rate", "--tariffs", str(bad), "--output", str(tmp_path / "l"), str(files[0])]) == 2
    )
    err = capsys.readouterr().err
    assert "standard.yaml" in err
    assert "did_per_min" in err
