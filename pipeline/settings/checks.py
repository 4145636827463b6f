"""Value checks the settings sections share: URLs that may hold secrets, and files.

Contract: :func:`redact_url` never returns a password or a secret query value, and
the ``ValueError`` of :func:`check_registry_url` never quotes the URL it refuses (it
may carry ``user:password@``). :func:`existing_path` refuses a path that names no
file. No I/O beyond ``stat``; no environment variable is read here.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

#: Query parameters of a Redis URL whose values are secret (redis-py passes any
#: unknown parameter, ``password`` included, to the connection).
SECRET_QUERY_KEYS = ("password", "ssl_password")


def existing_path(path: Path | None, *, directory_ok: bool = False) -> Path | None:
    """``path`` when it names an existing file (or directory); ``ValueError`` otherwise."""
    if path is None:
        return None
    if path.is_file() or (directory_ok and path.is_dir()):
        return path
    raise ValueError(f"{path}: no such file{' or directory' if directory_ok else ''}")


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
        f"{k}={'***' if k in SECRET_QUERY_KEYS else v}"
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
