"""Issue 10 #7: credentials in ``--schema-registry`` never reach the console or the
logs, with a real broker, so ``produce`` gets as far as the registry: a refused URL
(exit 2, before any topic is created) and an unreachable registry (exit 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.embedded import EmbeddedKafka, free_port
from pipeline.generate import write_generated
from pipeline.refdata.files import SAMPLE_REFDATA_DIR

SECRET = "s3cr3t"


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("registry") / "events.avro"
    write_generated(path, 50, seed=3, refdata_dir=SAMPLE_REFDATA_DIR)
    return path


def _produce(
    kafka_broker: EmbeddedKafka, registry: str, topic: str, events: Path
) -> list[str | int]:
    return [
        "produce",
        "--brokers",
        kafka_broker.bootstrap,
        "--topic",
        topic,
        "--schema-registry",
        registry,
        "--partitions",
        "1",
        str(events),
    ]


def test_unreachable_registry_hides_its_password(
    kafka_broker: EmbeddedKafka, events: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = f"http://svc:{SECRET}@127.0.0.1:{free_port()}"
    argv = _produce(kafka_broker, registry, "registry-down", events)
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert rc == 3
    assert "schema registry http://127.0.0.1:" in output
    assert "unreachable" in output
    assert SECRET not in output
    assert "Traceback" not in output


def test_refused_registry_url_hides_its_password(
    kafka_broker: EmbeddedKafka, events: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for registry in (f"ftp://svc:{SECRET}@host:8081", f"http://svc:{SECRET}@host:port"):
        rc = main([str(a) for a in _produce(kafka_broker, registry, "registry-bad", events)])
        captured = capsys.readouterr()
        output = captured.out + captured.err
        assert rc == 2
        assert "schema_registry" in output
        assert SECRET not in output
        assert "Traceback" not in output
