"""The service sections: ``batch`` (rotation), ``dead_letter``, ``compaction``, ``close``.

Contract: each section is a frozen model that refuses unknown keys and out-of-range
values when the settings are built, so a value that validated is usable by its
consumer as is (:mod:`pipeline.runtime.buffer`, :mod:`pipeline.io.dead_letter_topic`,
:mod:`pipeline.runtime.compaction`, :mod:`pipeline.lake.cycle_scan`). None holds a
secret. The variables (``CDR_BATCH__*``, ...) are described in :mod:`pipeline.settings`.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.errors import ConfigError


class BatchSettings(BaseModel):
    """When a partition's buffered records become a Parquet file (rotation)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_rows: int = Field(200_000, gt=0)
    #: Arrow bytes of one partition's buffer (about 20,000 rated records per 8 MiB; was
    #: 64 MiB): every assigned partition has one, plus the ranges waiting for the
    #: writer, which is what a backlog fills (docs/decisions.md, issue 11).
    max_bytes: int = Field(8 * 1024 * 1024, gt=0)
    max_age_s: float = Field(5.0, gt=0)
    #: Messages per ``consume()``; about two polls are alive at once (one decoding, one
    #: rating). 10,000 (was 20,000) measured as fast and holds less (issue 11).
    poll_max_messages: int = Field(10_000, gt=0)


class DeadLetterSettings(BaseModel):
    """Dead letters on the dead-letter topic (streaming mode).

    ``max_message_bytes`` caps one dead-letter message (key, JSON value and headers).
    A payload that does not fit is carried as a prefix with its size and sha256, and
    kept whole in ``LAKE/dead_letter_payloads/`` (see
    :mod:`pipeline.io.dead_letter_topic`). The default is a quarter of librdkafka's
    ``message.max.bytes`` (1,000,000) and of Kafka's default broker limit.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_message_bytes: int = Field(262_144, ge=16_384, le=64 * 1024 * 1024)


class CompactionSettings(BaseModel):
    """The streaming service's own compaction (:mod:`pipeline.runtime.compaction`).

    Every ``interval_s`` seconds (0: never; a random 0-10 % more, so members started
    together do not compact together) a background thread of ``cdr-pipeline run``
    compacts each billing cycle this member committed to since the last round, if the
    cycle's partition has ``min_files`` files or more below ``target_size``
    (``128MiB``, ``1GiB``, ...), one file at a time on that one thread. It never
    blocks the flush path; see ``cdr-pipeline lake compact`` for the same by hand
    or from a CronJob.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    interval_s: float = Field(3600.0, ge=0)
    min_files: int = Field(100, ge=2)
    target_size: str = "128MiB"

    @field_validator("target_size")
    @classmethod
    def _size(cls, value: str) -> str:
        from pipeline.lake.sizes import parse_size

        try:
            parse_size(value, "compaction.target_size")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0

    @property
    def target_bytes(self) -> int:
        from pipeline.lake.sizes import parse_size

        return parse_size(self.target_size, "compaction.target_size")


_MEMORY = re.compile(r"[0-9]+(?:\.[0-9]+)?\s*(?:[KMGT]i?B)", re.ASCII | re.IGNORECASE)


class CloseSettings(BaseModel):
    """``close-cycle`` out of core (:mod:`pipeline.lake.cycle_scan`): DuckDB aggregates
    the cycle within ``memory_limit`` (DuckDB syntax: ``512MB``, ``1GB``, ``2GiB``) and
    spills what does not fit to ``temp_directory`` (default: a private temporary
    directory, removed afterwards). The process peaks at about the limit plus 0.5 GiB
    (Python, Arrow scan buffers); see ``benchmarks/bench_close.py``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    memory_limit: str = "1GB"
    temp_directory: Path | None = None

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not _MEMORY.fullmatch(value.strip()):
            raise ValueError(
                f"{value!r} is not an amount of memory: a number and a unit, e.g. 512MB, 1GB"
            )
        return value.strip()
