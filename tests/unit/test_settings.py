"""Settings: Kafka TLS/SASL combinations, Redis AUTH/TLS, secret files, and secrets that
never show in ``repr``, errors, logs or ``--help``.

The librdkafka dicts are handed to real ``confluent_kafka`` producers (nothing listens
on their bootstrap port): librdkafka checks every key and loads the CA, certificate and
key files when the client is created, so a wrong key or an unreadable file fails here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import trustme
from confluent_kafka import KafkaException
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from pipeline.cli import main
from pipeline.errors import ConfigError
from pipeline.io import kafka_clients
from pipeline.settings import KafkaSettings, RedisSettings, Settings, load_settings

SASL_SECRET = "sasl-S3cret-0x51"
KEY_SECRET = "key-S3cret-0x52"
REDIS_SECRET = "redis-S3cret-0x53"
#: The part of a password before a ``/`` that was not percent-encoded: what urllib
#: would quote as the "port" in its error message.
FRAGMENT = "frag-0x54"
SECRETS = (SASL_SECRET, KEY_SECRET, REDIS_SECRET, FRAGMENT)


@dataclass(frozen=True)
class Pki:
    """A test CA and a client certificate whose key is encrypted with KEY_SECRET."""

    ca: Path
    cert: Path
    key: Path  # encrypted
    plain_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    issued = ca.issue_cert("cdr-pipeline")
    ca.cert_pem.write_to_path(str(base / "ca.pem"))
    issued.cert_chain_pems[0].write_to_path(str(base / "client.pem"))
    issued.private_key_pem.write_to_path(str(base / "client-plain.key"))
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), password=None)
    (base / "client.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(KEY_SECRET.encode()),
        )
    )
    return Pki(base / "ca.pem", base / "client.pem", base / "client.key", base / "client-plain.key")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CDR_* variable of the calling shell leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("CDR_"):
            monkeypatch.delenv(name)


class Captured(logging.Handler):
    """Every librdkafka log line of one client, as text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def kafka_log() -> Iterator[tuple[logging.Logger, Captured]]:
    logger = logging.getLogger(f"test.librdkafka.{id(object())}")
    logger.propagate = False
    handler = Captured()
    logger.addHandler(handler)
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"a secret leaked into: {text[:200]}"


# ------------------------------------------------------------------------------ Kafka
BOOT = "127.0.0.1:19092"
BASE = {"bootstrap.servers": BOOT, "client.id": "cdr-pipeline"}


def _sasl(mechanism: str) -> dict[str, str]:
    return {"sasl.mechanism": mechanism, "sasl.username": "rater", "sasl.password": SASL_SECRET}


KafkaCase = tuple[dict[str, str], Callable[[Pki], dict[str, str]]]

