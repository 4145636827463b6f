"""pipeline.io.atomic: a file appears whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.io.atomic import AtomicFile, temporary_name, write_bytes_atomic


def test_commit_replaces_the_target_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "x.bin"
    write_bytes_atomic(target, b"one")
    write_bytes_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.bin"]


def test_an_exception_keeps_the_old_content_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    write_bytes_atomic(target, b"old")

    def killed_mid_write() -> None:
        with AtomicFile(target) as fh:
            fh.write(b"half of the new")
            assert temporary_name(target).exists()
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        killed_mid_write()
    assert target.read_bytes() == b"old"
    assert not temporary_name(target).exists()


def test_the_temporary_is_hidden_from_lake_readers(tmp_path: Path) -> None:
    """Readers skip names starting with '.', so a half-written part is never read."""
    assert temporary_name(tmp_path / "p.parquet").name == ".p.parquet.tmp"


def test_abort_is_idempotent_and_commit_after_abort_writes_nothing(tmp_path: Path) -> None:
    f = AtomicFile(tmp_path / "y.bin")
    f.file.write(b"data")
    f.abort()
    f.abort()
    f.commit()
    assert list(tmp_path.iterdir()) == []
