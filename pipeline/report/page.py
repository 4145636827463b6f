"""The cycle page: one self-contained HTML document built from small section builders.

Each chart sits in ``<figure class="chart" id="chart-...">`` with a ``<figcaption>``
title, followed by a table of the exact numbers. Money cells show the sum rounded
half-up to cents, with the exact sum in ``data-exact``. CPNI: :func:`render_html`
refuses a page that would contain a phone number (:data:`PHONE_IN_PAGE`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.report.charts import draw_charts
from pipeline.report.formatting import (
    count,
    escape,
    exact,
    minutes,
    quantity,
    safe_label,
    share,
    usd,
)
from pipeline.report.model import FROM_INVOICE_LINES, CycleSummary, Group
from pipeline.report.style import CLASS_COLOURS, CSS

#: What a phone number looks like in the page (the check the page must pass).
PHONE_IN_PAGE = re.compile(r"\+\d{10,15}")

#: (anchor, link text) of the sections, in page order.
_NAV = (
    ("by-class", "call class"),
    ("by-region", "origin region"),
    ("by-day", "by day"),
    ("surcharges", "surcharges"),
    ("top-accounts", "top accounts"),
    ("dead-letters", "dead letters"),
)
_GROUP_HEAD = ("calls", "billable", "billable min", "usage", "surcharges", "charges", "share")


# --------------------------------------------------------------------------- HTML pieces


def _money_td(value: Decimal | None) -> str:
    if value is None:
        return '<td class="num">at close</td>'
    return f'<td class="num" data-exact="{exact(value)}">{usd(value)}</td>'


def _num_td(text: str) -> str:
    return f'<td class="num">{escape(text)}</td>'


def _table(head: Sequence[str], rows: Sequence[str], foot: str = "", numeric_from: int = 1) -> str:
    cells = "".join(
        f'<th class="num">{escape(h)}</th>' if i >= numeric_from else f"<th>{escape(h)}</th>"
        for i, h in enumerate(head)
    )
    body = "".join(f"<tr>{r}</tr>" for r in rows)
    tfoot = f"<tfoot><tr>{foot}</tr></tfoot>" if foot else ""
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody>{tfoot}</table>"


def _group_cells(g: Group, whole: Decimal) -> str:
    return (
        _num_td(count(g.calls))
        + _num_td(count(g.billable_calls))
        + _num_td(minutes(g.minutes))
        + _money_td(g.usage)
        + _money_td(g.surcharge)
        + _money_td(g.total)
        + _num_td(share(g.total, whole))
    )


def _group_table(first: str, groups: Sequence[Group], totals: Group, swatches: bool) -> str:
    rows = []
    for g in groups:
        colour = CLASS_COLOURS.get(g.key)
        swatch = (
            f'<span class="swatch" style="background:{colour}"></span>'
            if swatches and colour
            else ""
        )
        rows.append(f"<td>{swatch}{escape(safe_label(g.key))}</td>" + _group_cells(g, totals.total))
    foot = "<td>all</td>" + _group_cells(totals, totals.total)
    return _table((first, *_GROUP_HEAD), rows, foot)


def _figure_html(chart_id: str, title: str, caption: str, svg: str) -> str:
    return (
        f'<figure class="chart" id="{chart_id}"><figcaption><strong>{escape(title)}</strong>'
        f" &middot; {escape(caption)}</figcaption>{svg}</figure>"
    )


def _section(anchor: str, heading: str, intro: str, body: str, attrs: str = "") -> str:
    return (
        f'<section id="{anchor}"{attrs}><h2>{escape(heading)}</h2>'
        f"<p>{escape(intro)}</p>{body}</section>"
    )


def _kpi(
    label: str, value: str, sub: str = "", ident: str = "", exact_value: Decimal | None = None
) -> str:
    attrs = f' id="{ident}"' if ident else ""
    if exact_value is not None:
        attrs += f' data-exact="{exact(exact_value)}"'
    small = f"<small>{escape(sub)}</small>" if sub else ""
    return f'<div class="kpi"><dt>{escape(label)}</dt><dd{attrs}>{escape(value)}{small}</dd></div>'


def _surcharge_source(s: CycleSummary) -> str:
    """Where the surcharges come from, in words (the header and the surcharges section)."""
    if s.surcharge_source == FROM_INVOICE_LINES:
        return "the cycle's invoice lines (the cycle is closed)"
    return (
        "the rated records' surcharge column (the cycle is not closed: only the per-call "
        "payphone surcharge is known; short-call, carrier-mix and minute-cap are computed "
        "when the cycle is closed)"
    )


# --------------------------------------------------------------------------- header


def _kpis(s: CycleSummary) -> str:
    t = s.totals
    return "".join(
        (
            _kpi("calls", count(t.calls), f"{count(t.billable_calls)} billable", "kpi-calls"),
            _kpi("billable minutes", minutes(t.minutes), "", "kpi-minutes"),
            _kpi(
                "rated charges", usd(t.total), "usage + per-call surcharges", "kpi-charges", t.total
            ),
            _kpi(
                "invoice total",
                usd(s.invoice_total) if s.invoice_total is not None else "not closed",
                f"{count(s.invoice_lines)} invoice lines" if s.closed else "run close-cycle first",
                "kpi-invoice",
                s.invoice_total,
            ),
            _kpi("accounts", count(len(s.accounts)), "", "kpi-accounts"),
            _kpi("dead letters", count(s.dead_letter_count), "in the lake, all cycles", "kpi-dead"),
        )
    )


def _notes(s: CycleSummary) -> str:
    notes = [
        '<p class="note cpni"><strong>CPNI.</strong> This report holds no telephone numbers: '
        "it is built from call classes, regions, accounts, durations and charges only, and "
        "never reads the calling or called number columns. It is still customer information: "
        "share it only with those entitled to see billing data.</p>"
    ]
    if s.invoice_stale:
        notes.append(
            '<p class="note warn"><strong>Stale invoice lines.</strong> Rated records were written '
            "after the cycle was closed; close the cycle again to bring the invoice lines and "
            "surcharges up to date.</p>"
        )
    return "".join(notes)


def _header(s: CycleSummary, lake_root: str | Path, generated_at: datetime) -> str:
    """Title, key figures, provenance, notes and the section links."""
    generated = generated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    nav = "".join(f'<a href="#{a}">{escape(label)}</a>' for a, label in _NAV)
    return f"""<header>
