"""Typed settings for the streaming service: the only reader of environment variables.

Built once at start-up (:func:`load_settings`) and passed down, frozen. Sources, the
first one that sets a value wins:

1. command-line flags,
2. environment variables ``CDR_<NAME>``; nested with ``__``, e.g.
   ``CDR_KAFKA__SASL_PASSWORD``, ``CDR_REDIS__URL``,
3. a settings file (YAML) given with ``--config`` or ``CDR_CONFIG``,
4. secret files in the directory ``CDR_SECRETS_DIR``: one file per setting, named like
   the variable without ``CDR_`` (case-insensitive), e.g. ``redis__password``,
   ``kafka__sasl_password``; the content is the value, surrounding whitespace and the
   final newline stripped. This is the layout of a Kubernetes secret volume or of
   Docker's ``/run/secrets``. A ``CDR_SECRETS_DIR`` that does not exist is refused.
5. the defaults below.

Security settings. Each can also be a file of ``CDR_SECRETS_DIR`` (second column);
that is the place for the secrets, marked *:

=======================================  ===================================  =================================
environment variable                     file in ``CDR_SECRETS_DIR``          meaning
=======================================  ===================================  =================================
``CDR_KAFKA__SECURITY_PROTOCOL``         ``kafka__security_protocol``         ``PLAINTEXT`` (default), ``SSL``,
                                                                              ``SASL_PLAINTEXT``, ``SASL_SSL``
``CDR_KAFKA__SASL_MECHANISM``            ``kafka__sasl_mechanism``            ``PLAIN``, ``SCRAM-SHA-256``,
                                                                              ``SCRAM-SHA-512``
``CDR_KAFKA__SASL_USERNAME``             ``kafka__sasl_username``             SASL user
``CDR_KAFKA__SASL_PASSWORD`` *           ``kafka__sasl_password``             SASL password
``CDR_KAFKA__SSL_CA_LOCATION``           ``kafka__ssl_ca_location``           CA bundle: PEM file, directory
                                                                              or ``probe`` (system CAs)
``CDR_KAFKA__SSL_CERTIFICATE_LOCATION``  ``kafka__ssl_certificate_location``  client certificate (mTLS)
``CDR_KAFKA__SSL_KEY_LOCATION``          ``kafka__ssl_key_location``          client key (mTLS)
``CDR_KAFKA__SSL_KEY_PASSWORD`` *        ``kafka__ssl_key_password``          password of that key
``CDR_KAFKA__SSL_CHECK_HOSTNAME``        ``kafka__ssl_check_hostname``        verify the broker's name
                                                                              (default true)
``CDR_REDIS__URL`` *                     ``redis__url``                       ``redis://``, ``rediss://`` (TLS)
                                                                              or ``unix://``; may hold
                                                                              ``user:password@``
``CDR_REDIS__USERNAME``                  ``redis__username``                  ACL user (Redis 6+)
``CDR_REDIS__PASSWORD`` *                ``redis__password``                  AUTH password
``CDR_REDIS__TLS``                       ``redis__tls``                       TLS with a ``redis://`` URL
``CDR_REDIS__SSL_CA_CERTS``              ``redis__ssl_ca_certs``              CA bundle (PEM)
``CDR_REDIS__SSL_CERTFILE``              ``redis__ssl_certfile``              client certificate (mTLS)
``CDR_REDIS__SSL_KEYFILE``               ``redis__ssl_keyfile``               client key (mTLS)
``CDR_REDIS__SSL_KEY_PASSWORD`` *        ``redis__ssl_key_password``          password of that key
``CDR_REDIS__SSL_CHECK_HOSTNAME``        ``redis__ssl_check_hostname``        verify the server's name
                                                                              (default true)
``CDR_SCHEMA_REGISTRY`` *                ``schema_registry``                  ``http(s)://host[:port]``; may
                                                                              hold ``user:password@``
                                                                              (HTTP basic auth)
``CDR_LAKE__S3_ENDPOINT``               ``lake__s3_endpoint``                S3-compatible store URL
                                                                              (else ``AWS_ENDPOINT_URL``)
``CDR_LAKE__S3_REGION``                 ``lake__s3_region``                  (else ``AWS_REGION``)
``CDR_LAKE__S3_ACCESS_KEY_ID``          ``lake__s3_access_key_id``           (else ``AWS_ACCESS_KEY_ID``)
``CDR_LAKE__S3_SECRET_ACCESS_KEY`` *    ``lake__s3_secret_access_key``       (else ``AWS_SECRET_ACCESS_KEY``)
``CDR_LAKE__S3_SESSION_TOKEN`` *        ``lake__s3_session_token``           (else ``AWS_SESSION_TOKEN``)
``CDR_LAKE__S3_ALLOW_HTTP``             ``lake__s3_allow_http``              allow an ``http://`` endpoint
``CDR_CLOSE__MEMORY_LIMIT``              ``close__memory_limit``              ``close-cycle``: DuckDB memory
                                                                              (default 1GB; spills past it)
``CDR_CLOSE__TEMP_DIRECTORY``            ``close__temp_directory``            ``close-cycle``: where DuckDB
                                                                              spills (default: a private
                                                                              temporary directory)
=======================================  ===================================  =================================

Combinations are checked when the settings are built, so a bad one refuses to start
with a message naming it (:class:`~pipeline.errors.ConfigError`): a ``SASL_*`` protocol
needs mechanism, username and password; SASL or TLS settings with a protocol that
does not use them are refused rather than silently ignored; every certificate or key
file must exist; a client key needs its certificate. ``SASL_PLAINTEXT`` with ``PLAIN``
sends the password in clear: use it on trusted networks only.

Secrets are :class:`~pydantic.SecretStr`: never shown by ``repr``, logs, ``--help`` or
errors (validation errors never carry input values, and a malformed Redis URL is
reported without its text). A password inside ``CDR_REDIS__URL`` is as secret as
``CDR_REDIS__PASSWORD``, and so are the credentials inside ``CDR_SCHEMA_REGISTRY``;
reserved characters in them (``/ # ? @ :``) must be percent-encoded. Messages that
name such a URL show :func:`redact_url` of it. Prefer the password field or a secret file to a URL on a command
line, which other users of the machine can read in the process list.
:meth:`KafkaSettings.client_config` is the one place that builds the librdkafka dict,
:meth:`RedisSettings.client` the one place the service and the CLI build their Redis
clients.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    import redis

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def _existing(path: Path | None, *, directory_ok: bool = False) -> Path | None:
    """``path`` when it names an existing file (or directory); ``ValueError`` otherwise."""
    if path is None:
        return None
    if path.is_file() or (directory_ok and path.is_dir()):
        return path
    raise ValueError(f"{path}: no such file{' or directory' if directory_ok else ''}")


class KafkaSettings(BaseModel):
    """Kafka connection: brokers, TLS and SASL (see the table in the module docstring).

    Raises ``ValidationError`` (:class:`ConfigError` through :func:`load_settings`) for
    an inconsistent combination; an instance is always usable by :meth:`client_config`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    brokers: str = "127.0.0.1:9092"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    session_timeout_ms: int = Field(6000, ge=1000)
    client_id: str = "cdr-pipeline"
    #: librdkafka ``queued.min.messages``: messages per partition the consumer keeps
    #: fetched ahead. The default 100,000 left ``consume()`` waiting on fetches at about
    #: 160k msg/s here; 500,000 lifts that ceiling past 400k msg/s. With the default
    #: ``prefetch_max_kbytes`` the byte cap is reached first (about 45,000 messages).
    prefetch_messages: int = Field(500_000, ge=1)
    #: librdkafka ``queued.max.messages.kbytes``: the memory cap of that prefetch queue
    #: (one queue for all partitions), which bounds what ``prefetch_messages`` costs.
    #: 8 MB (was 64 MB): on a backlog the queue is full all the time and costs about
    #: 7x its cap in resident memory (docs/decisions.md, issue 11). A full queue is
    #: refilled after 10 ms (``kafka_clients.FETCH_QUEUE_BACKOFF_MS``), not 1 s.
    prefetch_max_kbytes: int = Field(8_192, ge=1024)

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        """``sasl_ssl`` -> ``SASL_SSL`` (librdkafka ignores case; the literals do not)."""
        return value.upper() if isinstance(value, str) else value

    @field_validator("ssl_ca_location")
    @classmethod
    def _ca_exists(cls, value: Path | None) -> Path | None:
        if value is not None and str(value) == "probe":  # librdkafka: search system paths
            return value
        return _existing(value, directory_ok=True)

    @field_validator("ssl_certificate_location", "ssl_key_location")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        return _existing(value)

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol.endswith("SSL")

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSettings:
        protocol = self.security_protocol
        sasl = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_username": self.sasl_username,
            "sasl_password": self.sasl_password,
        }
        if self.uses_sasl:
            missing = [name for name, value in sasl.items() if not value]
            if missing:
                raise ValueError(
                    f"security_protocol {protocol} needs sasl_mechanism (PLAIN, SCRAM-SHA-256 "
                    f"or SCRAM-SHA-512), sasl_username and sasl_password; missing: "
                    f"{', '.join(missing)}"
                )
        elif given := [name for name, value in sasl.items() if value]:
            raise ValueError(
                f"{', '.join(given)} set but security_protocol is {protocol}, which does not "
                f"authenticate: use SASL_SSL (or SASL_PLAINTEXT)"
            )
        tls = {
            "ssl_ca_location": self.ssl_ca_location,
            "ssl_certificate_location": self.ssl_certificate_location,
            "ssl_key_location": self.ssl_key_location,
            "ssl_key_password": self.ssl_key_password,
        }
        if not self.uses_tls and (given := [name for name, value in tls.items() if value]):
            raise ValueError(
                f"{', '.join(given)} set but security_protocol is {protocol}, which does not "
                f"use TLS: use SSL or SASL_SSL"
            )
        if bool(self.ssl_certificate_location) != bool(self.ssl_key_location):
            raise ValueError(
                "a client certificate needs both ssl_certificate_location and ssl_key_location"
            )
        if self.ssl_key_password and not self.ssl_key_location:
            raise ValueError("ssl_key_password set without ssl_key_location")
        return self

    def client_config(self) -> dict[str, Any]:
        """The librdkafka configuration common to producers, consumers and admin.

        ``bootstrap.servers``, ``security.protocol`` and ``client.id`` always;
        ``sasl.mechanism``/``sasl.username``/``sasl.password`` with a ``SASL_*``
        protocol; ``ssl.*`` (and ``ssl.endpoint.identification.algorithm``: ``https``,
        or ``none`` when ``ssl_check_hostname`` is false) with ``SSL``/``SASL_SSL``.
        The dict holds secrets in clear: hand it to the client, never log it.
        """
        conf: dict[str, Any] = {
            "bootstrap.servers": self.brokers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
        }
        if self.uses_sasl:
            if not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
                # unreachable for a validated instance (model_construct skips validation)
                raise ConfigError(
                    "kafka: SASL needs sasl_mechanism, sasl_username and sasl_password"
                )
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.uses_tls:
            optional = {
                "ssl.ca.location": self.ssl_ca_location,
                "ssl.certificate.location": self.ssl_certificate_location,
                "ssl.key.location": self.ssl_key_location,
                "ssl.key.password": self.ssl_key_password.get_secret_value()
                if self.ssl_key_password
                else None,
            }
            conf.update({k: str(v) for k, v in optional.items() if v is not None})
            conf["ssl.endpoint.identification.algorithm"] = (
                "https" if self.ssl_check_hostname else "none"
            )
        return conf


