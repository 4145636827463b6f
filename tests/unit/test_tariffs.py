"""Tariff files (spec section 6): validation, effective-dated merging, R11 lookup."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.errors import TariffError
from pipeline.rating.codes import Region
from pipeline.rating.tariffs import deep_merge, parse_tariff
from pipeline.tariff_files import DEFAULT_TARIFFS_DIR, load_tariff_dir


def standard() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEFAULT_TARIFFS_DIR / "standard.yaml").read_text())
    return doc


def test_shipped_tariffs_have_the_seed_numbers() -> None:
    """Section 6 defaults: the seed's rates, increments and thresholds, exact."""
    v = load_tariff_dir(DEFAULT_TARIFFS_DIR)["standard"].versions[0]
    assert v.toll_free.offshore_per_min[Region.ALASKA] == Decimal("0.45")
    assert v.toll_free.payphone_surcharge_per_call == Decimal("0.60")
    assert v.increments.INTERNATIONAL == (30, 6)
    assert v.increments.MEXICO == (60, 60)
    assert v.cycle.minute_cap.minutes_per_trunk == 1500
    assert v.cycle.carrier_mix.min_share == Decimal("0.75")


def test_versions_merge_key_by_key() -> None:
    """Section 6: the second version changes ALASKA and HAWAII and keeps the rest."""
    t = load_tariff_dir(DEFAULT_TARIFFS_DIR)["standard"]
    second = t.versions[1].toll_free.offshore_per_min
    assert second[Region.ALASKA] == Decimal("0.44")
    assert second[Region.CANADA] == Decimal("0.08")
    assert t.versions[1].did_per_min == t.versions[0].did_per_min


def test_r11_version_at() -> None:
    """R11: the version in effect at an instant; none before the first."""
    t = load_tariff_dir(DEFAULT_TARIFFS_DIR)["standard"]
    assert t.version_at(datetime(2025, 12, 31, 23, 59, tzinfo=UTC)) is None
    assert t.version_at(datetime(2026, 11, 15, 23, 59, 59, tzinfo=UTC)) is t.versions[0]
    assert t.version_at(datetime(2026, 11, 16, tzinfo=UTC)) is t.versions[1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"did_per_min": 0.01}, "versions[0].did_per_min: must be a quoted decimal string"),
        ({"did_per_min": "0.0000001"}, "versions[0].did_per_min"),
        ({"did_per_min": "-1"}, "versions[0].did_per_min"),
        ({"increments": {"US_DOMESTIC": [0, 6]}}, "versions[0].increments.US_DOMESTIC"),
        (
            {"toll_free": {"offshore_per_min": {"ATLANTIS": "0.1"}}},
            "versions[0].toll_free.offshore_per_min",
        ),
        ({"toll_free": {"payphone_ani_ii": ["7"]}}, "payphone_ani_ii"),
        ({"cycle": {"short_call": {"min_share": "1.5"}}}, "versions[0].cycle.short_call.min_share"),
        (
            {"cycle": {"carrier_mix": {"categories": ["BELL"]}}},
            "versions[0].cycle.carrier_mix.categories",
        ),
        ({"surprise": 1}, "versions[0].surprise"),
        ({"effective_from": "2026-01-01T00:00:00"}, "no time zone"),
    ],
)
def test_bad_tariff_refused_naming_the_field(change: dict[str, Any], message: str) -> None:
    """Section 6: a bad file is refused with a message naming the field."""
    doc = standard()
    doc["versions"][0] = deep_merge(doc["versions"][0], change)
    with pytest.raises(TariffError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        parse_tariff(doc, source="standard.yaml")
    assert str(err.value).startswith("standard.yaml: ")


def test_later_version_is_validated_after_merge() -> None:
    """Section 6: an invalid change in a later version is refused naming that version."""
    doc = standard()
    doc["versions"][1]["toll_free"]["offshore_per_min"]["ALASKA"] = 0.44
    with pytest.raises(TariffError, match=r"versions\[1\]\.toll_free\.offshore_per_min\.ALASKA"):
        parse_tariff(doc, source="standard.yaml")


def test_versions_must_ascend_and_first_must_be_complete() -> None:
    doc = standard()
    doc["versions"][1]["effective_from"] = "2025-01-01T00:00:00Z"
    with pytest.raises(TariffError, match="ascending"):
        parse_tariff(doc, source="s.yaml")
    doc = standard()
    del doc["versions"][0]["cycle"]
    with pytest.raises(TariffError, match=r"versions\[0\]\.cycle: Field required"):
        parse_tariff(doc, source="s.yaml")


def test_directory_errors(tmp_path: Path) -> None:
    """A missing directory, an empty one, bad YAML and a mismatched id are refused."""
    with pytest.raises(TariffError, match="not found"):
        load_tariff_dir(tmp_path / "nope")
    with pytest.raises(TariffError, match="no tariff files"):
        load_tariff_dir(tmp_path)
    (tmp_path / "x.yaml").write_text("tariff_id: [unclosed")
    with pytest.raises(TariffError, match=r"x\.yaml: not valid YAML"):
        load_tariff_dir(tmp_path)
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(standard()))
    with pytest.raises(TariffError, match="must match the file name"):
        load_tariff_dir(tmp_path)
