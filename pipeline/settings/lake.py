"""The ``lake`` section: the object store of an ``s3://`` lake and how to sign in to it.

Contract: a :class:`LakeSettings` that validated has an endpoint that is
``http(s)://host[:port]`` without credentials, query or fragment (or none), the key
id and secret key together or not at all, and a session token only with them. Unset
fields are taken from the usual ``AWS_*`` variables (read by
:func:`pipeline.settings.sources.aws_environment`). The secret key and the session
token are :class:`~pydantic.SecretStr`, and validation messages never carry input
values. :mod:`pipeline.lake.storage` is the one place these become the options of
``deltalake`` and a ``pyarrow.fs`` filesystem.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator, model_validator

from pipeline.settings.sources import aws_environment


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
        env = aws_environment()
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
