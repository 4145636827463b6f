"""The ``kafka`` section: brokers, TLS and SASL, and the one librdkafka dict.

Contract: a :class:`KafkaSettings` that validated is consistent (a ``SASL_*`` protocol
has mechanism, username and password; SASL or TLS settings with a protocol that does
not use them are refused; every certificate or key file exists; a client key has its
certificate), and :meth:`KafkaSettings.client_config` is the one place the librdkafka
configuration of producers, consumers and admin clients is built. Validation messages
never carry input values (``hide_input_in_errors``); the SASL and key passwords are
:class:`~pydantic.SecretStr`. The variables are listed in :mod:`pipeline.settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from pipeline.errors import ConfigError
from pipeline.settings.checks import existing_path

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSettings(BaseModel):
    """Kafka connection: brokers, TLS and SASL (see the table in :mod:`pipeline.settings`).

    Raises ``ValidationError`` (:class:`ConfigError` through
    :func:`~pipeline.settings.load_settings`) for an inconsistent combination; an instance
    is always usable by :meth:`client_config`.
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
        return existing_path(value, directory_ok=True)

    @field_validator("ssl_certificate_location", "ssl_key_location")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        return existing_path(value)

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
