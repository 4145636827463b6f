"""Tariffs (spec section 6): validated, effective-dated, merged key by key.

A tariff file is parsed (YAML, by :mod:`pipeline.tariff_files`) into plain data and
validated here. Version 1 must be complete; each later version lists only what
changes and is deep-merged into the version before it (nested mappings key by key,
lists and scalars replaced), then validated as a whole. Money values must be
quoted decimal strings with at most 6 decimal places (the core works in integer
micro-dollars); a YAML float is refused.

R11: :meth:`Tariff.version_at` gives the version in effect at an instant: the last
version whose ``effective_from`` is <= the instant (``None`` before the first).
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.errors import TariffError
from pipeline.rating.codes import OCN_CATEGORIES, Region

_DECIMAL = re.compile(r"^[0-9]+(\.[0-9]{1,6})?$")
_SHARE = re.compile(r"^[0-9]+(\.[0-9]+)?$")


def _money(value: object) -> Decimal:
    """A non-negative decimal string with at most 6 places -> Decimal (never float)."""
    if not isinstance(value, str):
        raise ValueError(f'must be a quoted decimal string like "0.0150", got {value!r}')
    if not _DECIMAL.match(value):
        raise ValueError(f"{value!r} is not a non-negative decimal with at most 6 places")
    return Decimal(value)


def _share(value: object) -> Decimal:
    """A share between 0 and 1 given as a decimal string."""
    if not isinstance(value, str) or not _SHARE.match(value):
        raise ValueError(f'must be a quoted decimal string like "0.05", got {value!r}')
    share = Decimal(value)
    if share > 1:
        raise ValueError(f"{value!r} is a share and must be between 0 and 1")
    return share


Money = Annotated[Decimal, BeforeValidator(_money)]
Share = Annotated[Decimal, BeforeValidator(_share)]
PositiveInt = Annotated[int, Field(strict=True, gt=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Increments(_Model):
    """R5 billing increments ``[initial, additional]`` in seconds per increment class."""

    US_DOMESTIC: tuple[PositiveInt, PositiveInt]
    INTERNATIONAL: tuple[PositiveInt, PositiveInt]
    MEXICO: tuple[PositiveInt, PositiveInt]


class TollFree(_Model):
    """R6/R8 toll-free rates and the payphone surcharge."""

    domestic_per_min: Money
    offshore_per_min: dict[Region, Money]
    payphone_ani_ii: tuple[str, ...]
    payphone_surcharge_per_call: Money

    @field_validator("payphone_ani_ii")
    @classmethod
    def _two_digits(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for digits in value:
            if not re.fullmatch(r"[0-9]{2}", digits):
                raise ValueError(f"ANI II {digits!r} must be two digits, quoted")
        return value


class International(_Model):
    """R6 international long-distance table."""

    default_per_min: Money
    regions: dict[Region, Money]
    prefixes: dict[str, Money]

    @field_validator("prefixes")
    @classmethod
    def _digit_prefixes(cls, value: dict[str, Money]) -> dict[str, Money]:
        for prefix in value:
            if not re.fullmatch(r"[1-9][0-9]{0,14}", prefix):
                raise ValueError(f"prefix {prefix!r} must be 1-15 E.164 digits without +")
        return value


class LongDistance(_Model):
    """R6 long-distance rates (OUTBOUND_LD and FORWARDED legs)."""

    interstate_per_min: Money
    intrastate_per_min: Money
    international: International


class ShortCall(_Model):
    """R10 SHORT_CALL flag and C2 short-duration surcharge."""

    max_seconds: PositiveInt
    min_share: Share
    per_call: Money


class CarrierMix(_Model):
    """C3 carrier-mix surcharge."""

    categories: tuple[str, ...]
    min_share: Share
    per_min: Money

    @field_validator("categories")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for category in value:
            if category not in OCN_CATEGORIES:
                raise ValueError(f"{category!r} is not one of {', '.join(OCN_CATEGORIES)}")
        return value


class MinuteCap(_Model):
    """C4 per-trunk inbound minute cap."""

    minutes_per_trunk: PositiveInt
    per_min: Money


class CycleRules(_Model):
    """Parameters of the cycle rules C2-C4."""

    short_call: ShortCall
    carrier_mix: CarrierMix
    minute_cap: MinuteCap


class TariffVersion(_Model):
    """One complete, effective-dated version of a tariff."""

    effective_from: datetime
    increments: Increments
    toll_free: TollFree
    did_per_min: Money
    long_distance: LongDistance
    cycle: CycleRules

    @field_validator("effective_from", mode="before")
    @classmethod
    def _aware(cls, value: object) -> object:
        if isinstance(value, datetime):  # YAML may already have parsed it
            value = value.isoformat()
        if not isinstance(value, str):
            raise ValueError(
                "must be an ISO-8601 instant with a time zone, e.g. 2026-01-01T00:00:00Z"
            )
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an ISO-8601 instant") from exc
        if parsed.tzinfo is None:
            raise ValueError(f"{value!r} has no time zone; write it in UTC with a Z")
        return parsed.astimezone(UTC)


class Tariff(_Model):
    """A tariff: its id and its complete versions in ascending ``effective_from``."""

    tariff_id: Annotated[str, Field(pattern=r"^[a-z0-9_-]+$")]
    versions: tuple[TariffVersion, ...]

    @model_validator(mode="after")
    def _ascending(self) -> Tariff:
        if not self.versions:
            raise ValueError("a tariff needs at least one version")
        times = [v.effective_from for v in self.versions]
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise ValueError("versions must have strictly ascending effective_from")
        return self

    def version_at(self, instant: datetime) -> TariffVersion | None:
        """R11: the version in effect at ``instant`` (UTC), ``None`` before the first."""
        found = None
        for version in self.versions:
            if version.effective_from <= instant:
                found = version
        return found

    def version_label(self, version: TariffVersion) -> str:
        """The name a rated record carries for a version: ``<tariff_id>@<ISO instant>``."""
        return f"{self.tariff_id}@{version.effective_from.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def deep_merge(base: Mapping[str, Any], change: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``change`` merged in: nested mappings key by key, others replaced."""
    merged = copy.deepcopy(dict(base))
    for key, value in change.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _describe(exc: ValidationError, prefix: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        where = f"{prefix}.{loc}" if loc else prefix
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def parse_tariff(data: object, *, source: str, expected_id: str | None = None) -> Tariff:
    """Validate a tariff document (already parsed from YAML) into a :class:`Tariff`.

    Raises :class:`TariffError` naming ``source`` and the offending field, e.g.
    ``standard.yaml: versions[1].toll_free.offshore_per_min.ALASKA: must be a quoted
    decimal string``.
    """
    if not isinstance(data, Mapping):
        raise TariffError(f"{source}: the document must be a mapping with tariff_id and versions")
    unknown = set(data) - {"tariff_id", "versions"}
    if unknown:
        raise TariffError(
            f"{source}: unknown top-level key(s): {', '.join(sorted(map(str, unknown)))}"
        )
    tariff_id = data.get("tariff_id")
    if not isinstance(tariff_id, str):
        raise TariffError(f"{source}: tariff_id must be a string like 'standard'")
    if expected_id is not None and tariff_id != expected_id:
        raise TariffError(
            f"{source}: tariff_id {tariff_id!r} must match the file name ({expected_id!r})"
        )
    raw_versions = data.get("versions")
    if not isinstance(raw_versions, Sequence) or isinstance(raw_versions, str) or not raw_versions:
        raise TariffError(f"{source}: versions must be a non-empty list")
    complete: list[TariffVersion] = []
    merged: dict[str, Any] = {}
    for i, raw in enumerate(raw_versions):
        if not isinstance(raw, Mapping):
            raise TariffError(f"{source}: versions[{i}] must be a mapping")
        if "effective_from" not in raw:
            raise TariffError(f"{source}: versions[{i}].effective_from: field required")
        merged = deep_merge(merged, raw)
        try:
            complete.append(TariffVersion.model_validate(merged))
        except ValidationError as exc:
            raise TariffError(f"{source}: {_describe(exc, f'versions[{i}]')}") from None
    try:
        return Tariff(tariff_id=str(tariff_id), versions=tuple(complete))
    except ValidationError as exc:
        raise TariffError(f"{source}: {_describe(exc, 'tariff')}") from None


class TariffBook:
    """All tariffs by id; immutable once built."""

    def __init__(self, tariffs: Sequence[Tariff]) -> None:
        self._by_id: dict[str, Tariff] = {}
        for tariff in tariffs:
            if tariff.tariff_id in self._by_id:
                raise TariffError(f"tariff {tariff.tariff_id!r} is defined twice")
            self._by_id[tariff.tariff_id] = tariff

    def __getitem__(self, tariff_id: str) -> Tariff:
        return self._by_id[tariff_id]

    def __contains__(self, tariff_id: object) -> bool:
        return tariff_id in self._by_id

    def __iter__(self) -> Any:
        return iter(self._by_id.values())

    def ids(self) -> tuple[str, ...]:
        """Tariff ids in a stable (sorted) order."""
        return tuple(sorted(self._by_id))