KAFKA_CASES: dict[str, KafkaCase] = {
    "plaintext": ({}, lambda p: {"security.protocol": "PLAINTEXT"}),
    "ssl-ca": (
        {"SECURITY_PROTOCOL": "SSL", "SSL_CA_LOCATION": "{ca}"},
        lambda p: {
            "security.protocol": "SSL",
            "ssl.ca.location": str(p.ca),
            "ssl.endpoint.identification.algorithm": "https",
        },
    ),
    "ssl-mtls-encrypted-key-no-hostname-check": (
        {
            "SECURITY_PROTOCOL": "SSL",
            "SSL_CA_LOCATION": "{ca}",
            "SSL_CERTIFICATE_LOCATION": "{cert}",
            "SSL_KEY_LOCATION": "{key}",
            "SSL_KEY_PASSWORD": KEY_SECRET,
            "SSL_CHECK_HOSTNAME": "false",
        },
        lambda p: {
            "security.protocol": "SSL",
            "ssl.ca.location": str(p.ca),
            "ssl.certificate.location": str(p.cert),
            "ssl.key.location": str(p.key),
            "ssl.key.password": KEY_SECRET,
            "ssl.endpoint.identification.algorithm": "none",
        },
    ),
    "sasl-plaintext-plain": (
        {
            "SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "SASL_MECHANISM": "PLAIN",
            "SASL_USERNAME": "rater",
            "SASL_PASSWORD": SASL_SECRET,
        },
        lambda p: {"security.protocol": "SASL_PLAINTEXT", **_sasl("PLAIN")},
    ),
    "sasl-plaintext-scram-sha-256": (
        {
            "SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "SASL_MECHANISM": "SCRAM-SHA-256",
            "SASL_USERNAME": "rater",
            "SASL_PASSWORD": SASL_SECRET,
        },
        lambda p: {"security.protocol": "SASL_PLAINTEXT", **_sasl("SCRAM-SHA-256")},
    ),
    "sasl-ssl-scram-sha-512": (
        {
            "SECURITY_PROTOCOL": "SASL_SSL",
            "SASL_MECHANISM": "SCRAM-SHA-512",
            "SASL_USERNAME": "rater",
            "SASL_PASSWORD": SASL_SECRET,
            "SSL_CA_LOCATION": "{ca}",
        },
        lambda p: {
            "security.protocol": "SASL_SSL",
            **_sasl("SCRAM-SHA-512"),
            "ssl.ca.location": str(p.ca),
            "ssl.endpoint.identification.algorithm": "https",
        },
    ),
    "sasl-ssl-lower-case-mtls": (
        {
            "SECURITY_PROTOCOL": "sasl_ssl",
            "SASL_MECHANISM": "scram-sha-256",
            "SASL_USERNAME": "rater",
            "SASL_PASSWORD": SASL_SECRET,
            "SSL_CERTIFICATE_LOCATION": "{cert}",
            "SSL_KEY_LOCATION": "{plain_key}",
        },
        lambda p: {
            "security.protocol": "SASL_SSL",
            **_sasl("SCRAM-SHA-256"),
            "ssl.certificate.location": str(p.cert),
            "ssl.key.location": str(p.plain_key),
            "ssl.endpoint.identification.algorithm": "https",
        },
    ),
}


def _set_kafka_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], pki: Pki) -> None:
    files = {"ca": pki.ca, "cert": pki.cert, "key": pki.key, "plain_key": pki.plain_key}
    monkeypatch.setenv("CDR_KAFKA__BROKERS", BOOT)
    for name, value in env.items():
        monkeypatch.setenv(f"CDR_KAFKA__{name}", value.format(**files))


@pytest.mark.parametrize("case", list(KAFKA_CASES))
def test_client_config_per_combination(
    case: str,
    pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
    kafka_log: tuple[logging.Logger, Captured],
) -> None:
    """Each supported combination gives exactly the expected librdkafka keys, and
    librdkafka accepts them (loading CA, certificate and encrypted key)."""
    env, expected = KAFKA_CASES[case]
    _set_kafka_env(monkeypatch, env, pki)
    kafka = load_settings().kafka
    assert kafka.client_config() == {**BASE, **expected(pki)}

    logger, captured = kafka_log
    producer = kafka_clients.producer(kafka, logger=logger)
    producer.flush(0)
    assert_no_secret(repr(kafka), str(kafka), *captured.lines)


