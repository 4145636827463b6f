"""Where a lake is: a local directory or ``s3://bucket/prefix``.

:func:`parse_location` is the one place a lake argument (``--output``, ``--lake``,
``CDR_OUTPUT``) is checked. Refused with a :class:`~pipeline.errors.ConfigError` that
names the problem, before anything is read or written:

* an empty or blank location, or one holding control characters (NUL, newline ...);
* a URI of another scheme (``gs://``, ``az://``, ``http://``, ``s3a://`` ...): the lake
  is a local path or ``s3://bucket[/prefix]``;
* ``s3://`` without a bucket, a bucket name that is not a valid S3 bucket name (3-63
  characters of ``a-z 0-9 . -``, starting and ending with a letter or digit, ASCII
  only), a prefix with an empty, ``.`` or ``..`` segment or with ``? # \\``;
* ``file://host/...`` (a remote host); ``file:///abs/path`` is the local path
  ``/abs/path`` (percent-decoded).

A relative local path is made absolute against the working directory (so the
table URIs handed to ``deltalake`` do not depend on where a worker process runs). Non
ASCII letters are fine in local paths and S3 prefixes (they are UTF-8 keys).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pipeline.errors import ConfigError

#: S3 bucket names (the general-purpose bucket rules, without the IP-address form).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.ASCII)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_BAD_PREFIX_CHARS = set("?#\\")


@dataclass(frozen=True)
class LakeLocation:
    """A checked lake location. ``path`` is set for a local lake, ``bucket`` and
    ``prefix`` (no leading or trailing ``/``; may be empty) for an S3 lake."""

    scheme: Literal["file", "s3"]
    path: Path | None = None
    bucket: str = ""
    prefix: str = ""

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    @property
    def uri(self) -> str:
        """The lake's root: an absolute path, or ``s3://bucket/prefix``."""
        if self.path is not None:
            return str(self.path)
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def child(self, name: str) -> str:
        """The URI of ``name`` under the lake (a table or folder)."""
        if self.path is not None:
            return str(self.path / name)
        return f"{self.uri}/{name}"

    def key(self, name: str) -> str:
        """``name`` under the lake as a ``pyarrow.fs`` path: an absolute local path, or
        ``bucket/prefix/name`` for S3."""
        if self.path is not None:
            return str(self.path / name)
        return "/".join(p for p in (self.bucket, self.prefix, name) if p)

    def __str__(self) -> str:
        return self.uri


def _check_text(text: str, what: str) -> None:
    if not text.strip():
        raise ConfigError(f"{what} is empty: give a directory or s3://bucket/prefix")
    bad = [c for c in text if unicodedata.category(c) in ("Cc", "Cs")]
    if bad:
        raise ConfigError(
            f"{what} {text!r} holds control character(s) {', '.join(repr(c) for c in bad[:3])}: "
            "give a directory or s3://bucket/prefix"
        )


def _s3(text: str, what: str) -> LakeLocation:
    rest = text[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ConfigError(f"{what} {text!r} names no bucket: expected s3://bucket[/prefix]")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ConfigError(
            f"{what} {text!r}: {bucket!r} is not an S3 bucket name (3-63 characters of "
            "lower-case ASCII letters, digits, '.' and '-', starting and ending with a "
            "letter or digit)"
        )
    prefix = prefix.rstrip("/")
    if prefix:
        segments = prefix.split("/")
        if any(s in ("", ".", "..") for s in segments):
            raise ConfigError(
                f"{what} {text!r}: the prefix has an empty, '.' or '..' segment "
                "(expected s3://bucket/folder/folder)"
            )
        odd = sorted(_BAD_PREFIX_CHARS & set(prefix))
        if odd:
            raise ConfigError(
                f"{what} {text!r}: the prefix holds {', '.join(map(repr, odd))}, which "
                "S3 URIs cannot carry"
            )
    return LakeLocation("s3", bucket=bucket, prefix=prefix)


def _file_uri(text: str, what: str) -> LakeLocation:
    parts = urlsplit(text)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(
            f"{what} {text!r} names the host {parts.netloc!r}: a file:// lake must be local "
            "(file:///absolute/path)"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"{what} {text!r}: a file:// lake has no query or fragment")
    path = unquote(parts.path)
    _check_text(path, what)
    return LakeLocation("file", path=Path(path).absolute())


def parse_location(value: str | Path | LakeLocation, what: str = "lake") -> LakeLocation:
    """``value`` as a :class:`LakeLocation`; :class:`ConfigError` naming the problem (see
    the module docstring). ``what`` names the argument in messages (``--output``)."""
    if isinstance(value, LakeLocation):
        return value
    if isinstance(value, Path):
        text = str(value)
        _check_text(text, what)
        return LakeLocation("file", path=value.absolute())
    if not isinstance(value, str):
        raise ConfigError(
            f"{what} must be a path or s3://bucket/prefix, not {type(value).__name__}"
        )
    _check_text(value, what)
    text = value
    scheme = _SCHEME.match(text)
    if scheme is None:
        return LakeLocation("file", path=Path(text).absolute())
    name = scheme.group(1)
    if name == "s3":
        return _s3(text, what)
    if name == "file":
        return _file_uri(text, what)
    raise ConfigError(
        f"{what} {text!r}: {name}:// is not supported; a lake is a local directory or "
        "s3://bucket/prefix (S3-compatible stores through the lake.s3_endpoint setting)"
    )
