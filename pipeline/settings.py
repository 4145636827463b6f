"""Typed settings for the streaming service: the only reader of environment variables.

Built once at start-up (:func:`load_settings`) and passed down, frozen. Sources, the
first one that sets a value wins:

1. command-line flags,
2. environment variables ``CDR_<NAME>``; nested with ``__``, e.g.
   ``CDR_KAFKA__SASL_PASSWORD``, ``CDR_REDIS__URL``,
3. a settings file (YAML) given with ``--config`` or ``CDR_CONFIG``,
4. secret files: ``CDR_SECRETS_DIR/<name>`` (e.g. ``kafka__sasl_password``),
5. the defaults below.

Secrets are :class:`~pydantic.SecretStr`: never printed by ``repr``, logs, ``--help``
or errors. :meth:`KafkaSettings.client_config` is the one place that builds the
librdkafka dict.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from pipeline.errors import ConfigError

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSettings(BaseModel):
    """Kafka connection: brokers, TLS and SASL."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    brokers: str = "127.0.0.1:9092"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    session_timeout_ms: int = Field(6000, ge=1000)
    client_id: str = "cdr-pipeline"

    def client_config(self) -> dict[str, Any]:
        """The librdkafka configuration common to producers, consumers and admin."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.brokers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
        }
        if self.security_protocol.startswith("SASL"):
            if not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
                raise ConfigError(
                    "kafka: SASL needs sasl_mechanism, sasl_username and sasl_password"
                )
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        optional = {
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password.get_secret_value()
            if self.ssl_key_password
            else None,
        }
        conf.update({k: str(v) for k, v in optional.items() if v is not None})
        return conf


class RedisSettings(BaseModel):
    """Redis connection: URL (``redis://`` or ``rediss://`` for TLS), AUTH and TLS files."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    username: str | None = None
    password: SecretStr | None = None
    ssl_ca_certs: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    socket_timeout_s: float = Field(5.0, gt=0)
    namespace: str = "cdr:ref"

    def client(self) -> Any:
        """A ``redis.Redis`` client for these settings (no connection is made yet)."""
        import redis

        kwargs: dict[str, Any] = {
            "socket_timeout": self.socket_timeout_s,
            "socket_connect_timeout": self.socket_timeout_s,
        }
        if self.username:
            kwargs["username"] = self.username
        if self.password:
            kwargs["password"] = self.password.get_secret_value()
        url = self.url.get_secret_value()
        if url.startswith("rediss://"):
            kwargs.update(
                {
                    k: str(v)
                    for k, v in {
                        "ssl_ca_certs": self.ssl_ca_certs,
                        "ssl_certfile": self.ssl_certfile,
                        "ssl_keyfile": self.ssl_keyfile,
                    }.items()
                    if v is not None
                }
            )
        return redis.Redis.from_url(url, **kwargs)


class BatchSettings(BaseModel):
    """When a partition's buffered records become a Parquet file (rotation)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_rows: int = Field(200_000, gt=0)
    max_bytes: int = Field(64 * 1024 * 1024, gt=0)
    max_age_s: float = Field(5.0, gt=0)
    poll_max_messages: int = Field(20_000, gt=0)


class Settings(BaseSettings):
    """Everything ``cdr-pipeline run`` needs."""

    model_config = SettingsConfigDict(
        env_prefix="CDR_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    topic: str = "call-events"
    group: str = "cdr-rating"
    tariffs: Path = Path(__file__).resolve().parent / "data" / "tariffs"
    output: Path = Path("lake")
    dead_letter_topic: str = "call-events-dlq"
    schema_registry: str | None = None
    stop_when_idle: float | None = None
    metrics_port: int | None = None
    log_level: str = "INFO"
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    batch: BatchSettings = BatchSettings()

    @field_validator("output", "tariffs")
    @classmethod
    def _path(cls, value: Path) -> Path:
        return Path(value)

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
            from pydantic_settings import SecretsSettingsSource

            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir))
        return tuple(sources)


_CONFIG_FILE: dict[str, str] = {}


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Build the settings once. ``flags`` are the command-line values that were given
    (``None`` values are ignored); nested keys use dicts, e.g. ``kafka={"brokers": ...}``.

    Raises :class:`ConfigError` naming every invalid field (secret values are never shown).
    """
    if config_file is not None:
        if not Path(config_file).is_file():
            raise ConfigError(f"{config_file}: settings file not found")
        _CONFIG_FILE["path"] = str(config_file)
    try:
        given = {k: v for k, v in flags.items() if v is not None and v != {}}
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_input=False)
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    finally:
        _CONFIG_FILE.pop("path", None)