<h1>Billing cycle {escape(s.cycle)}</h1>
<p class="sub">Usage, charges and dead letters &middot; cdr-pipeline cycle report</p>
<dl class="kpis">{_kpis(s)}</dl>
<p class="meta">Generated <time datetime="{generated_at.astimezone(UTC).isoformat()}">{generated}</time>
 from the lake at <code>{escape(lake_root)}</code>.</p>
<p class="meta">{count(s.records)} rated records read; {count(s.superseded)} superseded revisions left
 out (the highest revision of each call counts, as at cycle close). Surcharges come from {escape(_surcharge_source(s))}.
 Money is summed exactly and shown rounded half-up to cents.</p>
{_notes(s)}
<nav>{nav}</nav>
</header>"""


# --------------------------------------------------------------------------- sections


def _chart_section(
    anchor: str, heading: str, intro: str, chart: tuple[str, str, str], table: str, attrs: str = ""
) -> str:
    """A section: heading, intro, the chart ``chart-<anchor>`` as (title, caption, svg),
    then the table of its exact numbers."""
    title, caption, svg = chart
    return _section(
        anchor, heading, intro, _figure_html(f"chart-{anchor}", title, caption, svg) + table, attrs
    )


def _class_section(s: CycleSummary, svg: dict[str, str]) -> str:
    heading = "Minutes and charges by call class"
    return _chart_section(
        "by-class",
        heading,
        "Latest revision of each call. Charges are usage plus per-call surcharges as rated; "
        "cycle surcharges (C2-C4) are in the surcharges section.",
        (heading, "calls, billable minutes and charges per class (R2/R3)", svg["chart-by-class"]),
        _group_table("call class", s.by_class, s.totals, swatches=True),
    )


def _region_section(s: CycleSummary, svg: dict[str, str]) -> str:
    heading = "Minutes and charges by origin region"
    caption = "calls, billable minutes and charges per origin region"
    return _chart_section(
        "by-region",
        heading,
        "Origin region of each call (R-REGION): the caller for inbound and outbound legs, "
        "the original caller for forwarded legs' rating. Sorted by charges.",
        (heading, caption, svg["chart-by-region"]),
        _group_table("origin region", s.by_region, s.totals, swatches=False),
    )


def _day_section(s: CycleSummary, svg: dict[str, str]) -> str:
    rows = [
        f"<td>{d.day.isoformat()} {d.day:%a}</td>"
        + _num_td(count(d.total.calls))
        + _num_td(minutes(d.total.minutes))
        + _money_td(d.total.total)
        for d in s.days
    ]
    return _chart_section(
        "by-day",
        "By day",
        "Calls by the UTC day of their start time (billing cycles are UTC months).",
        ("Charges and minutes per day", "stacked by call class", svg["chart-by-day"]),
        "<details><summary>Table of days</summary>"
        + _table(("day (UTC)", "calls", "billable min", "charges"), rows)
        + "</details>",
    )


def _surcharge_section(s: CycleSummary, svg: dict[str, str]) -> str:
    rows = []
    for x in s.surcharges:
        basis = quantity(x.quantity, x.unit) if x.quantity is not None else "at close"
        lines = count(x.lines) if x.lines is not None else "-"
        rows.append(
            f"<td>{escape(x.label)}</td><td>{escape(x.line_type)}</td>"
            + _num_td(basis)
            + _num_td(lines)
            + _money_td(x.amount)
        )
    total = sum((x.amount for x in s.surcharges if x.amount is not None), Decimal(0))
    foot = "<td>all</td><td></td><td></td><td></td>" + _money_td(total)
    count_head = "invoice lines" if s.surcharge_source == FROM_INVOICE_LINES else "calls"
    caption = "payphone (R8), short-call (C2), carrier-mix (C3), minute-cap (C4)"
    return _chart_section(
        "surcharges",
        "Surcharges",
        f"Source: {_surcharge_source(s)}.",
        ("Surcharges", caption, svg["chart-surcharges"]),
        _table(
            ("surcharge", "line type", "charged on", count_head, "amount"),
            rows,
            foot,
            numeric_from=2,
        ),
        f' data-source="{s.surcharge_source}"',
    )


def _accounts_section(s: CycleSummary, svg: dict[str, str], top: int) -> str:
    rows = []
    for rank, a in enumerate(s.accounts[:top], start=1):
        g = a.totals
        rows.append(
            _num_td(str(rank))
            + f"<td>{escape(safe_label(g.key))}</td>"
            + _num_td(count(g.calls))
            + _num_td(minutes(g.minutes))
            + _money_td(g.usage)
            + _money_td(g.surcharge)
            + _money_td(g.total)
            + _num_td(share(g.total, s.totals.total))
            + (_money_td(a.invoice_total) if s.closed else "")
        )
    head = ["#", "account", "calls", "billable min", "usage", "surcharges", "charges", "share"]
    if s.closed:
        head.append("invoice total")
    shown = min(top, len(s.accounts))
    intro = (
        f"All {shown} accounts, ranked by rated charges"
        if shown == len(s.accounts)
        else f"The {shown} of {count(len(s.accounts))} accounts with the highest rated charges"
    ) + (
        "; the invoice total adds the cycle surcharges and rounds per invoice line."
        if s.closed
        else "."
    )
    title = f"Top {shown} accounts by charges"
    return _chart_section(
        "top-accounts",
        "Top accounts by charges",
        intro,
        (title, "rated charges, stacked by call class", svg["chart-top-accounts"]),
        _table(head, rows, numeric_from=2).replace("<th>#</th>", '<th class="num">#</th>', 1),
    )


def _dead_letter_section(s: CycleSummary, svg: dict[str, str]) -> str:
    rows = [f"<td>{escape(safe_label(r))}</td>" + _num_td(count(n)) for r, n in s.dead_letters]
    heading = "Dead letters by reason"
    return _chart_section(
        "dead-letters",
        heading,
        "Every dead letter in the lake (the lake does not partition dead letters by cycle). "
        "Fix the cause, then replay them with cdr-pipeline dead-letters replay.",
        (heading, "reason codes of R1 and the adapters", svg["chart-dead-letters"]),
        _table(
            ("reason", "dead letters"),
            rows,
            "<td>all</td>" + _num_td(count(s.dead_letter_count)) if rows else "",
        ),
    )


# --------------------------------------------------------------------------- page


def _document(s: CycleSummary, header: str, sections: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="cdr-pipeline report">
<title>Billing cycle {escape(s.cycle)} &middot; cdr-pipeline report</title>
<style>{CSS}</style>
</head>
<body>
<main>
{header}
{sections}
<footer>cdr-pipeline &middot; cycle {escape(s.cycle)} &middot; self-contained page: no scripts, fonts or
 images are loaded from anywhere.</footer>
</main>
</body>
</html>
"""


def render_html(
    summary: CycleSummary, *, lake_root: str | Path, generated_at: datetime, top: int = 15
) -> str:
    """The page as one HTML string, everything inline. ``generated_at`` is shown in UTC.

    Raises :class:`PipelineError` if the page would contain a phone number (it never
    should: no phone-number column is read and labels are masked)."""
    svg = draw_charts(summary, top)
    sections = (
        _class_section(summary, svg),
        _region_section(summary, svg),
        _day_section(summary, svg),
        _surcharge_section(summary, svg),
        _accounts_section(summary, svg, top),
        _dead_letter_section(summary, svg),
    )
    page = _document(summary, _header(summary, lake_root, generated_at), "".join(sections))
    if PHONE_IN_PAGE.search(page):
        raise PipelineError("refusing to write the report: it would contain a phone number")
    return page
