"""``cdr-pipeline report``: the cycle page from a real lake, rendered in headless Chromium.

The lake is built the way ``cdr-pipeline demo --batch`` builds it (generate, rate,
close). The page is checked as text (every chart, exact money, no phone number, no
external resource) and as pixels (Chromium draws the charts in their colours).
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from PIL import Image

from pipeline.batch import close, rate_files
from pipeline.cli import main
from pipeline.generate import write_generated
from pipeline.lake.lake import Lake
from pipeline.refdata.files import SAMPLE_REFDATA_DIR, load_reference_dir
from pipeline.report import (
    CHARGES_COLOUR,
    CLASS_COLOURS,
    MINUTES_COLOUR,
    RATED_COLUMNS,
    render_html,
    summarize,
)
from pipeline.tariff_files import DEFAULT_TARIFFS_DIR, load_tariff_dir

pytestmark = pytest.mark.integration

CYCLE = "2026-11"
EVENTS = 20_000
CHARTS = (
    "chart-by-class",
    "chart-by-region",
    "chart-by-day",
    "chart-surcharges",
    "chart-top-accounts",
    "chart-dead-letters",
)
PHONE = re.compile(r"\+\d{10,15}")
FIGURE = re.compile(r'<figure class="chart" id="(chart-[a-z-]+)">(.*?)</figure>', re.S)
EXACT_CELL = re.compile(r'data-exact="(-?\d+(?:\.\d+)?)">(-?\$[\d,]+\.\d\d)<')


@dataclass(frozen=True)
class Lakes:
    open: Path  # rated, not closed
    closed: Path  # rated and closed


@pytest.fixture(scope="module")
def lakes(tmp_path_factory: pytest.TempPathFactory) -> Lakes:
    """One rated lake, and a copy of it with the cycle closed."""
    work = tmp_path_factory.mktemp("report")
    avro = work / "traffic.avro"
    write_generated(avro, EVENTS, seed=5, refdata_dir=SAMPLE_REFDATA_DIR)
    ref = load_reference_dir(SAMPLE_REFDATA_DIR)
    tariffs = load_tariff_dir(DEFAULT_TARIFFS_DIR)
    rate_files([avro], Lake(work / "open"), ref, tariffs)
    shutil.copytree(work / "open", work / "closed")
    close(Lake(work / "closed"), ref, tariffs, CYCLE)
    return Lakes(work / "open", work / "closed")


def _report(lake: Path, output: Path) -> str:
    rc = main(["report", "--lake", str(lake), "--cycle", CYCLE, "--output", str(output)])
    assert rc == 0
    return output.read_text(encoding="utf-8")


def _figures(page: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in FIGURE.finditer(page)}


def _usd(value: Decimal) -> str:
    cents = value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return f"{'-' if cents < 0 else ''}${abs(cents):,.2f}"


def _exact(page: str, ident: str) -> Decimal:
    match = re.search(rf'id="{ident}" data-exact="([^"]+)"', page)
    assert match, f"{ident} has no exact value"
    return Decimal(match.group(1))


def _phone_numbers(lake: Path) -> set[str]:
    """Every number of the cycle's records, digits only (10 digits or more)."""
    rated = Lake(lake).read_rated(
        CYCLE, ["calling_number", "called_number", "original_calling_number"]
    )
    numbers: set[str] = set()
    for name in rated.column_names:
        for value in pc.unique(pc.drop_null(rated.column(name))).to_pylist():
            digits = re.sub(r"\D", "", value)
            if len(digits) >= 10:
                numbers.add(digits)
    return numbers


def _check_page(page: str, lake: Path) -> None:
    """What every report must satisfy, closed or not."""
    figures = _figures(page)
    assert set(figures) == set(CHARTS)
    for chart_id, body in figures.items():
        assert "<figcaption>" in body, chart_id
        svg = body[body.index("<svg") :]
        assert svg.rstrip().endswith("</svg>"), chart_id
        assert len(re.findall(r"<(?:path|rect)\b", svg)) >= 5, f"{chart_id}: nothing drawn"
        assert 'viewBox="' in svg, chart_id
    # ids are unique across the inline SVGs (clip paths of one chart never hit another)
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))

    # CPNI: no E.164 number, and none of the lake's numbers in any digit run
    assert not PHONE.search(page)
    assert not _phone_numbers(lake) & set(re.findall(r"\d{10,}", page))

    # self-contained: nothing is fetched
    lowered = page.lower()
    for needle in ("<script", "<link", " src=", "@import", "url(http", "<img", "<iframe"):
        assert needle not in lowered, needle

    # money shown is the exact Decimal rounded half-up to cents, everywhere
    cells = EXACT_CELL.findall(page)
    assert len(cells) > 50
    for exact, shown in cells:
        assert _usd(Decimal(exact)) == shown

    # totals are those of the latest revision of each call (checked with DuckDB)
    glob = f"{lake}/rated_calls/billing_cycle={CYCLE}/*.parquet"
    con = duckdb.connect(":memory:")
    try:
        ((calls, total),) = con.execute(
            f"""SELECT count(*), sum(total_charge) FROM (
                  SELECT total_charge, row_number() OVER (
                    PARTITION BY call_id ORDER BY revision DESC) AS rn
                  FROM read_parquet('{glob}')) WHERE rn = 1"""  # noqa: S608
        ).fetchall()
        ((all_rows,),) = con.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchall()  # noqa: S608
    finally:
        con.close()
    assert all_rows > calls, "the generated traffic holds corrections"
    assert _exact(page, "kpi-charges") == total
    assert f">{calls:,}<" in page.replace("<small>", "<")


