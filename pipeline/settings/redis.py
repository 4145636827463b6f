"""The ``redis`` section: URL, AUTH and TLS, and the one place Redis clients are built.

Contract: a :class:`RedisSettings` that validated has a usable URL (``redis://``,
``rediss://`` for TLS, ``unix://``), credentials given once (in the URL or in
``username``/``password``, agreeing when in both) and TLS files only with TLS.
Messages never quote the URL, which may hold the password; :attr:`RedisSettings.
redacted_url` is the form safe to log. :meth:`RedisSettings.client` is the one place
the service and the CLI build their clients; a refused AUTH is reported naming user
and server, never the password. The variables are listed in :mod:`pipeline.settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from pipeline.errors import ConfigError
from pipeline.settings.checks import existing_path, redact_url

if TYPE_CHECKING:
    import redis


class RedisSettings(BaseModel):
    """Redis connection: URL (``redis://``, ``rediss://`` for TLS, ``unix://``), AUTH and
    TLS files (see the table in :mod:`pipeline.settings`).

    The password may be in ``url`` or in ``password``; given in both, they must agree
    (same for the username). Raises ``ValidationError`` (:class:`ConfigError` through
    :func:`~pipeline.settings.load_settings`) for a malformed URL, without echoing it.
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
        return existing_path(value)

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
