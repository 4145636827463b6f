"""Fixtures of the integration tests: real servers on free loopback ports."""

from __future__ import annotations

import gc
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from pipeline.embedded import EmbeddedKafka, embedded_kafka
from pipeline.refdata.files import read_reference_tables
from pipeline.refdata.generate import generate_reference_dir
from tests.integration.object_store import ObjectStore, seaweedfs


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[EmbeddedKafka]:
    """A Kafka-protocol broker (``tansu``, memory storage) for the whole test session."""
    with embedded_kafka() as broker:
        yield broker


@pytest.fixture(scope="session")
def object_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    """A real S3-compatible server (SeaweedFS ``weed mini``) on loopback for the session,
    with one bucket (:mod:`tests.integration.object_store`); killed at the end."""
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as store:
        yield store


@pytest.fixture(scope="session")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Directories A and B: the same ported numbers, each served by another OCN in B."""
    base = tmp_path_factory.mktemp("versions")
    a, b = base / "a", base / "b"
    generate_reference_dir(a, npanxx_rows=2_000, lnp_rows=20_000, ocn_rows=200, seed=5)
    shutil.copytree(a, b)
    ocns = read_reference_tables(a)["ocn"].column("ocn").to_pylist()
    shifted = {o: ocns[(i + 1) % len(ocns)] for i, o in enumerate(ocns)}
    lnp = read_reference_tables(a)["lnp"]
    new_ocn = pa.array([shifted[o] for o in lnp.column("ocn").to_pylist()], pa.string())
    with (b / "lnp.csv").open("wb") as f:
        f.write(b"tn,ocn,lrn\n")
        pacsv.write_csv(
            lnp.set_column(1, "ocn", new_ocn),
            f,
            write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"),
        )
    return a, b


@pytest.fixture(autouse=True)
def _finalize_earlier_clients() -> None:
    """Collect the Kafka clients earlier tests dropped before this test starts one:
    a confluent-kafka client finalized by the garbage collector in the middle of
    another client's ``consume`` runs its callbacks there, and an error in them then
    surfaces in the running service as a ``SystemError`` (seen once in a full run)."""
    gc.collect()