def test_closed_cycle_report_renders_in_chromium(lakes: Lakes, tmp_path: Path) -> None:
    """Issue 4: the report of a closed cycle has every chart, exact money, no phone
    number, and Chromium (offline) draws it with the chart colours."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: run `make system-deps` (Debian package chromium)")
    output = tmp_path / "report.html"
    page = _report(lakes.closed, output)
    _check_page(page, lakes.closed)

    assert '<section id="surcharges" data-source="invoice_lines">' in page
    assert "from the cycle's invoice lines (the cycle is closed)" in html.unescape(page)
    invoice = Lake(lakes.closed).read_invoice_lines(CYCLE)
    assert _exact(page, "kpi-invoice") == sum(invoice.column("amount").to_pylist(), Decimal(0))
    for line_type in (
        "PAYPHONE_SURCHARGE",
        "SHORT_CALL_SURCHARGE",
        "CARRIER_MIX_SURCHARGE",
        "MINUTE_CAP_OVERAGE",
    ):
        amount = pc.sum(
            invoice.filter(pc.equal(invoice.column("line_type"), line_type)).column("amount")
        ).as_py()
        assert f"<td>{line_type}</td>" in page
        assert f'data-exact="{amount}">{_usd(amount)}<' in page

    png = tmp_path / "report.png"
    profile = tmp_path / "chromium-profile"
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1400,3000",
            f"--screenshot={png}",
            output.resolve().as_uri(),
        ],
        capture_output=True,
        timeout=90,
        env={**os.environ, "HOME": str(tmp_path)},
        check=False,
    )
    assert png.is_file(), (
        f"chromium wrote no screenshot (rc {result.returncode}): {result.stderr[-2000:]!r}"
    )
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    assert pixels.shape[:2] == (3000, 1400)
    non_white = np.any(pixels < 235, axis=2).mean()
    assert non_white > 0.08, f"only {non_white:.1%} of the page is drawn"
    coloured = ((pixels.max(axis=2) - pixels.min(axis=2)) > 60).mean()  # bars, not text
    assert coloured > 0.04, f"only {coloured:.1%} of the page is chart colour"

    def share(colour: str) -> int:
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
        return int((np.abs(pixels - rgb).max(axis=2) <= 6).sum())

    palette = {
        **{c: CLASS_COLOURS[c] for c in ("TOLL_FREE", "DID", "OUTBOUND_LD", "FORWARDED")},
        "minutes": MINUTES_COLOUR,
        "charges": CHARGES_COLOUR,
    }
    drawn = {name: share(colour) for name, colour in palette.items()}
    assert all(n >= 300 for n in drawn.values()), f"chart colours on screen (pixels): {drawn}"


def test_open_cycle_takes_surcharges_from_rated_records(lakes: Lakes, tmp_path: Path) -> None:
    """Before the close only the per-call payphone surcharge is known, and the page says so."""
    page = _report(lakes.open, tmp_path / "open.html")
    _check_page(page, lakes.open)
    assert '<section id="surcharges" data-source="rated_records">' in page
    assert "the rated records' surcharge column (the cycle is not closed" in html.unescape(page)
    assert "not closed" in page
    rated = Lake(lakes.open).read_rated(CYCLE)
    assert rated.num_rows
    section = page[page.index('<section id="surcharges"') :]
    section = section[: section.index("</section>")]
    assert section.count(">at close<") >= 6  # 3 surcharges x (charged on, amount)
    assert "PAYPHONE_SURCHARGE" in section


def test_rated_after_close_is_flagged_stale(lakes: Lakes, tmp_path: Path) -> None:
    """Rated files newer than the invoice lines: the page warns that the close is stale."""
    lake = tmp_path / "lake"
    shutil.copytree(lakes.closed, lake)
    assert "Stale invoice lines" not in _report(lake, tmp_path / "fresh.html")
    late = Lake(lake).read_rated(CYCLE).slice(0, 1)  # a correction rated after the close
    time.sleep(0.01)
    Lake(lake).write_rated(late.set_column(1, "revision", pa.array([99], pa.int32())))
    assert "Stale invoice lines" in _report(lake, tmp_path / "stale.html")


def test_refusals(lakes: Lakes, tmp_path: Path) -> None:
    """A malformed cycle or one without rated records: exit code 2, no file written."""
    for cycle in ("2026-13", "2026-12", "202611"):
        output = tmp_path / f"{cycle}.html"
        rc = main(["report", "--lake", str(lakes.open), "--cycle", cycle, "--output", str(output)])
        assert rc == 2
        assert not output.exists()


def test_phone_like_labels_are_masked(lakes: Lakes) -> None:
    """Labels come from the data; one that looks like a phone number never reaches the page."""
    lake = Lake(lakes.open)
    rated = lake.read_rated(CYCLE, columns=RATED_COLUMNS)
    accounts = rated.column("account_id").to_pylist()
    leaked = ["+12125550100" if a == accounts[0] else a for a in accounts]
    rated = rated.set_column(
        rated.schema.get_field_index("account_id"), "account_id", pa.array(leaked, pa.string())
    )
    dead = pa.table({"reason": pa.array(["+14155550123"], pa.string())})
    summary = summarize(rated, CYCLE, dead_letters=dead)
    page = render_html(summary, lake_root=lake.uri, generated_at=datetime(2026, 12, 1, tzinfo=UTC))
    assert "[masked]" in page
    assert "2125550100" not in page
    assert "4155550123" not in page
    assert not PHONE.search(page)
