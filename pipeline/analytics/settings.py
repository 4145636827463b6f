"""Settings of ``cdr-pipeline query`` and ``report`` (environment ``CDR_*``)."""

from __future__ import annotations

import re

from pydantic import ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import ConfigError

#: A DuckDB memory size: a number and a unit (``512MiB``, ``1GB``, ``1.5GiB``).
_MEMORY = re.compile(r"[0-9]+(?:\.[0-9]+)?\s*(?:[KMGT]i?B|B)", re.ASCII | re.IGNORECASE)


class AnalyticsSettings(BaseSettings):
    """``CDR_ANALYST_MODE=true`` turns analyst mode on by default (the ``--analyst`` /
    ``--no-analyst`` flag wins). ``CDR_QUERY_MEMORY_LIMIT`` caps DuckDB's memory
    (default ``1GiB``): scans stream, so it bounds what a query holds at once (hash
    tables, sorts, windows). Without analyst mode a query over the limit spills to
    DuckDB's temporary directory; in analyst mode nothing spills and it fails with a
    message naming this setting."""

    model_config = SettingsConfigDict(env_prefix="CDR_", extra="ignore", frozen=True)

    analyst_mode: bool = False
    query_memory_limit: str = "1GiB"

    @field_validator("query_memory_limit")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not _MEMORY.fullmatch(value.strip()):
            raise ValueError("a size such as 512MiB or 2GB")
        return value.strip()


def load_settings() -> AnalyticsSettings:
    """:class:`AnalyticsSettings` from the environment; :class:`ConfigError` naming the
    variable if one is malformed."""
    try:
        return AnalyticsSettings()
    except ValidationError as exc:
        names = sorted({str(e["loc"][0]) for e in exc.errors() if e.get("loc")})
        what = ", ".join(f"CDR_{n.upper()}" for n in names) or "CDR_* settings"
        if names == ["analyst_mode"]:
            raise ConfigError("CDR_ANALYST_MODE must be true or false") from exc
        raise ConfigError(f"{what}: {exc.errors()[0]['msg']}") from exc


def analyst_mode(flag: bool | None) -> bool:
    """The effective analyst mode: ``flag`` when given, else :class:`AnalyticsSettings`.

    Raises :class:`ConfigError` if ``CDR_ANALYST_MODE`` is not a boolean.
    """
    if flag is not None:
        return flag
    return load_settings().analyst_mode
