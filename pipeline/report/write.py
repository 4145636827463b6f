"""``cdr-pipeline report`` end to end: read the lake, draw the page, write it atomically."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.io.atomic import write_bytes_atomic
from pipeline.lake.lake import Lake
from pipeline.report.data import load_summary
from pipeline.report.model import ReportResult
from pipeline.report.page import render_html


def check_output_outside_lake(output: Path, lake: Lake) -> None:
    """:class:`ConfigError` if ``output`` is the lake or lies inside it, compared as
    resolved paths (symlinks and ``..`` followed, also for a file that does not exist
    yet): a page written into a table directory breaks every later read of the lake.
    An ``s3://`` lake has no local inside."""
    if lake.location.path is None:
        return
    root = lake.location.path.resolve()
    target = output.resolve()
    if target == root or target.is_relative_to(root):
        raise ConfigError(
            f"--output {output} is inside the lake {lake.uri}: write the report outside it"
        )


def write_report(
    lake: Lake,
    cycle: str,
    output: Path,
    *,
    top: int = 15,
    now: datetime | None = None,
) -> ReportResult:
    """Write the page of ``cycle`` to ``output`` whole or not at all
    (:mod:`pipeline.io.atomic`). Raises :class:`ConfigError` for a bad cycle, a cycle with no
    rated records, an output inside the lake, or an output path that cannot be written."""
    if top < 1:
        raise ConfigError("--top must be at least 1")
    check_output_outside_lake(output, lake)
    summary = load_summary(lake, cycle)
    page = render_html(
        summary,
        lake_root=lake.uri,
        generated_at=now or datetime.now(UTC),
        top=top,
    )
    data = page.encode("utf-8")
    try:
        write_bytes_atomic(output, data)
    except OSError as exc:
        raise ConfigError(f"--output {output}: cannot write: {exc.strerror or exc}") from exc
    return ReportResult(output, len(data), summary)
