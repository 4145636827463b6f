"""How the lake's bytes are reached: ``deltalake`` storage options and a ``pyarrow.fs``
filesystem, built once from :class:`~pipeline.settings.LakeSettings`.

:class:`Storage` is the one place the object-store settings become client options.
Tables go through ``deltalake`` (:meth:`Storage.delta_options`); the few objects
that are not table rows (whole dead-letter payloads, ``LAKE/dead_letter_payloads/``)
and the Parquet scans of a table's live files go through :meth:`Storage.filesystem`.

S3 writes use ``conditional_put=etag`` (a commit is a put-if-absent of the next log
entry, so concurrent writers never overwrite each other's commit); ``allow_http`` is
set for an ``http://`` endpoint. The options hold the secret key: they are never
logged, and :func:`describe_error` is how a third-party message reaches a user, with
every secret value cut out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

import pyarrow.fs as pafs

from pipeline.errors import ConfigError, PipelineError, SinkError
from pipeline.io.atomic import write_bytes_atomic
from pipeline.lake.location import LakeLocation
from pipeline.settings import LakeSettings

#: Region used when none is set: S3-compatible stores ignore it, AWS needs one.
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class Storage:
    """Client options for one lake location (built once; :meth:`for_location`)."""

    location: LakeLocation
    settings: LakeSettings = field(default_factory=LakeSettings, repr=False)

    @classmethod
    def for_location(cls, location: LakeLocation, settings: LakeSettings | None = None) -> Storage:
        """Storage for ``location``; ``settings`` default to the lake section of the
        settings (``CDR_LAKE__*``, then ``AWS_*``), read only for an S3 lake."""
        if settings is None:
            if location.is_local:
                settings = LakeSettings.model_construct()
            else:
                from pipeline.settings import load_settings

                settings = load_settings().lake
        return cls(location, settings)

    def __repr__(self) -> str:
        return f"Storage({self.location.uri!r})"

    # ------------------------------------------------------------------ deltalake
    def delta_options(self) -> dict[str, str]:
        """Storage options for ``deltalake`` (empty for a local lake). Secret: never log."""
        if self.location.is_local:
            return {}
        s = self.settings
        options = {
            "AWS_REGION": s.s3_region or DEFAULT_REGION,
            "conditional_put": "etag",
            "connect_timeout": "10s",
            "timeout": "60s",
        }
        if s.s3_endpoint:
            options["AWS_ENDPOINT_URL"] = s.s3_endpoint
        if s.endpoint_is_http or s.s3_allow_http:
            options["AWS_ALLOW_HTTP"] = "true"
        if s.s3_access_key_id and s.s3_secret_access_key is not None:
            options["AWS_ACCESS_KEY_ID"] = s.s3_access_key_id
            options["AWS_SECRET_ACCESS_KEY"] = s.s3_secret_access_key.get_secret_value()
        if s.s3_session_token is not None:
            options["AWS_SESSION_TOKEN"] = s.s3_session_token.get_secret_value()
        return options

    # ------------------------------------------------------------------ pyarrow.fs
    @cached_property
    def filesystem(self) -> pafs.FileSystem:
        """The lake's ``pyarrow.fs`` filesystem: paths are :meth:`LakeLocation.key`."""
        if self.location.is_local:
            return pafs.LocalFileSystem()
        s = self.settings
        kwargs: dict[str, object] = {
            "region": s.s3_region or DEFAULT_REGION,
            "connect_timeout": 10.0,
            "request_timeout": 60.0,
        }
        if s.s3_endpoint:
            kwargs["endpoint_override"] = s.s3_endpoint
            kwargs["scheme"] = "http" if s.endpoint_is_http else "https"
        if s.s3_access_key_id and s.s3_secret_access_key is not None:
            kwargs["access_key"] = s.s3_access_key_id
            kwargs["secret_key"] = s.s3_secret_access_key.get_secret_value()
            if s.s3_session_token is not None:
                kwargs["session_token"] = s.s3_session_token.get_secret_value()
        return pafs.S3FileSystem(**kwargs)

    def subtree(self, name: str) -> pafs.FileSystem:
        """A filesystem rooted at ``name`` under the lake (a table's root)."""
        return pafs.SubTreeFileSystem(self.location.key(name), self.filesystem)

    def secrets(self) -> tuple[str, ...]:
        return self.settings.secrets()


# ---------------------------------------------------------------------- errors
_DENIED = re.compile(
    r"403|SignatureDoesNotMatch|InvalidAccessKeyId|AccessDenied|lacked the necessary "
    r"privileges|Forbidden|ExpiredToken",
    re.IGNORECASE,
)
_NO_BUCKET = re.compile(r"NoSuchBucket", re.IGNORECASE)


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret value replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def describe_error(exc: BaseException, storage: Storage, doing: str) -> PipelineError:
    """The :mod:`pipeline.errors` exception for a failure of ``deltalake`` or
    ``pyarrow.fs`` while ``doing`` something with the lake: refused credentials and a
    missing bucket are :class:`ConfigError` (fix the settings), the rest
    :class:`SinkError` (retry). The message is one line, secrets cut out."""
    raw = " ".join(str(exc).split()) or type(exc).__name__
    text = redact(raw, storage.secrets())
    where = storage.location.uri
    if not storage.location.is_local:
        if _DENIED.search(text):
            return ConfigError(
                f"the object store refused access while {doing} {where} (403: wrong or "
                "expired credentials, or no permission): check lake.s3_access_key_id / "
                "lake.s3_secret_access_key (CDR_LAKE__*) or AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY"
            )
        if _NO_BUCKET.search(text):
            return ConfigError(
                f"bucket {storage.location.bucket!r} does not exist ({doing} {where}): create "
                "it first, or check the lake location and lake.s3_endpoint"
            )
    return SinkError(f"lake unavailable while {doing} {where}: {text[:300]}")


# ---------------------------------------------------------------------- blobs
class BlobStore:
    """Whole objects under a folder of the lake (``dead_letter_payloads``): written
    whole or not at all (local: temporary name, fsync, rename; S3: one PUT)."""

    def __init__(self, storage: Storage, folder: str) -> None:
        self.storage = storage
        self.folder = folder

    def _key(self, name: str) -> str:
        return self.storage.location.key(f"{self.folder}/{name}")

    def describe(self, name: str = "") -> str:
        return self.storage.location.child(f"{self.folder}/{name}".rstrip("/"))

    def size(self, name: str) -> int | None:
        """The size of object ``name``, or None if absent (or unreachable)."""
        try:
            info = self.storage.filesystem.get_file_info(self._key(name))
        except OSError:
            return None
        return info.size if info.type == pafs.FileType.File else None

    def read(self, name: str) -> bytes | None:
        """The bytes of object ``name``, or None if it cannot be read."""
        try:
            with self.storage.filesystem.open_input_stream(self._key(name)) as fh:
                data: bytes = fh.read()
                return data
        except OSError:
            return None

    def write(self, name: str, data: bytes) -> None:
        """Store ``data`` as ``name``, durably. Raises :class:`SinkError` (or
        :class:`ConfigError` for refused credentials)."""
        location = self.storage.location
        if location.path is not None:
            path = location.path / self.folder / name
            try:
                write_bytes_atomic(path, data)
            except OSError as exc:
                raise SinkError(f"cannot write {path}: {exc.strerror or exc}") from exc
            return
        try:
            with self.storage.filesystem.open_output_stream(self._key(name)) as fh:
                fh.write(data)
        except OSError as exc:
            raise describe_error(exc, self.storage, "writing") from None