#: Query parameters of a Redis URL whose values are secret (redis-py passes any
#: unknown parameter, ``password`` included, to the connection).
_SECRET_QUERY_KEYS = ("password", "ssl_password")


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo and secret query values replaced by
    ``***`` (``http://u:***@host:8081``): safe to log or print. A URL too malformed to
    split is not echoed at all."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        userinfo = f"{user}:***" if colon else user
    query = "&".join(
        f"{k}={'***' if k in _SECRET_QUERY_KEYS else v}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    netloc = f"{userinfo}{at}{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def check_registry_url(url: str) -> str:
    """``url`` if it is a usable Schema Registry URL, ``http(s)://[user:password@]host[:port]
    [/path]``; ``ValueError`` otherwise, whose message never quotes the URL (it may hold a
    password)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(
            "the schema registry URL is not a valid URL (a bad port or IPv6 address; "
            "percent-encode / # ? @ : inside a password)"
        ) from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("the schema registry URL must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("the schema registry URL has no host")
    if port == 0:
        raise ValueError("port 0 in the schema registry URL")
    return url


class RedisSettings(BaseModel):
    """Redis connection: URL (``redis://``, ``rediss://`` for TLS, ``unix://``), AUTH and
    TLS files (see the table in the module docstring).

    The password may be in ``url`` or in ``password``; given in both, they must agree
    (same for the username). Raises ``ValidationError`` (:class:`ConfigError` through
    :func:`load_settings`) for a malformed URL, without echoing it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ssl_ca_certs: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    socket_timeout_s: float = Field(5.0, gt=0)
    namespace: str = "cdr:ref"

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: SecretStr) -> SecretStr:
        # Messages never quote the URL: it may hold the password.
        raw = value.get_secret_value()
        if not raw.startswith(("redis://", "rediss://", "unix://")):  # as redis-py checks
            raise ValueError("the scheme must be redis://, rediss:// (TLS) or unix://")
        try:
            parts = urlsplit(raw)
            port = parts.port
        except ValueError:
            raise ValueError(
                "not a valid URL (percent-encode / # ? @ : inside a password)"
            ) from None
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError("a unix:// URL needs the socket path")
            return value
        if not parts.hostname:
            raise ValueError("no host in the URL")
        if port == 0:
            raise ValueError("port 0 in the URL")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ValueError("the database (URL path) must be a number")
        return value

    @field_validator("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        return _existing(value)

    @property
    def uses_tls(self) -> bool:
        """True for a ``rediss://`` URL or ``tls: true``."""
        return self.tls or self.url.get_secret_value().startswith("rediss://")

    @property
    def redacted_url(self) -> str:
        """The URL with any password replaced by ``***``: safe to log or print."""
        return redact_url(self.url.get_secret_value())

    def _url_credentials(self) -> tuple[str | None, str | None]:
        """``(username, password)`` given inside the URL (userinfo or query)."""
        parts = urlsplit(self.url.get_secret_value())
        query = dict(parse_qsl(parts.query))
        username = unquote(parts.username) if parts.username else query.get("username")
        password = unquote(parts.password) if parts.password else query.get("password")
        return username or None, password or None

    @model_validator(mode="after")
    def _consistent(self) -> RedisSettings:
        url_user, url_password = self._url_credentials()
        if url_user and self.username and url_user != self.username:
            raise ValueError("username differs from the user in url: give it once")
        if url_password and self.password and url_password != self.password.get_secret_value():
            raise ValueError("password differs from the password in url: give it once")
        if (self.username or url_user) and not (self.password or url_password):
            raise ValueError("a username (Redis ACL user) needs a password")
        scheme = urlsplit(self.url.get_secret_value()).scheme
        if self.tls and scheme == "unix":
            raise ValueError("tls with a unix:// socket: TLS needs redis:// or rediss://")
        tls = {
            "ssl_ca_certs": self.ssl_ca_certs,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
            "ssl_key_password": self.ssl_key_password,
        }
        if not self.uses_tls and (given := [name for name, value in tls.items() if value]):
            raise ValueError(
                f"{', '.join(given)} set but the connection does not use TLS: use a "
                f"rediss:// URL or tls=true"
            )
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ValueError("ssl_keyfile set without ssl_certfile")
        if self.ssl_key_password and not self.ssl_keyfile and not self.ssl_certfile:
            raise ValueError("ssl_key_password set without ssl_certfile")
        return self

    def client(self) -> redis.Redis:
        """A ``redis.Redis`` client for these settings (no connection is made yet).

        Replies are bytes (``decode_responses`` off), as the reference store needs. A
        refused AUTH raises ``redis.AuthenticationError`` whose message starts with
        ``authentication failed`` and names user and server, never the password.
        """
        import redis

        kwargs: dict[str, Any] = {
            "socket_timeout": self.socket_timeout_s,
            "socket_connect_timeout": self.socket_timeout_s,
            "redis_connect_func": _handshake,
        }
        if self.username:
            kwargs["username"] = self.username
        if self.password:
            kwargs["password"] = self.password.get_secret_value()
        url = self.url.get_secret_value()
        if self.uses_tls:
            if url.startswith("redis://"):
                url = "rediss://" + url.removeprefix("redis://")
            kwargs["ssl_check_hostname"] = self.ssl_check_hostname
            files = {
                "ssl_ca_certs": self.ssl_ca_certs,
                "ssl_certfile": self.ssl_certfile,
                "ssl_keyfile": self.ssl_keyfile,
            }
            kwargs.update({k: str(v) for k, v in files.items() if v is not None})
            if self.ssl_key_password:
                kwargs["ssl_password"] = self.ssl_key_password.get_secret_value()
        try:
            return redis.Redis.from_url(url, **kwargs)
        except ValueError as exc:  # a bad query parameter; redis-py does not quote the URL
            raise ConfigError(f"redis.url: {exc}") from exc


def _handshake(connection: Any) -> None:
    """redis-py connect hook: the usual handshake (AUTH, SELECT...), with a refused AUTH
    reported as ``authentication failed for Redis user U at HOST:PORT``.

    The server's own answer ("invalid username-password pair") does not say what was
    attempted; the password is never part of either message.
    """
    import redis

    try:
        connection.on_connect()
    except redis.AuthenticationError as exc:
        user = getattr(connection, "username", None) or "default"
        if hasattr(connection, "host"):
            where = f"{connection.host}:{connection.port}"
        else:  # a unix socket
            where = str(getattr(connection, "path", "?"))
        raise redis.AuthenticationError(
            f"authentication failed for Redis user {user!r} at {where}: {exc} "
            f"(check redis.username and redis.password)"
        ) from exc


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


#: The AWS variables read when the ``lake`` section leaves a value unset (the usual
#: names of the AWS SDKs and CLI; the first one set wins).
_AWS_ENV = {
    "s3_access_key_id": ("AWS_ACCESS_KEY_ID",),
    "s3_secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
    "s3_session_token": ("AWS_SESSION_TOKEN",),
    "s3_region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "s3_endpoint": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
}


class LakeSettings(BaseModel):
    """Where an ``s3://`` lake's object store is and how to sign in to it (a local lake
    needs none of this; see :mod:`pipeline.lake.storage`, the one place these become
    the options of ``deltalake`` and a ``pyarrow.fs`` filesystem).

    Each field is ``CDR_LAKE__<FIELD>`` (or ``lake__<field>`` in ``CDR_SECRETS_DIR``,
    or ``lake:`` in the settings file); left unset, it is taken from the usual AWS
    variables: ``AWS_ACCESS_KEY_ID`` + ``AWS_SECRET_ACCESS_KEY`` (+ ``AWS_SESSION_TOKEN``,
    only together with the key from the same source), ``AWS_REGION`` /
    ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``. The secret key
    and the session token are :class:`~pydantic.SecretStr` (never logged or printed).
    ``s3_endpoint`` is for S3-compatible stores (``http(s)://host[:port]``); an ``http``
    endpoint is allowed unless ``s3_allow_http`` is false (then it is refused).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_session_token: SecretStr | None = None
    s3_allow_http: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_aws_environment(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        data = {k: v for k, v in data.items() if v is not None and v != ""}
        env = {
            name: next((os.environ[v] for v in names if os.environ.get(v)), None)
            for name, names in _AWS_ENV.items()
        }
        if "s3_access_key_id" not in data and "s3_secret_access_key" not in data:
            for name in ("s3_access_key_id", "s3_secret_access_key", "s3_session_token"):
                if env[name] is not None and name not in data:
                    data[name] = env[name]
        for name in ("s3_region", "s3_endpoint"):
            if name not in data and env[name] is not None:
                data[name] = env[name]
        return data

    @field_validator("s3_endpoint")
    @classmethod
    def _valid_endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be http(s)://host[:port], e.g. http://127.0.0.1:8333")
        if parts.username or parts.password:
            raise ValueError(
                "must not carry credentials: use s3_access_key_id and s3_secret_access_key"
            )
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        try:
            parts.port  # noqa: B018 - raises on a port out of range
        except ValueError:
            raise ValueError("has an invalid port") from None
        return value.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> LakeSettings:
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError(
                "s3_access_key_id and s3_secret_access_key go together (set both, or neither "
                "to use the AWS variables)"
            )
        if self.s3_session_token is not None and self.s3_access_key_id is None:
            raise ValueError("s3_session_token needs s3_access_key_id and s3_secret_access_key")
        if self.s3_allow_http is False and self.endpoint_is_http:
            raise ValueError("s3_endpoint is http:// but s3_allow_http is false")
        return self

    @property
    def endpoint_is_http(self) -> bool:
        return self.s3_endpoint is not None and self.s3_endpoint.lower().startswith("http://")

    def secrets(self) -> tuple[str, ...]:
        """The secret values (to redact from third-party messages)."""
        return tuple(
            s.get_secret_value()
            for s in (self.s3_secret_access_key, self.s3_session_token)
            if s is not None and s.get_secret_value()
        )


class Settings(BaseSettings):
    """Everything ``cdr-pipeline run`` needs."""

    model_config = SettingsConfigDict(
        env_prefix="CDR_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        nested_model_default_partial_update=True,
        hide_input_in_errors=True,
    )

    topic: str = "call-events"
    group: str = "cdr-rating"
    tariffs: Path = Path(__file__).resolve().parent / "data" / "tariffs"
    #: The lake: a directory or ``s3://bucket/prefix`` (:mod:`pipeline.lake.location`).
    output: str = "lake"
    dead_letter_topic: str = "call-events-dlq"
    dead_letter: DeadLetterSettings = DeadLetterSettings()
    #: Confluent-compatible Schema Registry; None (or empty): the shipped schema ids.
    #: Secret: it may carry basic-auth credentials (``redacted_schema_registry`` to show).
    schema_registry: SecretStr | None = None
    stop_when_idle: float | None = None
    metrics_port: int | None = None
    #: Address ``/metrics``, ``/healthz`` and ``/readyz`` listen on: all interfaces by
    #: default (the kubelet and Prometheus must reach the pod); ``127.0.0.1`` keeps
    #: them to this machine.
    metrics_host: str = Field("0.0.0.0", min_length=1, pattern=r"^\S+$")  # noqa: S104
    log_level: str = "INFO"
    #: ``kv`` (key=value lines) or ``json`` (one JSON object per line).
    log_format: Literal["kv", "json"] = "kv"
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    batch: BatchSettings = BatchSettings()
    #: The object store of an ``s3://`` lake (``output``); see :class:`LakeSettings`.
    lake: LakeSettings = Field(default_factory=LakeSettings)
    #: The service's scheduled compaction; see :class:`CompactionSettings`.
    compaction: CompactionSettings = CompactionSettings()

    #: ``close-cycle`` memory and spill directory; see :class:`CloseSettings`.
    close: CloseSettings = CloseSettings()

    @field_validator("tariffs")
    @classmethod
    def _path(cls, value: Path) -> Path:
        return Path(value)

    @field_validator("output", mode="before")
    @classmethod
    def _lake(cls, value: object) -> object:
        from pipeline.lake.location import parse_location

        if isinstance(value, str | Path):
            try:
                return parse_location(value, "output").uri
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("schema_registry", mode="before")
    @classmethod
    def _no_registry_when_empty(cls, value: object) -> object:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if raw == "" else value

    @field_validator("schema_registry")
    @classmethod
    def _valid_registry(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_registry_url(value.get_secret_value())
        return value

    @property
    def redacted_schema_registry(self) -> str | None:
        """The registry URL with its password replaced by ``***`` (safe to log)."""
        return redact_url(self.schema_registry.get_secret_value()) if self.schema_registry else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("CDR_CONFIG") or _CONFIG_FILE.get("path")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        secrets_dir = os.environ.get("CDR_SECRETS_DIR")
        if secrets_dir:
            if not Path(secrets_dir).is_dir():
                raise ConfigError(f"CDR_SECRETS_DIR={secrets_dir}: no such directory")
            # One file per setting, nested with "__" like the variables, no CDR_ prefix:
            # redis__password, kafka__sasl_password (the plain secrets source of
            # pydantic-settings would want one JSON file per nested model).
            sources.append(
                NestedSecretsSettingsSource(
                    file_secret_settings,
                    secrets_dir=secrets_dir,
                    secrets_prefix="",
                    secrets_nested_delimiter="__",
                )
            )
        return tuple(sources)


_CONFIG_FILE: dict[str, str] = {}


def _check_config_file(path: Path, given_as: str = "") -> None:
    """:class:`ConfigError` unless ``path`` is a readable UTF-8 YAML file holding a mapping
    (or nothing). Messages give the position of a syntax error but never quote the file,
    which may hold secrets; checked before anything connects or writes."""
    import yaml

    name = f"settings file {given_as}{path}"
    if path.is_dir():
        raise ConfigError(f"{name} is a directory, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"{name}: settings file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{name} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name} is not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"{name} is not valid YAML{where}: {problem}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(
            f"{name} must be a mapping of settings (key: value), not a {type(data).__name__}"
        )


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Build the settings once. ``flags`` are the command-line values that were given
    (``None`` values are ignored); nested keys use dicts, e.g. ``kafka={"brokers": ...}``.

    Raises :class:`ConfigError` naming every invalid field (secret values are never shown).
    """
    if config_file is not None:
        _check_config_file(Path(config_file))
        _CONFIG_FILE["path"] = str(config_file)
    elif os.environ.get("CDR_CONFIG"):
        _check_config_file(Path(os.environ["CDR_CONFIG"]), "CDR_CONFIG=")
    try:
        given = {k: v for k, v in flags.items() if v is not None and v != {}}
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_input=False)
        )
        # ``from None``: the chained ValidationError would print the input values.
        raise ConfigError(f"invalid settings: {problems}") from None
    except SettingsError as exc:  # unreadable source: bad JSON value, missing secrets dir
        raise ConfigError(f"invalid settings: {exc}") from None
    finally:
        _CONFIG_FILE.pop("path", None)