def test_wrong_key_password_fails_without_showing_it(
    pki: Pki, kafka_log: tuple[logging.Logger, Captured]
) -> None:
    kafka = KafkaSettings(
        brokers=BOOT,
        security_protocol="SSL",
        ssl_ca_location=pki.ca,
        ssl_certificate_location=pki.cert,
        ssl_key_location=pki.key,
        ssl_key_password="wrong-" + SASL_SECRET,
    )
    logger, captured = kafka_log
    with pytest.raises(KafkaException, match=r"ssl\.key\.location") as caught:
        kafka_clients.producer(kafka, logger=logger)
    assert_no_secret(str(caught.value), *captured.lines)
    assert "wrong-" not in str(caught.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"SECURITY_PROTOCOL": "SASL_SSL", "SASL_USERNAME": "u", "SASL_PASSWORD": SASL_SECRET},
            "security_protocol SASL_SSL needs sasl_mechanism (PLAIN, SCRAM-SHA-256 or "
            "SCRAM-SHA-512), sasl_username and sasl_password; missing: sasl_mechanism",
        ),
        (
            {"SECURITY_PROTOCOL": "SASL_PLAINTEXT", "SASL_MECHANISM": "PLAIN"},
            "missing: sasl_username, sasl_password",
        ),
        (
            {"SASL_PASSWORD": SASL_SECRET},
            "kafka: sasl_password set but security_protocol is PLAINTEXT, which does not "
            "authenticate: use SASL_SSL (or SASL_PLAINTEXT)",
        ),
        (
            {"SECURITY_PROTOCOL": "SSL", "SASL_MECHANISM": "PLAIN", "SASL_USERNAME": "u"},
            "sasl_mechanism, sasl_username set but security_protocol is SSL",
        ),
        (
            {
                "SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "SASL_MECHANISM": "PLAIN",
                "SASL_USERNAME": "u",
                "SASL_PASSWORD": SASL_SECRET,
                "SSL_CA_LOCATION": "{ca}",
            },
            "ssl_ca_location set but security_protocol is SASL_PLAINTEXT, which does not use "
            "TLS: use SSL or SASL_SSL",
        ),
        (
            {"SECURITY_PROTOCOL": "SSL", "SSL_CA_LOCATION": "/nonexistent/ca.pem"},
            "kafka.ssl_ca_location: /nonexistent/ca.pem: no such file or directory",
        ),
        (
            {"SECURITY_PROTOCOL": "SSL", "SSL_KEY_LOCATION": "/nonexistent/client.key"},
            "kafka.ssl_key_location: /nonexistent/client.key: no such file",
        ),
        (
            {"SECURITY_PROTOCOL": "SSL", "SSL_CERTIFICATE_LOCATION": "{cert}"},
            "a client certificate needs both ssl_certificate_location and ssl_key_location",
        ),
        (
            {"SECURITY_PROTOCOL": "SSL", "SSL_KEY_PASSWORD": KEY_SECRET},
            "ssl_key_password set without ssl_key_location",
        ),
        (
            {
                "SECURITY_PROTOCOL": "SASL_SSL",
                "SASL_MECHANISM": "GSSAPI",
                "SASL_USERNAME": "u",
                "SASL_PASSWORD": SASL_SECRET,
            },
            "kafka.sasl_mechanism: Input should be 'PLAIN', 'SCRAM-SHA-256' or 'SCRAM-SHA-512'",
        ),
        ({"SECURITY_PROTOCOL": "TLS"}, "kafka.security_protocol: Input should be"),
    ],
    ids=[
        "sasl-without-mechanism",
        "sasl-without-credentials",
        "password-without-sasl",
        "sasl-fields-with-ssl",
        "tls-file-without-tls",
        "missing-ca",
        "missing-key",
        "certificate-without-key",
        "key-password-without-key",
        "unsupported-mechanism",
        "unknown-protocol",
    ],
)
def test_bad_kafka_combinations_are_refused_at_build_time(
    env: dict[str, str], message: str, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set_kafka_env(monkeypatch, env, pki)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert message in str(caught.value)
    assert_no_secret(str(caught.value))


def test_direct_construction_errors_hide_inputs() -> None:
    """Built without :func:`load_settings` (tests, demo), a ValidationError is raised,
    and it carries no input values either."""
    with pytest.raises(ValidationError) as caught:
        KafkaSettings(security_protocol="SASL_SSL", sasl_password=SASL_SECRET)
    assert "missing: sasl_mechanism, sasl_username" in str(caught.value)
    assert_no_secret(str(caught.value), repr(caught.value))


# ------------------------------------------------------------------------------ Redis
def _kwargs(settings: RedisSettings) -> tuple[type[Any], dict[str, Any]]:
    client = settings.client()
    pool = client.connection_pool
    return pool.connection_class, pool.connection_kwargs


def test_redis_tls_and_auth_reach_the_client(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDR_REDIS__URL", "rediss://redis.internal:6380/2")
    monkeypatch.setenv("CDR_REDIS__USERNAME", "rater")
    monkeypatch.setenv("CDR_REDIS__PASSWORD", REDIS_SECRET)
    monkeypatch.setenv("CDR_REDIS__SSL_CA_CERTS", str(pki.ca))
    monkeypatch.setenv("CDR_REDIS__SSL_CERTFILE", str(pki.cert))
    monkeypatch.setenv("CDR_REDIS__SSL_KEYFILE", str(pki.key))
    monkeypatch.setenv("CDR_REDIS__SSL_KEY_PASSWORD", KEY_SECRET)
    monkeypatch.setenv("CDR_REDIS__SSL_CHECK_HOSTNAME", "false")
    settings = load_settings().redis
    cls, kw = _kwargs(settings)
    assert issubclass(cls, redis.SSLConnection)
    assert (kw["host"], kw["port"], kw["db"]) == ("redis.internal", 6380, 2)
    assert (kw["username"], kw["password"]) == ("rater", REDIS_SECRET)
    assert kw["ssl_ca_certs"] == str(pki.ca)
    assert (kw["ssl_certfile"], kw["ssl_keyfile"]) == (str(pki.cert), str(pki.key))
    assert kw["ssl_password"] == KEY_SECRET
    assert kw["ssl_check_hostname"] is False
    assert kw["socket_timeout"] == kw["socket_connect_timeout"] == 5.0
    assert settings.uses_tls
    assert_no_secret(repr(settings), repr(settings.client()))


def test_tls_flag_upgrades_a_redis_url(pki: Pki) -> None:
    cls, kw = _kwargs(RedisSettings(url="redis://127.0.0.1:6379/0", tls=True, ssl_ca_certs=pki.ca))
    assert issubclass(cls, redis.SSLConnection)
    assert kw["ssl_check_hostname"] is True


def test_plain_redis_has_no_tls_and_no_auth() -> None:
    settings = RedisSettings()
    cls, kw = _kwargs(settings)
    assert not issubclass(cls, redis.SSLConnection)
    assert "password" not in kw
    assert not any(k.startswith("ssl_") for k in kw)
    assert not settings.uses_tls


def test_credentials_in_the_url() -> None:
    """A password in the URL works (percent-encoded) and may repeat the field's value."""
    url = "redis://rater:p%40ss%2Fw%23rd@127.0.0.1:6379/0"
    _, kw = _kwargs(RedisSettings(url=url))
    assert (kw["username"], kw["password"]) == ("rater", "p@ss/w#rd")
    _, kw = _kwargs(RedisSettings(url=url, password="p@ss/w#rd"))
    assert kw["password"] == "p@ss/w#rd"
    # the user in the URL, the password from its own (secret) setting
    _, kw = _kwargs(RedisSettings(url="redis://rater@h:1/0", password=REDIS_SECRET))
    assert (kw["username"], kw["password"]) == ("rater", REDIS_SECRET)


def test_redacted_url() -> None:
    settings = RedisSettings(
        url=f"rediss://rater:{REDIS_SECRET}@h:6380/1?password={REDIS_SECRET}&db=1"
    )
    assert settings.redacted_url == "rediss://rater:***@h:6380/1?password=***&db=1"
    assert RedisSettings().redacted_url == "redis://127.0.0.1:6379/0"
    assert RedisSettings(url="redis://rater@h/0", password="x").redacted_url == "redis://rater@h/0"


@pytest.mark.parametrize(
    ("redis_flags", "message"),
    [
        ({"url": f"redis://:{FRAGMENT}/x{REDIS_SECRET}@h:6379/0"}, "redis.url: not a valid URL"),
        ({"url": f"redis://:{REDIS_SECRET}#x@h/0"}, "redis.url: not a valid URL"),
        ({"url": f"http://:{REDIS_SECRET}@h/0"}, "redis.url: the scheme must be redis://"),
        ({"url": "REDISS://h/0"}, "redis.url: the scheme must be redis://"),
        ({"url": f"redis://:{REDIS_SECRET}@/0"}, "redis.url: no host in the URL"),
        ({"url": f"redis://:{REDIS_SECRET}@h/zero"}, "redis.url: the database (URL path)"),
        ({"url": "unix://"}, "redis.url: a unix:// URL needs the socket path"),
        (
            {"url": f"redis://:{REDIS_SECRET}@h/0", "password": "other"},
            "redis: password differs from the password in url: give it once",
        ),
        (
            {"url": f"redis://h/0?password={REDIS_SECRET}", "password": "other"},
            "password differs from the password in url",
        ),
        (
            {"url": "redis://alice@h/0", "username": "bob", "password": REDIS_SECRET},
            "redis: username differs from the user in url",
        ),
        ({"username": "rater"}, "redis: a username (Redis ACL user) needs a password"),
        (
            {"ssl_ca_certs": "{ca}"},
            "redis: ssl_ca_certs set but the connection does not use TLS: use a rediss:// "
            "URL or tls=true",
        ),
        ({"url": "rediss://h/0", "ssl_ca_certs": "/nonexistent/ca.pem"}, "no such file"),
        ({"url": "rediss://h/0", "ssl_keyfile": "{key}"}, "ssl_keyfile set without ssl_certfile"),
        (
            {"url": "rediss://h/0", "ssl_key_password": KEY_SECRET},
            "ssl_key_password set without ssl_certfile",
        ),
        ({"url": "unix:///run/redis.sock", "tls": True}, "tls with a unix:// socket"),
    ],
    ids=[
        "slash-in-password",
        "hash-in-password",
        "scheme",
        "upper-case-scheme",
        "no-host",
        "db-not-a-number",
        "unix-without-path",
        "two-passwords",
        "query-password",
        "two-users",
        "user-without-password",
        "ca-without-tls",
        "missing-ca",
        "key-without-cert",
        "key-password-without-key",
        "tls-on-unix-socket",
    ],
)
def test_bad_redis_settings_are_refused_without_the_secret(
    redis_flags: dict[str, Any], message: str, pki: Pki
) -> None:
    flags = {
        k: v.format(ca=pki.ca, key=pki.key) if isinstance(v, str) and k.startswith("ssl_") else v
        for k, v in redis_flags.items()
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(redis=flags)
    assert message in str(caught.value)
    assert_no_secret(str(caught.value))
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__  # tracebacks do not show the ValidationError


def test_redis_url_errors_hide_inputs_on_direct_construction() -> None:
    with pytest.raises(ValidationError) as caught:
        RedisSettings(url=f"redis://:{FRAGMENT}/{REDIS_SECRET}@h/0")
    assert "not a valid URL" in str(caught.value)
    assert_no_secret(str(caught.value), repr(caught.value))


# ------------------------------------------------------------------------------ secrets
def _all_secrets_env(monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    monkeypatch.setenv("CDR_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CDR_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("CDR_KAFKA__SASL_USERNAME", "rater")
    monkeypatch.setenv("CDR_KAFKA__SASL_PASSWORD", SASL_SECRET)
    monkeypatch.setenv("CDR_KAFKA__SSL_CERTIFICATE_LOCATION", str(pki.cert))
    monkeypatch.setenv("CDR_KAFKA__SSL_KEY_LOCATION", str(pki.key))
    monkeypatch.setenv("CDR_KAFKA__SSL_KEY_PASSWORD", KEY_SECRET)
    monkeypatch.setenv("CDR_REDIS__URL", f"rediss://:{REDIS_SECRET}@h:6380/0")


def test_settings_never_show_secrets(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    _all_secrets_env(monkeypatch, pki)
    settings = load_settings()
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == SASL_SECRET
    assert settings.redis.url.get_secret_value().startswith(f"rediss://:{REDIS_SECRET}@")
    assert_no_secret(
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        str(settings.model_dump()),
        repr(settings.redis.client()),
        settings.redis.redacted_url,
    )


def test_secrets_dir_fills_nested_fields(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One file per setting, named like the variable without ``CDR_``; the trailing
    newline of ``echo secret > file`` is dropped; unrelated files are ignored."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "kafka__sasl_password").write_text(SASL_SECRET + "\n")
    (secrets / "kafka__ssl_key_password").write_text(KEY_SECRET)
    (secrets / "redis__password").write_text(REDIS_SECRET + "\n")
    (secrets / "redis__url").write_text("rediss://redis.internal:6380/0\n")
    (secrets / "tls.crt").write_text("not a setting")  # e.g. another key of the same secret
    monkeypatch.setenv("CDR_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("CDR_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CDR_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("CDR_KAFKA__SASL_USERNAME", "rater")
    monkeypatch.setenv("CDR_KAFKA__SSL_CERTIFICATE_LOCATION", str(pki.cert))
    monkeypatch.setenv("CDR_KAFKA__SSL_KEY_LOCATION", str(pki.key))
    settings = load_settings()
    conf = settings.kafka.client_config()
    assert (conf["sasl.password"], conf["ssl.key.password"]) == (SASL_SECRET, KEY_SECRET)
    assert settings.redis.password is not None
    assert settings.redis.password.get_secret_value() == REDIS_SECRET
    assert settings.redis.redacted_url == "rediss://redis.internal:6380/0"
    assert_no_secret(repr(settings))

    monkeypatch.setenv("CDR_REDIS__PASSWORD", "from-env")  # the environment wins
    password = load_settings().redis.password
    assert password is not None
    assert password.get_secret_value() == "from-env"


def test_secrets_dir_typo_and_absence_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "redis__pasword").write_text(REDIS_SECRET)
    monkeypatch.setenv("CDR_SECRETS_DIR", str(tmp_path))
    with pytest.raises(
        ConfigError, match=r"redis\.pasword: Extra inputs are not permitted"
    ) as caught:
        load_settings()
    assert_no_secret(str(caught.value))
    monkeypatch.setenv("CDR_SECRETS_DIR", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match=r"CDR_SECRETS_DIR=.*absent: no such directory"):
        load_settings()


def test_unparsable_source_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDR_KAFKA", f'{{"sasl_password": "{SASL_SECRET}"')  # broken JSON
    with pytest.raises(ConfigError, match='error parsing value for field "kafka"') as caught:
        load_settings()
    assert_no_secret(str(caught.value))


@pytest.mark.parametrize("argv", [["run", "--help"], ["refdata", "load", "--help"]])
def test_help_shows_no_secret(
    argv: list[str], pki: Pki, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _all_secrets_env(monkeypatch, pki)
    monkeypatch.setenv("CDR_REDIS__PASSWORD", REDIS_SECRET)
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 0
    out, err = capsys.readouterr()
    assert "--redis" in out
    assert_no_secret(out, err)


def test_deploy_variables_keep_their_meaning(monkeypatch: pytest.MonkeyPatch) -> None:
    """The names other code and the deploy files use are unchanged."""
    assert Settings().kafka.client_config() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "PLAINTEXT",
        "client.id": "cdr-pipeline",
    }
    for name, value in {
        "CDR_KAFKA__BROKERS": "kafka:9092",
        "CDR_KAFKA__SECURITY_PROTOCOL": "PLAINTEXT",
        "CDR_REDIS__URL": "redis://redis:6379/0",
        "CDR_REDIS__PASSWORD": REDIS_SECRET,
        "CDR_REDIS__NAMESPACE": "cdr:ref",
        "CDR_METRICS_PORT": "9108",
        "CDR_BATCH__MAX_ROWS": "700",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.kafka.brokers == "kafka:9092"
    assert settings.redis.redacted_url == "redis://redis:6379/0"
    assert settings.redis.password is not None
    assert settings.redis.password.get_secret_value() == REDIS_SECRET
    assert (settings.metrics_port, settings.batch.max_rows) == (9108, 700)
    # compose's refdata-load passes the same password in a --redis URL as well
    same = load_settings(redis={"url": f"redis://:{REDIS_SECRET}@redis:6379/0"})
    assert same.redis.client().connection_pool.connection_kwargs["password"] == REDIS_SECRET
