"""Batch mode: rate Avro container files into the lake, and close billing cycles.

Thin orchestration around the pure core: read (adapter) -> rate (core) -> write
(adapter). Each chunk of ``batch_size`` records of an input file is appended to
``rated_calls`` and to ``dead_letters`` as one Delta commit per table, which also
records the *application transaction* ``rate:<sha256 of the file>`` = the number of
the file's chunks that table now holds (and ``rate:<sha256>:batch-size`` = the chunk
size). Re-running ``rate`` on the same input therefore never duplicates records,
also after a run that failed part-way (e.g. its dead-letter commit failed after the
rated part of a chunk was committed): each table skips the chunks it holds and gets
the rest; a re-run cuts the file into the chunk size of the first run, whatever its
own ``--batch-size``. Two files with the same bytes are the same input.

Unreadable input files. Every record still ends as a rated record or a dead letter
(R1), but a file as a whole is *unreadable* (listed in :attr:`RateStats.unreadable`
with a reason) when not one of its records can be rated for a reason of the file
itself: it cannot be opened; its header cannot be read (empty file, not an Avro
container, truncated header, bad writer schema); its writer schema cannot be
resolved against ``CallEvent`` or lacks a field the core requires (every record would
be ``MISSING_FIELD``); or no record of it decodes (it holds no records, or every
block is damaged). A file with at least one decodable record is readable: its
damaged stretches (a truncated tail, a corrupt block) are ``DECODE_ERROR`` dead
letters and the rest is rated. See ``docs/decisions.md``.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import Transaction

from pipeline.avro.schemas import encode_datum
from pipeline.errors import ConfigError
from pipeline.io.avro_files import count_records, file_problem, iter_event_batches, schema_of
from pipeline.lake.lake import Lake
from pipeline.lake.tables import DEAD, INVOICES, RATED, check_cycle
from pipeline.rating.columns import DEAD_LETTER_SCHEMA
from pipeline.rating.compiled import check_accounts_have_tariffs
from pipeline.rating.cycle import invoice_lines, short_call_bound
from pipeline.rating.invoice_diff import LineChange, invoice_changes
from pipeline.rating.rate import REQUIRED, rate_batch
from pipeline.rating.reference import ReferenceData
from pipeline.rating.tariffs import TariffBook
from pipeline.settings import CloseSettings, LakeSettings

LOG = logging.getLogger(__name__)

Progress = Callable[[int], None]


@dataclass
class RateStats:
    """Counts of a batch run: ``events == rated + dead_letters``; ``skipped``: records
    of chunks the lake already held whole (a re-run), not rated again."""

    events: int = 0
    rated: int = 0
    dead_letters: int = 0
    skipped: int = 0
    commits: int = 0
    seconds: float = 0.0
    by_reason: dict[str, int] = field(default_factory=dict)
    #: ``(path, reason)`` of each input file none of whose records could be rated
    #: for a reason of the file itself (module docstring); in input order.
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def add(self, other: RateStats) -> None:
        """Add the counts and unreadable files of ``other`` (not ``seconds``)."""
        self.events += other.events
        self.rated += other.rated
        self.dead_letters += other.dead_letters
        self.skipped += other.skipped
        self.commits += other.commits
        for reason, count in other.by_reason.items():
            self.by_reason[reason] = self.by_reason.get(reason, 0) + count
        self.unreadable.extend(other.unreadable)

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def file_digest(path: Path) -> str:
    """First 32 hex digits of the SHA-256 of a file's bytes (its identity in the lake)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:32]


def rate_app_ids(digest: str) -> tuple[str, str]:
    """The application ids of an input file: chunks done, and its chunk size."""
    return f"rate:{digest}", f"rate:{digest}:batch-size"


