"""Enrichment failures are infrastructure errors: the service pauses and retries
(docs/architecture.md, Failure handling), never crashes and never dead-letters."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pytest

from pipeline.errors import InfrastructureError, ReferenceStoreError
from pipeline.refdata.redis_read import RedisReferenceReader
from pipeline.runtime.enrich import Enricher
from tests.unit.refdata_fixture import tiny_reference


class FlappingReader:
    """A store whose version switches between every two reads (reloads in a loop)."""

    def __init__(self) -> None:
        self._versions = (f"v{i}" for i in itertools.count())
        self._base = tiny_reference()

    def snapshot(self) -> Any:
        return dataclasses.replace(self._base, version=next(self._versions))

    def current_version(self) -> str:
        return next(self._versions)

    def lookup_lnp_array(self, tns: Any) -> tuple[str, pa.Array]:
        return next(self._versions), pa.array([None] * len(tns), pa.string())


def test_a_version_that_never_settles_is_a_reference_store_outage() -> None:
    """R-CARRIER needs one consistent version per batch; if reloads outpace three
    attempts the batch waits (InfrastructureError -> pause and retry)."""
    enricher = Enricher(cast(RedisReferenceReader, FlappingReader()))
    with pytest.raises(ReferenceStoreError) as caught:
        enricher.for_numbers(np.array([2125550100], dtype=np.int64))
    assert isinstance(caught.value, InfrastructureError)
