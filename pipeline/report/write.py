"""``cdr-pipeline report`` end to end: read the lake, draw the page, write it atomically."""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.io.lake import Lake
from pipeline.report.data import load_summary
from pipeline.report.model import ReportResult
from pipeline.report.page import render_html


def write_report(
    lake: Lake,
    cycle: str,
    output: Path,
    *,
    top: int = 15,
    now: datetime | None = None,
) -> ReportResult:
    """Write the page of ``cycle`` to ``output`` (temp file, then rename: a reader never
    sees half a page). Raises :class:`ConfigError` for a bad cycle, a cycle with no
    rated records, or an output path that cannot be written."""
    if top < 1:
        raise ConfigError("--top must be at least 1")
    summary = load_summary(lake, cycle)
    page = render_html(
        summary,
        lake_root=lake.root.resolve(),
        generated_at=now or datetime.now(UTC),
        top=top,
    )
    data = page.encode("utf-8")
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, output)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ConfigError(f"--output {output}: cannot write: {exc.strerror or exc}") from exc
    return ReportResult(output, len(data), summary)
