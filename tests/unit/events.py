"""Building call events for unit tests of the core."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from pipeline.rating.columns import EVENT_SCHEMA
from pipeline.rating.rate import RatingResult, conform, rate_batch
from pipeline.rating.tariffs import TariffBook, deep_merge, parse_tariff
from pipeline.tariff_files import DEFAULT_TARIFFS_DIR, load_tariff_dir
from tests.unit.refdata_fixture import tiny_reference

NOV = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)


def event(**fields: Any) -> dict[str, Any]:
    """An answered inbound toll-free call from Alaska on 2026-11-03; override any field."""
    base: dict[str, Any] = {
        "call_id": "c-1",
        "revision": 0,
        "account_id": "ACC-1",
        "trunk_id": "TRK-1",
        "direction": "INBOUND",
        "leg": "ORIGINAL",
        "calling_number": "+19075550100",
        "called_number": "+18005551234",
        "original_calling_number": None,
        "start_time": NOV,
        "duration_ms": 61_200,
        "disposition": "ANSWERED",
        "ani_ii": None,
        "sip_response_code": 200,
        "switch_id": "SW-1",
    }
    base.update(fields)
    return base


def table(*events: dict[str, Any]) -> pa.Table:
    """Events as an :data:`EVENT_SCHEMA` table."""
    return conform(pa.Table.from_pylist(list(events), schema=pa.schema(list(EVENT_SCHEMA)[:15])))


def book(**changes: Any) -> TariffBook:
    """The shipped tariffs, with ``changes`` deep-merged into standard's first version."""
    shipped = load_tariff_dir(DEFAULT_TARIFFS_DIR)
    if not changes:
        return shipped
    import yaml

    doc = yaml.safe_load((DEFAULT_TARIFFS_DIR / "standard.yaml").read_text())
    doc["versions"][0] = deep_merge(doc["versions"][0], changes)
    return TariffBook([parse_tariff(doc, source="test"), shipped["wholesale"]])


def rate(*events: dict[str, Any], tariffs: TariffBook | None = None, **ref: Any) -> RatingResult:
    """Rate events against the tiny reference set and the shipped tariffs."""
    return rate_batch(table(*events), tiny_reference(**ref), tariffs or book())


def one(*events: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """The single rated record of one event (asserts it was not dead-lettered)."""
    result = rate(*events, **kw)
    assert result.dead_letters.num_rows == 0, result.dead_letters.to_pylist()
    rows: list[dict[str, Any]] = result.rated.to_pylist()
    assert len(rows) == 1
    return rows[0]
