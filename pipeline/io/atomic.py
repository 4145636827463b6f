"""Durable, all-or-nothing file writes: the one place the project writes a file
that a reader (or a restart) must see whole or not at all.

Protocol: write under a hidden temporary name in the same directory
(``.<name>.tmp``, which DuckDB, Spark, Trino and the lake's own scans ignore),
flush, ``fsync``, rename over the target (atomic on POSIX), then ``fsync`` the
directory so the rename itself survives a power cut. Leaving early (an exception,
:meth:`AtomicFile.abort`) removes the temporary file and leaves the target as it was.

Errors are the filesystem's ``OSError``: each adapter translates them into its own
exception of :mod:`pipeline.errors` (a lake write into ``SinkError``, a report into
``ConfigError``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import TracebackType
from typing import BinaryIO


def temporary_name(path: Path) -> Path:
    """The hidden temporary file that :class:`AtomicFile` writes before renaming."""
    return path.with_name(f".{path.name}.tmp")


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicFile:
    """A binary file that appears at ``path`` only when :meth:`commit` succeeds.

    Use as a context manager (commit on a normal exit, abort on an exception) or call
    :meth:`commit` / :meth:`abort` yourself. Missing parent directories are created.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.tmp = temporary_name(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file: BinaryIO = self.tmp.open("wb")
        self._done = False

    def commit(self) -> None:
        """Flush, fsync, rename into place, fsync the directory."""
        if self._done:
            return
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
            fsync_directory(self.path.parent)
        except BaseException:
            self.abort()
            raise
        self._done = True

    def abort(self) -> None:
        """Drop the temporary file; the target keeps its previous content (if any)."""
        self._done = True
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()

    def __enter__(self) -> BinaryIO:
        return self.file

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (see the module docstring)."""
    with AtomicFile(path) as fh:
        fh.write(data)
