"""Tariffs compiled into arrays for vectorized rating.

Every (tariff, version) pair is a *combo* with an integer index. Per-combo
parameters are ``int64`` micro-dollar arrays indexed by combo (and by region or
increment class where they vary by it), so the rules read them with one
``take`` per column instead of a per-record loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from pipeline.errors import ConfigError
from pipeline.rating.codes import REGION_CODE, REGIONS, IncrementClass
from pipeline.rating.money import to_micro
from pipeline.rating.reference import PrefixTable, ReferenceData
from pipeline.rating.tariffs import Tariff, TariffBook, TariffVersion

I64 = npt.NDArray[np.int64]
INCREMENT_CLASSES: tuple[str, ...] = tuple(c.value for c in IncrementClass)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_micros(instant: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (exact)."""
    delta = instant - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class CompiledTariffs:
    """Array form of a :class:`TariffBook` (see module docstring)."""

    tariff_ids: tuple[str, ...]
    effective_us: tuple[I64, ...]  # per tariff: ascending effective_from (epoch us)
    first_combo: I64  # per tariff: combo index of its first version
    versions: tuple[TariffVersion, ...]  # per combo
    labels: tuple[str, ...]  # per combo: "<tariff_id>@<instant>"
    combo_tariff: tuple[str, ...]  # per combo
    inc_initial: I64  # [combo, increment class]
    inc_additional: I64
    tf_domestic: I64
    tf_offshore: I64  # [combo, region] -1 = no offshore rate
    payphone_ani_ii: tuple[frozenset[str], ...]
    payphone_surcharge: I64
    did: I64
    interstate: I64
    intrastate: I64
    intl_default: I64
    intl_region: I64  # [combo, region] -1 = none
    intl_prefixes: tuple[PrefixTable, ...]
    intl_prefix_rates: tuple[I64, ...]
    short_call_max_seconds: I64
    _account_tariff_cache: dict[str, npt.NDArray[np.intp]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def build(cls, book: TariffBook) -> CompiledTariffs:
        """Compile every version of every tariff of ``book``."""
        ids = book.ids()
        tariffs: list[Tariff] = [book[i] for i in ids]
        combos = [(t, v) for t in tariffs for v in t.versions]
        n, nreg = len(combos), len(REGIONS)
        offshore = np.full((n, nreg), -1, dtype=np.int64)
        intl_region = np.full((n, nreg), -1, dtype=np.int64)
        prefix_tables, prefix_rates = [], []
        for c, (_, v) in enumerate(combos):
            for region, rate in v.toll_free.offshore_per_min.items():
                offshore[c, REGION_CODE[region]] = to_micro(rate)
            for region, rate in v.long_distance.international.regions.items():
                intl_region[c, REGION_CODE[region]] = to_micro(rate)
            prefixes = v.long_distance.international.prefixes
            prefix_tables.append(PrefixTable.build(list(prefixes), list(range(len(prefixes)))))
            prefix_rates.append(
                np.asarray([to_micro(r) for r in prefixes.values()], dtype=np.int64)
            )

        def per_combo(get: object) -> I64:
            assert callable(get)
            return np.asarray([to_micro(get(v)) for _, v in combos], dtype=np.int64)

        firsts, offset = [], 0
        for t in tariffs:
            firsts.append(offset)
            offset += len(t.versions)
        return cls(
            tariff_ids=ids,
            effective_us=tuple(
                np.asarray([epoch_micros(v.effective_from) for v in t.versions], dtype=np.int64)
                for t in tariffs
            ),
            first_combo=np.asarray(firsts, dtype=np.int64),
            versions=tuple(v for _, v in combos),
            labels=tuple(t.version_label(v) for t, v in combos),
            combo_tariff=tuple(t.tariff_id for t, _ in combos),
            inc_initial=np.asarray(
                [[getattr(v.increments, k)[0] for k in INCREMENT_CLASSES] for _, v in combos],
                dtype=np.int64,
            ).reshape(n, len(INCREMENT_CLASSES)),
            inc_additional=np.asarray(
                [[getattr(v.increments, k)[1] for k in INCREMENT_CLASSES] for _, v in combos],
                dtype=np.int64,
            ).reshape(n, len(INCREMENT_CLASSES)),
            tf_domestic=per_combo(lambda v: v.toll_free.domestic_per_min),
            tf_offshore=offshore,
            payphone_ani_ii=tuple(frozenset(v.toll_free.payphone_ani_ii) for _, v in combos),
            payphone_surcharge=per_combo(lambda v: v.toll_free.payphone_surcharge_per_call),
            did=per_combo(lambda v: v.did_per_min),
            interstate=per_combo(lambda v: v.long_distance.interstate_per_min),
            intrastate=per_combo(lambda v: v.long_distance.intrastate_per_min),
            intl_default=per_combo(lambda v: v.long_distance.international.default_per_min),
            intl_region=intl_region,
            intl_prefixes=tuple(prefix_tables),
            intl_prefix_rates=tuple(prefix_rates),
            short_call_max_seconds=np.asarray(
                [v.cycle.short_call.max_seconds for _, v in combos], dtype=np.int64
            ),
        )

    def account_tariffs(self, ref: ReferenceData) -> npt.NDArray[np.intp]:
        """Tariff index of each account of ``ref`` (cached per reference version).

        Raises :class:`ConfigError` if an account names a tariff that is not loaded.
        """
        cached = self._account_tariff_cache.get(ref.version)
        if cached is not None:
            return cached
        position = {t: i for i, t in enumerate(self.tariff_ids)}
        missing = sorted({t for t in ref.account_tariff if t not in position})
        if missing:
            raise ConfigError(
                f"accounts.csv names tariff(s) not in the tariffs directory: {', '.join(missing)}"
            )
        result = np.asarray([position[t] for t in ref.account_tariff], dtype=np.intp)
        self._account_tariff_cache[ref.version] = result
        return result

    def combo_at(self, tariff_idx: npt.NDArray[np.intp], start_us: I64) -> npt.NDArray[np.intp]:
        """R11: combo in effect at each ``start_us`` for each tariff index; -1 before the
        first version (or where ``tariff_idx`` is -1)."""
        combo = np.full(start_us.shape, -1, dtype=np.intp)
        for t, eff in enumerate(self.effective_us):
            rows = tariff_idx == t
            if not rows.any():
                continue
            pos = np.searchsorted(eff, start_us[rows], side="right") - 1
            combo[rows] = np.where(pos >= 0, self.first_combo[t] + pos, -1)
        return combo


def compiled(book: TariffBook) -> CompiledTariffs:
    """The compiled form of ``book``, built once and cached on it."""
    cached = getattr(book, "_compiled", None)
    if cached is None:
        cached = CompiledTariffs.build(book)
        book._compiled = cached  # type: ignore[attr-defined]
    return cached


def check_accounts_have_tariffs(ref: ReferenceData, book: TariffBook) -> None:
    """Refuse (``ConfigError``) reference data whose accounts name unknown tariffs."""
    compiled(book).account_tariffs(ref)