def fill_payloads(dead: pa.Table, events: pa.Table) -> pa.Table:
    """Give dead letters that lack a payload the Avro datum of their event, found by
    ``source_index`` (per-row work, but only for dead letters)."""
    if dead.num_rows == 0 or dead.column("payload").null_count == 0:
        return dead
    rows = pc.index_in(
        dead.column("source_index"), value_set=events.column("source_index")
    ).to_pylist()
    fields = [f.name for f in events.schema][:15]
    payloads = []
    for payload, row in zip(dead.column("payload").to_pylist(), rows, strict=True):
        if payload is None and row is not None:
            record = {k: events.column(k)[row].as_py() for k in fields}
            try:
                payload = encode_datum(record)
            except (ValueError, TypeError, KeyError):  # a record that no longer fits the schema
                payload = None
        payloads.append(payload)
    return dead.set_column(
        dead.schema.get_field_index("payload"), "payload", pa.array(payloads, pa.binary())
    )


def input_file_problem(path: Path) -> str | None:
    """Why no record of ``path`` can be rated, judged from its header (see the module
    docstring), or None. Raises ``OSError`` if the file cannot be opened."""
    problem = file_problem(path)
    if problem is not None:
        return problem
    fields = {f["name"] for f in schema_of(path).get("fields", [])}
    missing = [name for name in REQUIRED if name not in fields]
    if missing:
        return f"writer schema lacks required CallEvent field(s) {', '.join(missing)}"
    return None


