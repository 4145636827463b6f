"""``cdr-pipeline report``: one billing cycle as a self-contained HTML page.

Contract:

* Input is the lake only. Each call counts once, at its highest revision, with the
  same rule as the cycle close (:func:`pipeline.rating.cycle.latest_revisions`,
  including revisions rated into other cycles' partitions).
* Output is one HTML file with everything inline: CSS in a ``<style>`` element and
  each chart as an inline SVG drawn by matplotlib. No script, font, image or style
  sheet is fetched, so the page opens offline and can be mailed or archived.
* Each chart sits in ``<figure class="chart" id="chart-...">`` with a ``<figcaption>``
  title, followed by a table of the exact numbers. Money in text and tables comes
  from exact ``Decimal`` sums, rounded half-up to cents for display (the exact
  6-decimal sum is in the cell's ``data-exact`` attribute); only the drawing
  converts to float.
* CPNI: the phone-number columns are never read, and labels taken from the data
  are masked if they look like a phone number; the page is refused (never written)
  if it still contains one.
* Surcharges come from the cycle's invoice lines when it is closed (all four:
  payphone, short-call, carrier-mix, minute-cap), else from the rated records'
  ``surcharge`` column (payphone only: C2-C4 exist only once the cycle is closed).
  The page says which.
* Days are UTC calendar days, as billing cycles are. Dead letters are not
  partitioned by cycle in the lake (a dead letter may have no readable start
  time), so the page counts every dead letter in the lake and says so.
* A closed cycle whose rated files are newer than its invoice lines gets a
  "stale invoice lines" warning (close it again).

The parts, each usable alone:

* :mod:`~pipeline.report.model`: the dataclasses (:class:`CycleSummary` and its parts).
* :mod:`~pipeline.report.data`: :func:`summarize` is pure (Arrow tables in, a
  :class:`CycleSummary` out); :func:`load_summary` reads the lake and summarizes.
* :mod:`~pipeline.report.formatting`: money, minutes, counts and masked labels as text.
* :mod:`~pipeline.report.style`: the colours and the style sheet.
* :mod:`~pipeline.report.charts`: the matplotlib charts as inline SVG.
* :mod:`~pipeline.report.page`: :func:`render_html`, the page from section builders,
  and the phone-number guard.
* :mod:`~pipeline.report.write`: :func:`write_report` does all of it and writes the
  file atomically.
"""

from __future__ import annotations

from pipeline.report.data import RATED_COLUMNS, load_summary, summarize
from pipeline.report.model import CycleSummary, ReportResult
from pipeline.report.page import PHONE_IN_PAGE, render_html
from pipeline.report.style import CHARGES_COLOUR, CLASS_COLOURS, MINUTES_COLOUR
from pipeline.report.write import write_report

__all__ = [
    "CHARGES_COLOUR",
    "CLASS_COLOURS",
    "MINUTES_COLOUR",
    "PHONE_IN_PAGE",
    "RATED_COLUMNS",
    "CycleSummary",
    "ReportResult",
    "load_summary",
    "render_html",
    "summarize",
    "write_report",
]
