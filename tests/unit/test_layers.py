"""The package layout is a contract: the rating core is pure, and the layers import
downwards only (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PIPELINE = Path(__file__).resolve().parents[2] / "pipeline"

#: Modules the pure core must never import (I/O, clock and environment adapters).
FORBIDDEN_IN_CORE = (
    "confluent_kafka",
    "redis",
    "logging",
    "os",
    "duckdb",
    "fastavro",
    "pipeline.refdata",
    "pipeline.io",
    "pipeline.runtime",
    "pipeline.settings",
)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "module", sorted(PIPELINE.joinpath("rating").glob("*.py")), ids=lambda p: p.name
)
def test_rating_core_imports_no_adapter(module: Path) -> None:
    bad = sorted(
        name
        for name in _imports(module)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_IN_CORE)
    )
    assert bad == [], f"{module.name} imports {bad}"


def test_no_import_cycle_between_rating_and_refdata() -> None:
    """The core owns the reference model it consumes; refdata (files, Redis) builds it."""
    for module in PIPELINE.joinpath("rating").glob("*.py"):
        assert not any(n.startswith("pipeline.refdata") for n in _imports(module)), module.name


@pytest.mark.parametrize(
    "module", sorted(PIPELINE.joinpath("avro").glob("*.py")), ids=lambda p: p.name
)
def test_avro_codec_sits_below_the_adapters(module: Path) -> None:
    """pipeline/avro is the codec both adapters share: no Kafka, Redis or adapter."""
    forbidden = ("confluent_kafka", "redis", "pipeline.io", "pipeline.runtime", "pipeline.batch")
    bad = sorted(
        name
        for name in _imports(module)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )
    assert bad == [], f"{module.name} imports {bad}"