class _Committer:
    """Commits chunks in order on the writer thread; after a failed commit it commits
    nothing more (the application versions count chunks, so a later chunk committed
    after a missing one would make a re-run skip the missing one)."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.failed = threading.Event()

    def commit(self, rated: pa.Table, dead: pa.Table, marks: dict[str, list[Transaction]]) -> int:
        """Commit the chunk to the tables named in ``marks`` (with their application
        transactions); a table gets no commit for no rows. Returns the commits made."""
        if self.failed.is_set():
            return 0
        commits = 0
        try:
            for name, rows in ((RATED, rated), (DEAD, dead)):
                if name in marks and rows.num_rows:
                    self.lake.append(name, rows, marks[name])
                    commits += 1
        except BaseException:
            self.failed.set()
            raise
        return commits


def rate_files(
    files: Sequence[Path],
    lake: Lake,
    ref: ReferenceData,
    tariffs: TariffBook,
    *,
    batch_size: int = 250_000,
    progress: Progress | None = None,
) -> RateStats:
    """Rate every record of ``files`` into ``lake``. Each record ends as exactly one
    rated record or one dead letter. ``progress`` is called with records done.
    Unreadable files (module docstring) are rated like the others (their bytes become
    ``DECODE_ERROR`` dead letters; one that cannot be opened is skipped) and listed in
    :attr:`RateStats.unreadable`. Raises :class:`SinkError` if the lake cannot be
    written; running the same call again then completes the lake without duplicates
    (module docstring).

    Commits are made by one background thread while the next batch is rated (Arrow
    releases the GIL while encoding); at most two batches wait to be written.
    """
    check_accounts_have_tariffs(ref, tariffs)
    lake.create_tables()
    stats = RateStats()
    started = time.perf_counter()
    pending: deque[Future[int]] = deque()
    committer = _Committer(lake)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lake-writer") as writer:
        for path in files:
            try:
                problem = input_file_problem(path)
                app, size_app = rate_app_ids(file_digest(path))
            except OSError as exc:
                reason = f"cannot open: {exc.strerror or exc}"
                LOG.warning("unreadable input file=%s reason=%s", path, reason)
                stats.unreadable.append((str(path), reason))
                continue
            done = {name: lake.transaction_version(name, app) or 0 for name in (RATED, DEAD)}
            sizes = [lake.transaction_version(name, size_app) for name in (RATED, DEAD)]
            size = next((s for s in sizes if s), batch_size) if max(done.values()) else batch_size
            before = (stats.events, stats.rated, stats.dead_letters, stats.skipped)
            decoded = 0
            for chunk, batch in enumerate(iter_event_batches(path, batch_size=size), start=1):
                decoded += batch.events.num_rows
                n = batch.events.num_rows + batch.dead_letters.num_rows
                todo = [name for name in (RATED, DEAD) if done[name] < chunk]
                if not todo:  # both tables hold this chunk (a re-run)
                    stats.skipped += n
                    if progress:
                        progress(n)
                    continue
                result = rate_batch(batch.events, ref, tariffs)
                dead = pa.concat_tables(
                    [
                        batch.dead_letters.cast(DEAD_LETTER_SCHEMA),
                        fill_payloads(result.dead_letters, batch.events),
                    ]
                )
                marks = {
                    name: [Transaction(app, chunk), Transaction(size_app, size)] for name in todo
                }
                pending.append(writer.submit(committer.commit, result.rated, dead, marks))
                while len(pending) > 2:
                    stats.commits += pending.popleft().result()
                stats.events += n
                stats.rated += result.rated.num_rows
                stats.dead_letters += dead.num_rows
                for reason in dead.column("reason").to_pylist():
                    stats.by_reason[reason] = stats.by_reason.get(reason, 0) + 1
                if progress:
                    progress(n)
            while pending:
                stats.commits += pending.popleft().result()
            if problem is None and decoded == 0:
                records = stats.events + stats.skipped - before[0] - before[3]
                problem = "no record decodes" if records else "no records (empty container)"
            if problem is not None:
                LOG.warning("unreadable input file=%s reason=%s", path, problem)
                stats.unreadable.append((str(path), problem))
            LOG.info(
                "rated file=%s events=%d rated=%d dead_letters=%d already_in_lake=%d",
                path.name,
                stats.events - before[0],
                stats.rated - before[1],
                stats.dead_letters - before[2],
                stats.skipped - before[3],
            )
    stats.seconds = time.perf_counter() - started
    return stats


def _rate_one(
    args: tuple[Path, str, LakeSettings, ReferenceData, TariffBook, int, Any],
) -> RateStats:
    path, uri, settings, ref, tariffs, batch_size, queue = args
    lake = Lake(uri, settings)
    return rate_files([path], lake, ref, tariffs, batch_size=batch_size, progress=queue.put)


def rate_files_parallel(
    files: Sequence[Path],
    lake: Lake,
    ref: ReferenceData,
    tariffs: TariffBook,
    *,
    workers: int,
    batch_size: int = 250_000,
    progress: Progress | None = None,
) -> RateStats:
    """:func:`rate_files` with files spread over ``workers`` processes (one file per
    task), each appending to the same tables (Delta retries concurrent appends, which
    never conflict). Output is identical to the sequential run; ``progress`` sees every
    batch."""
    if workers <= 1 or len(files) <= 1:
        return rate_files(files, lake, ref, tariffs, batch_size=batch_size, progress=progress)
    check_accounts_have_tariffs(ref, tariffs)
    lake.create_tables()  # once, before the workers race to create them
    started = time.perf_counter()
    total = RateStats()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        queue = manager.Queue()
        futures = [
            pool.submit(
                _rate_one,
                (p, lake.uri, lake.storage.settings, ref, tariffs, batch_size, queue),
            )
            for p in files
        ]
        remaining = set(futures)
        parts: dict[Future[RateStats], RateStats] = {}
        while remaining:
            done, remaining = wait(remaining, timeout=0.2, return_when=FIRST_COMPLETED)
            while not queue.empty():
                n = queue.get()
                if progress:
                    progress(n)
            for future in done:
                parts[future] = future.result()
        while not queue.empty():
            n = queue.get()
            if progress:
                progress(n)
    for future in futures:  # input order, as the sequential run lists unreadable files
        total.add(parts[future])
    total.seconds = time.perf_counter() - started
    return total


def total_records(files: Sequence[Path]) -> int:
    """Records in ``files`` (from the container block headers; for progress bars). A
    file that cannot be opened counts 0 (rating reports it)."""
    total = 0
    for path in files:
        try:
            total += count_records(path)
        except OSError:
            continue
    return total


@dataclass(frozen=True)
class CloseResult:
    """A close of ``cycle`` (:func:`run_close`): its ``lines``, computed from version
    ``rated_calls_version`` of ``rated_calls`` (``records`` rated records of the
    cycle, every revision), written as version ``invoice_version`` of
    ``invoice_lines`` (None: ``as_of``, nothing written), and how they differ from
    ``previous`` (the lines of ``invoice_lines`` version ``previous_version``: the
    close before this one, or with ``as_of`` the close stored now)."""

    cycle: str
    lines: pa.Table
    rated_calls_version: int
    records: int
    invoice_version: int | None
    previous: pa.Table
    previous_version: int | None
    changes: list[LineChange]


def close(
    lake: Lake,
    ref: ReferenceData,
    tariffs: TariffBook,
    cycle: str,
    *,
    allow_empty: bool = False,
    settings: CloseSettings | None = None,
) -> pa.Table:
    """The invoice lines of a close of ``cycle`` (:func:`run_close`)."""
    return run_close(lake, ref, tariffs, cycle, allow_empty=allow_empty, settings=settings).lines


def run_close(
    lake: Lake,
    ref: ReferenceData,
    tariffs: TariffBook,
    cycle: str,
    *,
    allow_empty: bool = False,
    as_of: int | None = None,
    settings: CloseSettings | None = None,
) -> CloseResult:
    """C1-C4 over the cycle's rated records at one version of ``rated_calls`` (the
    latest, or ``as_of``); replaces the cycle's invoice lines in one commit, each line
    recording that version, and compares them with the previous close (read back by
    time travel: ``invoice_lines`` one version before this commit).

    ``as_of``: reproduce a past close: read ``rated_calls`` at that version and write
    nothing; the lines are compared with the close stored now. With the same reference
    data and tariffs, closing ``as_of`` the ``rated_calls_version`` a close recorded
    gives exactly its lines.

    Out of core: DuckDB aggregates the cycle within ``settings.memory_limit``
    (:mod:`pipeline.lake.cycle_scan`); the rules run on the per-account totals.

    Refuses with :class:`ConfigError`, writing nothing, a malformed ``cycle``, a lake
    that does not exist or has no ``rated_calls`` table, an ``as_of`` that is not a
    readable version of it, an unreadable lake file, and a cycle with no rated records
    (at that version) unless ``allow_empty`` (then the cycle gets an empty invoice
    partition).
    """
    from pipeline.lake.cycle_scan import scan_cycle_totals

    check_cycle(cycle)
    lake.require_existing()
    rated = lake.snapshot(RATED, as_of)
    assert rated is not None  # require_existing
    version = rated.version
    records = rated.count_rows(cycle)
    if records == 0 and not allow_empty:
        known = ", ".join(lake.cycles()) or "none"
        at = f" at {RATED} version {version}" if as_of is not None else ""
        raise ConfigError(
            f"cycle {cycle} has no rated calls{at} in {lake.uri} (cycles with rated calls "
            f"now: {known}); nothing written. Check --cycle, or pass --allow-empty to "
            + ("close it empty anyway" if as_of is not None else "write an empty invoice for it")
        )
    totals = scan_cycle_totals(
        rated, cycle, short_call_bound(tariffs, cycle), settings or CloseSettings()
    )
    lines = invoice_lines(totals, ref, tariffs, cycle, rated_calls_version=version)
    if as_of is not None:
        previous_version = lake.version(INVOICES)
        previous = lake.read_invoice_lines(cycle)
        written = None
    else:
        written = lake.write_invoice_lines(lines, cycle)
        previous_version = written - 1
        previous = lake.read_invoice_lines(cycle, previous_version)
    changes = invoice_changes(previous, lines)
    LOG.info(
        "closed cycle=%s rated_calls_version=%d records=%d lines=%d changed_lines=%d "
        "invoice_lines_version=%s",
        cycle,
        version,
        records,
        lines.num_rows,
        len(changes),
        "none (as of)" if written is None else written,
    )
    return CloseResult(cycle, lines, version, records, written, previous, previous_version, changes)
