"""The Redis reference store against a real Redis-protocol server (spec section 2).

Readers must see the old reference set or the new one, never a mix.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.embedded import EmbeddedRedis, embedded_redis
from pipeline.errors import ReferenceDataError, ReferenceStoreError
from pipeline.rating.codes import REGIONS
from pipeline.rating.reference import ReferenceData
from pipeline.refdata.files import (
    SAMPLE_REFDATA_DIR,
    directory_version,
    load_reference_dir,
    read_reference_tables,
)
from pipeline.refdata.generate import generate_reference_dir
from pipeline.refdata.redis_keys import Keys, connect
from pipeline.refdata.redis_load import load_to_redis
from pipeline.refdata.redis_read import (
    RedisReferenceReader,
    VersionChanged,
    read_reference_from_redis,
    read_tables_from_redis,
)

pytestmark = pytest.mark.integration

I64 = npt.NDArray[np.int64]


def names(ref: ReferenceData, index_ocn: npt.NDArray[np.int32]) -> list[str]:
    return [ref.ocns[i] for i in index_ocn.tolist()]


def assert_same_lookups(got: ReferenceData, want: ReferenceData) -> None:
    """Every lookup of the rating core answers the same on both snapshots."""
    assert got.version == want.version
    npa = np.arange(1000)
    assert [REGIONS[r] for r in got.npa_region[npa]] == [REGIONS[r] for r in want.npa_region[npa]]
    assert [got.states[s] if s >= 0 else None for s in got.npa_state.tolist()] == [
        want.states[s] if s >= 0 else None for s in want.npa_state.tolist()
    ]
    for block in ("block6", "block7"):  # 6-digit NPA-NXX and 7-digit thousands blocks
        np.testing.assert_array_equal(getattr(got, block).keys, getattr(want, block).keys)
        g_ocn, w_ocn = getattr(got, f"{block}_ocn"), getattr(want, f"{block}_ocn")
        assert names(got, g_ocn) == names(want, w_ocn)
        g_state, w_state = getattr(got, f"{block}_state"), getattr(want, f"{block}_state")
        assert [got.states[s] for s in g_state] == [want.states[s] for s in w_state]
    for ocn in want.ocns:
        assert got.ocn_category[got.ocns.index(ocn)] == want.ocn_category[want.ocns.index(ocn)]
    assert got.account_ids.to_pylist() == want.account_ids.to_pylist()
    assert got.account_tariff == want.account_tariff
    np.testing.assert_array_equal(got.account_toll_free_micro, want.account_toll_free_micro)
    np.testing.assert_array_equal(got.account_enforce_cap, want.account_enforce_cap)
    numbers = np.asarray([8825551234, 18765550100, 12125550100, 447700900123], dtype=np.int64)
    digits = np.asarray([len(str(n)) for n in numbers.tolist()], dtype=np.int64)
    g_hit = got.blocklist.longest(numbers, digits)
    w_hit = want.blocklist.longest(numbers, digits)
    assert [got.blocklist_reasons[i] if i >= 0 else None for i in g_hit] == [
        want.blocklist_reasons[i] if i >= 0 else None for i in w_hit
    ]


def test_sample_read_back_matches_the_files(redis_client: redis.Redis) -> None:
    """A loaded version reads back with the same lookups as the file-based snapshot."""
    from_files = load_reference_dir(SAMPLE_REFDATA_DIR)
    version = load_to_redis(redis_client, SAMPLE_REFDATA_DIR)
    assert version == from_files.version
    reader = RedisReferenceReader(redis_client)
    assert reader.current_version() == version

    snapshot = reader.snapshot()
    assert_same_lookups(snapshot, from_files)
    assert len(snapshot.lnp) == 0  # resolved per batch

    tns = np.concatenate([from_files.lnp.keys, np.asarray([3129990000, -1], dtype=np.int64)])
    got_version, ocns = reader.lookup_lnp(tns)
    assert got_version == version
    assert ocns == [*names(from_files, from_files.lnp_ocn), None, None]

    enriched = reader.with_lnp(snapshot, tns)
    np.testing.assert_array_equal(enriched.lnp.keys, from_files.lnp.keys)
    assert names(enriched, enriched.lnp_ocn) == names(from_files, from_files.lnp_ocn)

    full = read_reference_from_redis(redis_client)
    assert_same_lookups(full, from_files)
    np.testing.assert_array_equal(full.lnp.keys, from_files.lnp.keys)
    assert names(full, full.lnp_ocn) == names(from_files, from_files.lnp_ocn)
    _, tables = read_tables_from_redis(redis_client)
    assert tables["lnp"].sort_by("tn").equals(read_reference_tables(SAMPLE_REFDATA_DIR)["lnp"])


def test_big_lookup_batches_and_empty_batches(
    redis_client: redis.Redis, two_versions: tuple[Path, Path]
) -> None:
    """One script call answers a 20,000-number batch (HMGET chunked inside Lua)."""
    directory = two_versions[0]
    ref = load_reference_dir(directory)
    load_to_redis(redis_client, directory)
    reader = RedisReferenceReader(redis_client)
    tns = np.concatenate([ref.lnp.keys, ref.lnp.keys[:5]])  # duplicates are fine
    version, ocns = reader.lookup_lnp(tns)
    assert version == ref.version
    want = names(ref, ref.lnp_ocn)
    assert ocns == [*want, *want[:5]]
    assert reader.lookup_lnp(np.empty(0, dtype=np.int64)) == (ref.version, [])


def test_connect(redis_server: EmbeddedRedis) -> None:
    client = connect(redis_server.url)
    assert client.ping()
    client.close()
    with pytest.raises(ReferenceStoreError, match="bad Redis URL"):
        connect("http://127.0.0.1:1")


def test_key_layout(redis_client: redis.Redis) -> None:
    version = load_to_redis(redis_client, SAMPLE_REFDATA_DIR)
    keys = Keys()
    assert redis_client.get("cdr:ref:current") == version.encode()
    assert redis_client.hget(keys.table(version, "npa"), "907") == b"ALASKA|AK"
    assert redis_client.hget(keys.table(version, "npanxx"), "3125551") == b"XC01|IL|IL-RC3121"
    assert redis_client.hget(keys.table(version, "lnp"), "3125551234") == b"XW02|3125550000"
    assert (
        redis_client.hget(keys.table(version, "accounts"), "ACC-1003") == b"standard|false|0.0120"
    )
    assert redis_client.hget(keys.table(version, "meta"), "lnp") == b"300"


def test_reload_of_the_current_version_is_a_no_op(redis_client: redis.Redis) -> None:
    version = load_to_redis(redis_client, SAMPLE_REFDATA_DIR)
    loaded_at = redis_client.hget(Keys().meta(version), "loaded_at")
    assert load_to_redis(redis_client, SAMPLE_REFDATA_DIR) == version
    assert redis_client.hget(Keys().meta(version), "loaded_at") == loaded_at


def test_bad_directory_leaves_the_current_version(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    version = load_to_redis(redis_client, SAMPLE_REFDATA_DIR)
    bad = tmp_path / "bad"
    shutil.copytree(SAMPLE_REFDATA_DIR, bad)
    (bad / "lnp.csv").write_text("tn,ocn,lrn\n123,XR01,2125550000\n", encoding="utf-8")
    with pytest.raises(ReferenceDataError, match=r"lnp\.csv line 2: tn '123'"):
        load_to_redis(redis_client, bad)
    assert RedisReferenceReader(redis_client).current_version() == version


def test_reload_switches_atomically_and_cleans_up(
    redis_server: EmbeddedRedis, redis_client: redis.Redis, two_versions: tuple[Path, Path]
) -> None:
    """Readers polling during repeated A -> B -> A switches get all-A or all-B answers."""
    dir_a, dir_b = two_versions
    version_a, version_b = directory_version(dir_a), directory_version(dir_b)
    assert version_a != version_b
    ref_a, ref_b = load_reference_dir(dir_a), load_reference_dir(dir_b)
    probe = np.concatenate([ref_a.lnp.keys[::10], np.asarray([2000000000], dtype=np.int64)])
    pos_a = ref_a.lnp.find(probe)
    expected = {
        version: [ref.ocns[ref.lnp_ocn[p]] if p >= 0 else None for p in pos_a.tolist()]
        for version, ref in ((version_a, ref_a), (version_b, ref_b))
    }
    assert all(
        x != y
        for x, y in zip(expected[version_a], expected[version_b], strict=True)
        if x is not None
    )

    load_to_redis(redis_client, dir_a)
    seen = {version_a: 0, version_b: 0}
    snapshots = {version_a: 0, version_b: 0}
    failures: list[str] = []
    stop = threading.Event()

    def read_loop() -> None:
        client = redis.Redis.from_url(redis_server.url)
        reader = RedisReferenceReader(client)
        snapshot = reader.snapshot()
        try:
            while not stop.is_set():
                version, ocns = reader.lookup_lnp(probe)
                if ocns != expected.get(version):
                    failures.append(f"mixed or wrong answer for {version}")
                seen[version] += 1
                try:
                    enriched = reader.with_lnp(snapshot, probe)
                except VersionChanged:
                    snapshot = reader.snapshot()  # what a streaming worker does
                    continue
                got = [enriched.ocns[enriched.lnp_ocn[p]] for p in enriched.lnp.find(probe[:-1])]
                if got != expected[snapshot.version][:-1]:
                    failures.append(f"snapshot {snapshot.version} enriched inconsistently")
                snapshots[snapshot.version] += 1
        except Exception as exc:  # reported below, the thread must not die silently
            failures.append(repr(exc))
        finally:
            client.close()

    thread = threading.Thread(target=read_loop, daemon=True)
    thread.start()
    try:
        for directory, version in [(dir_b, version_b), (dir_a, version_a)] * 3:
            before = seen[version]
            assert load_to_redis(redis_client, directory) == version
            deadline = time.monotonic() + 10
            while seen[version] < before + 3 and time.monotonic() < deadline and not failures:
                time.sleep(0.005)
    finally:
        stop.set()
        thread.join(10)
    assert not failures, failures[:5]
    assert seen[version_a] > 3
    assert seen[version_b] > 3
    assert snapshots[version_a] > 0
    assert snapshots[version_b] > 0

    current = RedisReferenceReader(redis_client).current_version()
    assert current == version_a
    version_keys = {k.decode() for k in redis_client.scan_iter("cdr:ref:v:*")}
    assert version_keys == set(Keys().all_of(version_a))
    assert redis_client.smembers(Keys().versions) == {version_a.encode()}


def test_interrupted_load_leftovers_are_removed(redis_client: redis.Redis) -> None:
    keys = Keys()
    redis_client.sadd(keys.versions, "deadbeefdeadbeef")
    redis_client.hset(keys.table("deadbeefdeadbeef", "lnp"), "2125550100", "XR01|2125550000")
    version = load_to_redis(redis_client, SAMPLE_REFDATA_DIR)
    assert not redis_client.exists(keys.table("deadbeefdeadbeef", "lnp"))
    assert redis_client.smembers(keys.versions) == {version.encode()}


def test_a_concurrent_load_is_refused(redis_client: redis.Redis) -> None:
    held = redis_client.lock(Keys().lock, timeout=30)
    assert held.acquire(blocking=False)
    try:
        with pytest.raises(ReferenceStoreError, match="in progress"):
            load_to_redis(redis_client, SAMPLE_REFDATA_DIR)
    finally:
        held.release()
    assert RedisReferenceReader(redis_client).current_version() is None


def test_nothing_loaded_is_a_store_error(redis_client: redis.Redis) -> None:
    reader = RedisReferenceReader(redis_client)
    assert reader.current_version() is None
    with pytest.raises(ReferenceStoreError, match="no reference data"):
        reader.snapshot()
    with pytest.raises(ReferenceStoreError, match="no reference data"):
        reader.lookup_lnp(np.asarray([2125550100], dtype=np.int64))


def test_namespaces_are_independent(redis_client: redis.Redis) -> None:
    version = load_to_redis(redis_client, SAMPLE_REFDATA_DIR, namespace="tenant-a")
    assert RedisReferenceReader(redis_client, namespace="tenant-a").current_version() == version
    assert RedisReferenceReader(redis_client).current_version() is None


def test_redis_down_is_a_reference_store_error() -> None:
    """Connection failures surface as ReferenceStoreError (never a redis-py exception)."""
    with embedded_redis() as server:
        client = redis.Redis.from_url(
            server.url, socket_connect_timeout=1, socket_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        load_to_redis(client, SAMPLE_REFDATA_DIR)
        reader = RedisReferenceReader(client)
        server.stop()
        with pytest.raises(ReferenceStoreError, match="unreachable") as info:
            reader.lookup_lnp(np.asarray([3125551234], dtype=np.int64))
        assert isinstance(info.value.__cause__, redis.ConnectionError)
        assert "3125551234" not in str(info.value)
        with pytest.raises(ReferenceStoreError):
            reader.snapshot()
        with pytest.raises(ReferenceStoreError):
            reader.current_version()
        with pytest.raises(ReferenceStoreError):
            load_to_redis(client, SAMPLE_REFDATA_DIR)
        client.close()


def test_packed_lookup_agrees_with_per_number_lookup(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    """R-CARRIER from Redis: the packed, chunked lookup answers exactly like the
    per-number one (ported, not ported), from one version."""
    generate_reference_dir(tmp_path / "ref", npanxx_rows=2_000, lnp_rows=5_000, seed=3)
    version = load_to_redis(redis_client, tmp_path / "ref")
    reader = RedisReferenceReader(redis_client)
    lines = (tmp_path / "ref" / "lnp.csv").read_text().splitlines()[1:400:3]
    ported = np.asarray([int(line.split(",")[0]) for line in lines], dtype=np.int64)
    tns = np.unique(np.concatenate([ported, ported + 1, np.asarray([2125550100, 9999999999])]))
    v1, one_by_one = reader.lookup_lnp(tns)
    v2, packed = reader.lookup_lnp_array(tns, chunk=50)
    assert v1 == v2 == version
    assert packed.to_pylist() == one_by_one
    assert sum(o is not None for o in one_by_one) >= ported.size
