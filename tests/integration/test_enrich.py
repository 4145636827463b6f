"""The streaming enricher against a real Redis-protocol server (issue 3, item 4):
batched LNP lookups through a local cache that knows the reference-data version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import redis

from pipeline.generate import generate_events
from pipeline.rating.numbers import locate
from pipeline.rating.rate import origin_numbers
from pipeline.rating.reference import ReferenceData
from pipeline.refdata.redis_load import load_to_redis
from pipeline.refdata.redis_read import RedisReferenceReader, read_reference_from_redis
from pipeline.runtime.enrich import Enricher

pytestmark = pytest.mark.integration


def carriers(events: pa.Table, ref: ReferenceData) -> list[str | None]:
    """R-CARRIER of each event's origin number, as OCN names."""
    located = locate(origin_numbers(events), ref)
    return [ref.ocns[i] if i >= 0 else None for i in located.ocn.tolist()]


def test_batches_carry_exactly_the_lnp_of_their_origins(
    redis_client: redis.Redis, two_versions: tuple[Path, Path]
) -> None:
    """Through a tiny cache (constant evictions) and a warm one, each batch's subset
    answers R-CARRIER like the whole LNP table; repeats are served from the cache."""
    directory = two_versions[0]
    load_to_redis(redis_client, directory)
    full = read_reference_from_redis(redis_client)
    events = generate_events(6_000, seed=11, refdata_dir=directory)
    batches = [events.slice(i, 2_000) for i in range(0, events.num_rows, 2_000)]
    for slots in (64, 1 << 16):
        enricher = Enricher(RedisReferenceReader(redis_client), max_cached=slots)
        for _ in range(2):  # cold, then repeated
            for batch in batches:
                ref = enricher.for_batch(batch)
                assert carriers(batch, ref) == carriers(batch, full)
        if slots > 64:
            assert enricher.hit_rate > 0.4  # the second pass was served mostly from the cache
    ported = sum(o is not None for o in carriers(events, full))
    assert ported > 100  # the generated traffic really has ported origins


def test_a_version_switch_drops_the_cache(
    redis_client: redis.Redis, two_versions: tuple[Path, Path]
) -> None:
    """After ``refdata load`` switches versions, no cached answer of the old version is
    used: every ported origin gets its carrier in the new version."""
    dir_a, dir_b = two_versions
    load_to_redis(redis_client, dir_a)
    events = generate_events(3_000, seed=12, refdata_dir=dir_a)
    enricher = Enricher(RedisReferenceReader(redis_client), version_check_s=0.0)
    switched: list[str] = []
    enricher.on_version_change = switched.append
    before = carriers(events, enricher.for_batch(events))
    assert before == carriers(events, read_reference_from_redis(redis_client))
    version_b = load_to_redis(redis_client, dir_b)
    after = carriers(events, enricher.for_batch(events))
    assert switched == [version_b]
    assert after == carriers(events, read_reference_from_redis(redis_client))
    changed = sum(a != b for a, b in zip(before, after, strict=True))
    assert changed > 100  # version B moved every ported number to another OCN
    assert np.isclose(enricher.hit_rate, 0.0)  # nothing of version A was reused
