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

The package, one module per part: :mod:`~pipeline.settings.kafka`,
:mod:`~pipeline.settings.redis`, :mod:`~pipeline.settings.lake` (the connection
sections), :mod:`~pipeline.settings.service` (``batch``, ``dead_letter``,
``compaction``, ``close``), :mod:`~pipeline.settings.checks` (URL checks and
redaction, files that must exist), :mod:`~pipeline.settings.sources` (the settings
file, the secrets directory, the variables read directly); here the root
:class:`Settings` and :func:`load_settings`. Import every name from
``pipeline.settings``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from pipeline.errors import ConfigError
from pipeline.settings import sources as _sources
from pipeline.settings.checks import check_registry_url, redact_url
from pipeline.settings.kafka import KafkaSettings, SaslMechanism, SecurityProtocol
from pipeline.settings.lake import LakeSettings
from pipeline.settings.redis import RedisSettings
from pipeline.settings.service import (
    BatchSettings,
    CloseSettings,
    CompactionSettings,
    DeadLetterSettings,
)

__all__ = [
    "BatchSettings",
    "CloseSettings",
    "CompactionSettings",
    "DeadLetterSettings",
    "KafkaSettings",
    "LakeSettings",
    "RedisSettings",
    "SaslMechanism",
    "SecurityProtocol",
    "Settings",
    "check_registry_url",
    "load_settings",
    "redact_url",
]


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
    tariffs: Path = Path(__file__).resolve().parents[1] / "data" / "tariffs"
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
        return _sources.sources(settings_cls, init_settings, env_settings, file_secret_settings)


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Build the settings once. ``flags`` are the command-line values that were given
    (``None`` values are ignored); nested keys use dicts, e.g. ``kafka={"brokers": ...}``.

    Raises :class:`ConfigError` naming every invalid field (secret values are never shown).
    """
    given = {k: v for k, v in flags.items() if v is not None and v != {}}
    with _sources.config_file(config_file):
        try:
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
