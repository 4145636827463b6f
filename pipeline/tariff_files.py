"""Reading tariff YAML files from a directory (``<tariff_id>.yaml``)."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.errors import TariffError
from pipeline.rating.tariffs import TariffBook, parse_tariff

#: The tariffs shipped with the package (the seed's numbers).
DEFAULT_TARIFFS_DIR = Path(__file__).resolve().parent / "data" / "tariffs"


def load_tariff_dir(directory: Path) -> TariffBook:
    """Load and validate every ``*.yaml`` / ``*.yml`` file of ``directory``.

    Raises :class:`TariffError` naming the file and field of the first problem.
    """
    if not directory.is_dir():
        raise TariffError(f"{directory}: tariffs directory not found")
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    if not files:
        raise TariffError(f"{directory}: no tariff files (*.yaml)")
    tariffs = []
    for path in files:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise TariffError(f"{path.name}: not valid YAML: {exc}") from None
        tariffs.append(parse_tariff(data, source=path.name, expected_id=path.stem))
    return TariffBook(tariffs)
