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

:func:`summarize` is pure (Arrow tables in, a :class:`CycleSummary` out);
:func:`load_summary` reads the lake; :func:`render_html` draws;
:func:`write_report` does all three and writes the file atomically.
"""

from __future__ import annotations

import contextlib
import html
import io
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import ConfigError, PipelineError
from pipeline.io.lake import Lake
from pipeline.io.lake import check_cycle as lake_check_cycle
from pipeline.rating.codes import CallClass, LineType, Region
from pipeline.rating.cycle import cycle_bounds, latest_revisions

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.typing import RcKeyType

__all__ = [
    "CycleSummary",
    "ReportResult",
    "load_summary",
    "render_html",
    "summarize",
    "write_report",
]

#: Columns read from the rated records: what the charts need plus the keys that
#: choose the latest revision. No phone-number column is read (CPNI).
RATED_COLUMNS = (
    "call_id",
    "revision",
    "account_id",
    "start_time",
    "billing_cycle",
    "call_class",
    "origin_region",
    "billable_seconds",
    "usage_charge",
    "surcharge",
    "total_charge",
    "source_partition",
    "source_offset",
    "source_file",
    "source_index",
)

CLASS_ORDER: tuple[str, ...] = (
    CallClass.TOLL_FREE.value,
    CallClass.DID.value,
    CallClass.OUTBOUND_LD.value,
    CallClass.FORWARDED.value,
    CallClass.NON_BILLABLE.value,
)
#: Okabe-Ito colours (safe for colour-blind readers); one per call class.
CLASS_COLOURS: dict[str, str] = {
    CallClass.TOLL_FREE.value: "#0072B2",
    CallClass.DID.value: "#009E73",
    CallClass.OUTBOUND_LD.value: "#E69F00",
    CallClass.FORWARDED.value: "#CC79A7",
    CallClass.NON_BILLABLE.value: "#B8BCC2",
}
CALLS_COLOUR = "#7F8C99"
MINUTES_COLOUR = "#56B4E9"
CHARGES_COLOUR = "#1F4E79"
SURCHARGE_COLOUR = "#8E5A9B"
DEAD_COLOUR = "#D55E00"

#: (label, invoice line type) of the four surcharges, in page order.
SURCHARGES: tuple[tuple[str, LineType], ...] = (
    ("payphone", LineType.PAYPHONE_SURCHARGE),
    ("short-call", LineType.SHORT_CALL_SURCHARGE),
    ("carrier-mix", LineType.CARRIER_MIX_SURCHARGE),
    ("minute-cap", LineType.MINUTE_CAP_OVERAGE),
)
FROM_INVOICE_LINES = "invoice_lines"
FROM_RATED_RECORDS = "rated_records"

#: What a phone number looks like in the page (the check the page must pass).
PHONE_IN_PAGE = re.compile(r"\+\d{10,15}")
#: What a phone number looks like in a label taken from the data (masked).
_PHONE_LIKE = re.compile(r"\+?\d{7,15}")
_CENT = Decimal("0.01")
_TENTH = Decimal("0.1")
_SIXTY = Decimal(60)


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Group:
    """Totals of one group of calls (latest revisions). Money is exact (6 places)."""

    key: str
    calls: int = 0
    billable_calls: int = 0
    billable_seconds: int = 0
    usage: Decimal = Decimal(0)
    surcharge: Decimal = Decimal(0)
    total: Decimal = Decimal(0)

    @property
    def minutes(self) -> Decimal:
        """Billable minutes, exact (``billable_seconds / 60``)."""
        return Decimal(self.billable_seconds) / _SIXTY

    def __add__(self, other: Group) -> Group:
        return Group(
            self.key,
            self.calls + other.calls,
            self.billable_calls + other.billable_calls,
            self.billable_seconds + other.billable_seconds,
            self.usage + other.usage,
            self.surcharge + other.surcharge,
            self.total + other.total,
        )


@dataclass(frozen=True)
class Day:
    """One UTC day of the cycle: totals per call class (every class present, maybe 0)."""

    day: date
    by_class: dict[str, Group]

    @property
    def total(self) -> Group:
        out = Group(self.day.isoformat())
        for group in self.by_class.values():
            out = out + group
        return out


@dataclass(frozen=True)
class Account:
    """One account: its totals, per-class totals and (closed cycle) its invoice total."""

    totals: Group
    by_class: dict[str, Group]
    invoice_total: Decimal | None


@dataclass(frozen=True)
class Surcharge:
    """One surcharge of the cycle. ``amount`` None: not known until the cycle is closed.

    ``quantity``/``unit``: the calls or minutes it was charged on; ``lines``: invoice
    lines (closed) or calls carrying it (open)."""

    label: str
    line_type: str
    amount: Decimal | None
    quantity: Decimal | None
    unit: str
    lines: int | None


@dataclass(frozen=True)
class CycleSummary:
    """Everything the page shows about one cycle. Money is exact ``Decimal``."""

    cycle: str
    records: int  # rated records read (every revision)
    totals: Group  # latest revisions only
    by_class: tuple[Group, ...]
    by_region: tuple[Group, ...]
    days: tuple[Day, ...]
    accounts: tuple[Account, ...]  # by total charges, descending
    surcharges: tuple[Surcharge, ...]
    surcharge_source: str  # FROM_INVOICE_LINES or FROM_RATED_RECORDS
    invoice_total: Decimal | None  # None: the cycle is not closed
    invoice_lines: int
    dead_letters: tuple[tuple[str, int], ...]  # (reason, count), most first
    invoice_stale: bool = False  # rated files newer than the invoice lines

    @property
    def closed(self) -> bool:
        return self.invoice_total is not None

    @property
    def superseded(self) -> int:
        """Rated records left out because a higher revision of the call exists."""
        return self.records - self.totals.calls

    @property
    def dead_letter_count(self) -> int:
        return sum(n for _, n in self.dead_letters)


@dataclass(frozen=True)
class ReportResult:
    """What :func:`write_report` wrote."""

    path: Path
    bytes: int
    summary: CycleSummary = field(repr=False)


# --------------------------------------------------------------------------- aggregation (pure)


def check_cycle(cycle: str) -> str:
    """``cycle`` if it is ``YYYY-MM`` (ASCII digits, month 01-12); :class:`ConfigError`
    otherwise (one rule for every command: :func:`pipeline.io.lake.check_cycle`)."""
    return lake_check_cycle(cycle)


def _groups(calls: pa.Table, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Per-group counts and exact sums of ``calls`` (one dict per group)."""
    if calls.num_rows == 0:
        return []
    billable = pc.not_equal(calls.column("call_class"), CallClass.NON_BILLABLE.value)
    table = calls.append_column("_billable", pc.cast(billable, pa.int64()))
    out: list[dict[str, Any]] = (
        table.group_by(list(keys))
        .aggregate(
            [
                ("call_id", "count"),
                ("_billable", "sum"),
                ("billable_seconds", "sum"),
                ("usage_charge", "sum"),
                ("surcharge", "sum"),
                ("total_charge", "sum"),
            ]
        )
        .to_pylist()
    )
    return out


def _group(key: str, row: dict[str, Any]) -> Group:
    return Group(
        key,
        int(row["call_id_count"]),
        int(row["_billable_sum"] or 0),
        int(row["billable_seconds_sum"] or 0),
        row["usage_charge_sum"] or Decimal(0),
        row["surcharge_sum"] or Decimal(0),
        row["total_charge_sum"] or Decimal(0),
    )


def _days(calls: pa.Table, cycle: str) -> tuple[Day, ...]:
    start, end = cycle_bounds(cycle)
    table = calls.append_column("_day", pc.cast(calls.column("start_time"), pa.date32()))
    cells = {(r["_day"], r["call_class"]): r for r in _groups(table, ["_day", "call_class"])}
    days = []
    day = start.date()
    while day < end.date():
        by_class = {
            c: _group(c, cells[(day, c)]) if (day, c) in cells else Group(c) for c in CLASS_ORDER
        }
        days.append(Day(day, by_class))
        day += timedelta(days=1)
    return tuple(days)


def _surcharges_from_invoice(lines: pa.Table) -> tuple[Surcharge, ...]:
    rows = {
        r["line_type"]: r
        for r in lines.group_by(["line_type"])
        .aggregate([("amount", "sum"), ("quantity", "sum"), ("account_id", "count")])
        .to_pylist()
    }
    units = dict(
        zip(lines.column("line_type").to_pylist(), lines.column("unit").to_pylist(), strict=True)
    )
    out = []
    for label, line_type in SURCHARGES:
        row = rows.get(line_type.value)
        out.append(
            Surcharge(
                label,
                line_type.value,
                row["amount_sum"] if row else Decimal(0),
                row["quantity_sum"] if row else Decimal(0),
                units.get(line_type.value, ""),
                int(row["account_id_count"]) if row else 0,
            )
        )
    return tuple(out)


def _surcharges_from_rated(calls: pa.Table) -> tuple[Surcharge, ...]:
    charged = calls.filter(pc.greater(calls.column("surcharge"), pa.scalar(0, pa.int64())))
    amount = pc.sum(charged.column("surcharge")).as_py() if charged.num_rows else Decimal(0)
    out = [
        Surcharge(
            "payphone",
            LineType.PAYPHONE_SURCHARGE.value,
            amount or Decimal(0),
            Decimal(charged.num_rows),
            "CALL",
            charged.num_rows,
        )
    ]
    out.extend(Surcharge(label, t.value, None, None, "", None) for label, t in SURCHARGES[1:])
    return tuple(out)


def summarize(
    rated: pa.Table,
    cycle: str,
    *,
    elsewhere: pa.Table | None = None,
    invoice_lines: pa.Table | None = None,
    dead_letters: pa.Table | None = None,
) -> CycleSummary:
    """Aggregate one cycle. Pure.

    ``rated``: the cycle's rated records, every revision (at least
    :data:`RATED_COLUMNS`); ``elsewhere``: ``call_id``/``revision`` rated in other
    cycles (a higher revision there supersedes a call here); ``invoice_lines``: the
    cycle's invoice lines, or None/empty if the cycle is not closed; ``dead_letters``:
    at least a ``reason`` column.
    """
    check_cycle(cycle)
    rated = rated.filter(pc.equal(rated.column("billing_cycle"), cycle))
    calls = latest_revisions(rated, elsewhere)

    by_class_rows = {r["call_class"]: r for r in _groups(calls, ["call_class"])}
    by_class = tuple(
        _group(c, by_class_rows[c]) for c in CLASS_ORDER if c in by_class_rows
    ) + tuple(_group(c, r) for c, r in sorted(by_class_rows.items()) if c not in CLASS_ORDER)
    totals = Group("all")
    for group in by_class:
        totals = totals + group

    region_rank = {r.value: i for i, r in enumerate(Region)}
    by_region = tuple(
        sorted(
            (_group(r["origin_region"], r) for r in _groups(calls, ["origin_region"])),
            key=lambda g: (-g.total, -g.calls, region_rank.get(g.key, 99), g.key),
        )
    )

    closed = invoice_lines is not None and invoice_lines.num_rows > 0
    invoice_by_account: dict[str, Decimal] = {}
    if invoice_lines is not None and closed:
        for row in (
            invoice_lines.group_by(["account_id"]).aggregate([("amount", "sum")]).to_pylist()
        ):
            invoice_by_account[row["account_id"]] = row["amount_sum"]

    per_account: dict[str, dict[str, Group]] = {}
    for row in _groups(calls, ["account_id", "call_class"]):
        per_account.setdefault(row["account_id"], {})[row["call_class"]] = _group(
            row["call_class"], row
        )
    accounts = []
    for account, classes in per_account.items():
        total = Group(account)
        for group in classes.values():
            total = total + group
        accounts.append(Account(total, classes, invoice_by_account.get(account)))
    accounts.sort(key=lambda a: (-a.totals.total, a.totals.key))

    if invoice_lines is not None and closed:
        surcharges = _surcharges_from_invoice(invoice_lines)
        source = FROM_INVOICE_LINES
        invoice_total: Decimal | None = sum(
            (Decimal(v) for v in invoice_lines.column("amount").to_pylist()), Decimal(0)
        )
    else:
        surcharges = _surcharges_from_rated(calls)
        source = FROM_RATED_RECORDS
        invoice_total = None

    reasons: list[tuple[str, int]] = []
    if dead_letters is not None and dead_letters.num_rows:
        counts = dead_letters.group_by(["reason"]).aggregate([("reason", "count")]).to_pylist()
        reasons = sorted(((r["reason"], int(r["reason_count"])) for r in counts), key=_by_count)

    return CycleSummary(
        cycle=cycle,
        records=rated.num_rows,
        totals=totals,
        by_class=by_class,
        by_region=by_region,
        days=_days(calls, cycle),
        accounts=tuple(accounts),
        surcharges=surcharges,
        surcharge_source=source,
        invoice_total=invoice_total,
        invoice_lines=invoice_lines.num_rows if invoice_lines is not None else 0,
        dead_letters=tuple(reasons),
    )


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return (-item[1], item[0])


# --------------------------------------------------------------------------- reading the lake


def _newest_mtime(directory: Path) -> float | None:
    times = [p.stat().st_mtime for p in directory.glob("*.parquet")] if directory.is_dir() else []
    return max(times) if times else None


def load_summary(lake: Lake, cycle: str) -> CycleSummary:
    """Read what the page needs from ``lake`` and :func:`summarize` it.

    Raises :class:`ConfigError` if ``cycle`` is malformed or has no rated records.
    """
    check_cycle(cycle)
    cycles = lake.cycles()
    if cycle not in cycles:
        known = ", ".join(cycles) if cycles else "none"
        raise ConfigError(f"no rated records for cycle {cycle} in {lake.root} (cycles: {known})")
    try:
        rated = lake.read_rated(cycle, columns=RATED_COLUMNS)
        elsewhere = lake.max_revisions_outside(cycle)
        invoice = lake.read_invoice_lines(cycle)
        dead = lake.read_dead_letters().select(["reason"])
    except (OSError, pa.ArrowException) as exc:
        raise ConfigError(f"cannot read the lake at {lake.root}: {exc}") from exc
    summary = summarize(rated, cycle, elsewhere=elsewhere, invoice_lines=invoice, dead_letters=dead)
    if summary.closed:
        rated_at = _newest_mtime(lake.rated_dir(cycle))
        closed_at = _newest_mtime(lake.invoice_dir(cycle))
        if rated_at is not None and closed_at is not None and rated_at > closed_at:
            summary = replace(summary, invoice_stale=True)
    return summary


# --------------------------------------------------------------------------- formatting


def usd(value: Decimal) -> str:
    """``$1,234.57``: ``value`` rounded half-up to cents, exactly (no float)."""
    cents = value.quantize(_CENT, rounding=ROUND_HALF_UP)
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents):,.2f}"


def minutes(value: Decimal) -> str:
    """Minutes to one decimal place, half-up (``12,345.5``)."""
    return f"{value.quantize(_TENTH, rounding=ROUND_HALF_UP):,.1f}"


def count(value: int) -> str:
    return f"{value:,}"


def safe_label(value: object) -> str:
    """A label taken from the data, with anything that looks like a phone number masked."""
    return _PHONE_LIKE.sub("[masked]", str(value))


def _exact(value: Decimal) -> str:
    """The exact decimal digits (no exponent, no rounding), for ``data-exact``."""
    return f"{value:f}"


def _quantity(value: Decimal, unit: str) -> str:
    """An invoice-line quantity with its unit: ``882 calls``, ``5,761.3 min``."""
    if unit == "CALL":
        return (
            f"{value.to_integral_value(rounding=ROUND_HALF_UP):,} call{'s' if value != 1 else ''}"
        )
    if unit == "MIN":
        return f"{minutes(value)} min"
    return f"{value.normalize():,f} {unit.lower()}".strip()


def _share(part: Decimal, whole: Decimal) -> str:
    if whole == 0:
        return "-"
    return f"{(part * 100 / whole).quantize(_TENTH, rounding=ROUND_HALF_UP)} %"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


# --------------------------------------------------------------------------- charts


_RC: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",  # text stays text: small, selectable, searchable
    "svg.hashsalt": "cdr-pipeline-report",  # stable ids: same data, same SVG
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
    "font.size": 9.5,
    "axes.titlesize": 10.5,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.titlepad": 8,
    "axes.edgecolor": "#9AA3AD",
    "axes.labelcolor": "#333333",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.axisbelow": True,
    "axes.grid": True,
    "grid.color": "#E3E7EB",
    "grid.linewidth": 0.8,
    "xtick.color": "#444444",
    "ytick.color": "#333333",
    "legend.frameon": False,
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
}
WIDTH_IN = 11.0


@contextlib.contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    with matplotlib.rc_context(_RC):
        yield


def _figure(height: float, **kwargs: Any) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(WIDTH_IN, height), **kwargs)


_ID = re.compile(r'\bid="([^"]+)"')
_REF = re.compile(r'(url\(#|href="#)([^")]+)')


def _svg(fig: Figure, chart_id: str, title: str) -> str:
    """The figure as an inline ``<svg>`` element: no XML prolog, no fixed size (it
    scales to its container), ids prefixed with ``chart_id`` so charts never clash."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = _ID.sub(lambda m: f'id="{chart_id}-{m.group(1)}"', text)
    text = _REF.sub(lambda m: f"{m.group(1)}{chart_id}-{m.group(2)}", text)
    head_end = text.index(">")
    head = re.sub(r'\s(width|height)="[^"]*"', "", text[:head_end])
    head += f' role="img" aria-label="{_e(title)}" preserveAspectRatio="xMidYMid meet"'
    return head + text[head_end:]


def _bar_labels(
    ax: Axes, values: Sequence[float], labels: Sequence[str], ys: Sequence[float]
) -> None:
    top = max(values, default=0.0)
    ax.set_xlim(0, top * 1.28 if top > 0 else 1)
    pad = (top or 1) * 0.012
    for y, v, text in zip(ys, values, labels, strict=True):
        ax.text(v + pad, y, text, va="center", ha="left", fontsize=8.5, color="#333333")


def _hbar_panels(
    labels: Sequence[str],
    panels: Sequence[tuple[str, Sequence[float], Sequence[str], str | Sequence[str]]],
) -> Figure:
    """Side-by-side horizontal bar panels over the same categories (first at the top).

    Each panel is (title, values, value labels, colour or one colour per bar)."""
    from matplotlib.ticker import MaxNLocator

    n = max(len(labels), 1)
    fig = _figure(0.9 + 0.3 * n, layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True)
    ys = list(range(len(labels)))
    for i, (ax, (title, values, texts, colour)) in enumerate(zip(axes, panels, strict=True)):
        ax.barh(ys, values, color=colour, height=0.68)
        ax.set_title(title)
        ax.grid(axis="y", visible=False)
        ax.tick_params(axis="x", labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.xaxis.set_major_formatter(_compact())
        _bar_labels(ax, values, texts, ys)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        if i == 0:
            ax.set_yticks(ys, labels)
        else:
            ax.tick_params(axis="y", left=False)
    return fig


def _compact() -> Any:
    from matplotlib.ticker import FuncFormatter

    def fmt(x: float, _pos: int) -> str:
        for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(x) >= div:
                return f"{x / div:g}{suffix}"
        return f"{x:g}"

    return FuncFormatter(fmt)


def _empty(message: str) -> Figure:
    fig = _figure(1.2)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, color="#666666")
    return fig


def _chart_groups(groups: Sequence[Group], colour_by_class: bool) -> Figure:
    if not groups:
        return _empty("no calls")
    labels = [safe_label(g.key) for g in groups]
    panel: list[str | list[str]]
    if colour_by_class:
        colours = [CLASS_COLOURS.get(g.key, CALLS_COLOUR) for g in groups]
        panel = [colours, colours, colours]
    else:
        panel = [CALLS_COLOUR, MINUTES_COLOUR, CHARGES_COLOUR]
    return _hbar_panels(
        labels,
        [
            ("Calls", [g.calls for g in groups], [count(g.calls) for g in groups], panel[0]),
            (
                "Billable minutes",
                [float(g.minutes) for g in groups],
                [minutes(g.minutes) for g in groups],
                panel[1],
            ),
            (
                "Charges (USD)",
                [float(g.total) for g in groups],
                [usd(g.total) for g in groups],
                panel[2],
            ),
        ],
    )


def _float_total(g: Group) -> float:
    return float(g.total)  # drawing only


def _float_minutes(g: Group) -> float:
    return float(g.minutes)  # drawing only


def _chart_days(days: Sequence[Day]) -> Figure:
    fig = _figure(5.6, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    xs = list(range(len(days)))
    classes = [c for c in CLASS_ORDER if c != CallClass.NON_BILLABLE.value]
    metrics: tuple[tuple[Axes, str, Callable[[Group], float]], ...] = (
        (top, "Charges per day (USD), by call class", _float_total),
        (bottom, "Billable minutes per day, by call class", _float_minutes),
    )
    for ax, title, value in metrics:
        base = [0.0] * len(days)
        for c in classes:
            vals = [value(d.by_class[c]) for d in days]
            ax.bar(xs, vals, bottom=base, color=CLASS_COLOURS[c], width=0.8, label=c)
            base = [b + v for b, v in zip(base, vals, strict=True)]
        for i, d in enumerate(days):
            if d.day.weekday() >= 5:
                ax.axvspan(i - 0.5, i + 0.5, color="#F2F4F7", zorder=0, linewidth=0)
        ax.set_title(title)
        ax.grid(axis="x", visible=False)
        ax.yaxis.set_major_formatter(_compact())
        ax.set_xlim(-0.6, len(days) - 0.4)
        ax.set_ylim(0, max(base, default=0.0) * 1.1 or 1.0)
    top.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=len(classes), fontsize=8.5)
    bottom.set_xticks(
        xs,
        [
            f"{d.day.day}\n{d.day:%a}" if d.day.day == 1 or d.day.weekday() == 0 else str(d.day.day)
            for d in days
        ],
        fontsize=8,
    )
    bottom.set_xlabel(f"day of {days[0].day:%B %Y} (UTC); weekends shaded" if days else "")
    return fig


def _chart_surcharges(summary: CycleSummary) -> Figure:
    items = summary.surcharges
    labels = [s.label for s in items]
    values = [float(s.amount) if s.amount is not None else 0.0 for s in items]
    texts = [usd(s.amount) if s.amount is not None else "at close" for s in items]
    fig = _figure(0.9 + 0.34 * len(items), layout="constrained")
    ax = fig.subplots()
    ys = list(range(len(items)))
    ax.barh(ys, values, color=SURCHARGE_COLOUR, height=0.62)
    for y, s in zip(ys, items, strict=True):
        if s.amount is None:
            ax.barh(
                [y],
                [max(values) or 1],
                color="none",
                edgecolor="#C9CED4",
                hatch="///",
                height=0.62,
                linewidth=0.8,
            )
    ax.set_yticks(ys, labels)
    ax.set_ylim(len(items) - 0.5, -0.5)
    ax.grid(axis="y", visible=False)
    ax.xaxis.set_major_formatter(_compact())
    ax.set_xlabel("USD")
    _bar_labels(ax, values, texts, ys)
    return fig


def _chart_accounts(accounts: Sequence[Account]) -> Figure:
    if not accounts:
        return _empty("no accounts")
    labels = [safe_label(a.totals.key) for a in accounts]
    fig = _figure(1.0 + 0.3 * len(accounts), layout="constrained")
    ax = fig.subplots()
    ys = list(range(len(accounts)))
    base = [0.0] * len(accounts)
    for c in CLASS_ORDER:
        if c == CallClass.NON_BILLABLE.value:
            continue
        vals = [float(a.by_class[c].total) if c in a.by_class else 0.0 for a in accounts]
        ax.barh(ys, vals, left=base, color=CLASS_COLOURS[c], height=0.68, label=c)
        base = [b + v for b, v in zip(base, vals, strict=True)]
    ax.set_yticks(ys, labels)
    ax.set_ylim(len(accounts) - 0.5, -0.5)
    ax.grid(axis="y", visible=False)
    ax.xaxis.set_major_formatter(_compact())
    ax.set_xlabel("USD (usage and per-call surcharges as rated)")
    _bar_labels(
        ax, [float(a.totals.total) for a in accounts], [usd(a.totals.total) for a in accounts], ys
    )
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=4, fontsize=8.5)
    return fig


def _chart_dead(dead: Sequence[tuple[str, int]]) -> Figure:
    if not dead:
        return _empty("no dead letters in the lake")
    labels = [safe_label(r) for r, _ in dead]
    fig = _figure(0.9 + 0.32 * len(dead), layout="constrained")
    ax = fig.subplots()
    ys = list(range(len(dead)))
    values = [float(n) for _, n in dead]
    ax.barh(ys, values, color=DEAD_COLOUR, height=0.62)
    ax.set_yticks(ys, labels)
    ax.set_ylim(len(dead) - 0.5, -0.5)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("dead letters (all cycles)")
    _bar_labels(ax, values, [count(n) for _, n in dead], ys)
    return fig


# --------------------------------------------------------------------------- page

_CSS = """
:root { --ink: #1d2733; --muted: #5b6673; --line: #e3e7eb; --panel: #f7f9fb; }
* { box-sizing: border-box; }
body { margin: 0; background: #eef1f4; color: var(--ink);
  font: 15px/1.45 "DejaVu Sans", "Liberation Sans", Arial, Helvetica, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 40px; background: #fff; }
header h1 { margin: 0 0 2px; font-size: 26px; }
header .sub { margin: 0 0 18px; color: var(--muted); }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 10px;
  margin: 0 0 16px; }
.kpi { background: var(--panel); border: 1px solid var(--line); border-radius: 6px;
  padding: 10px 12px; margin: 0; }
.kpi dt { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.kpi dd { margin: 2px 0 0; font-size: 20px; font-weight: bold; font-variant-numeric: tabular-nums; }
.kpi dd small { display: block; font-size: 12px; font-weight: normal; color: var(--muted); }
.meta { font-size: 13px; color: var(--muted); margin: 4px 0; }
.meta code { font-size: 12px; word-break: break-all; }
.note { font-size: 13px; border-left: 4px solid #0072B2; background: #f1f7fc; padding: 8px 12px;
  margin: 10px 0; }
.note.warn { border-color: #D55E00; background: #fdf3ec; }
nav { margin: 14px 0 4px; font-size: 13px; }
nav a { color: #0b5a93; margin-right: 14px; text-decoration: none; }
section { margin-top: 34px; }
h2 { font-size: 19px; margin: 0 0 4px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
section > p { margin: 4px 0 10px; color: var(--muted); font-size: 13px; }
figure.chart { margin: 8px 0 12px; }
figure.chart figcaption { font-size: 13px; color: var(--muted); margin-bottom: 4px; }
figure.chart svg { display: block; width: 100%; height: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 9px; border-bottom: 1px solid var(--line); text-align: left; }
th { background: var(--panel); font-weight: 600; }
td.num, th.num { text-align: right; white-space: nowrap; }
tfoot td { font-weight: bold; border-top: 2px solid #c9ced4; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
details summary { cursor: pointer; color: #0b5a93; font-size: 13px; margin: 6px 0; }
footer { margin-top: 36px; font-size: 12px; color: var(--muted); }
"""


def _money_td(value: Decimal | None) -> str:
    if value is None:
        return '<td class="num">at close</td>'
    return f'<td class="num" data-exact="{_exact(value)}">{usd(value)}</td>'


def _num_td(text: str) -> str:
    return f'<td class="num">{_e(text)}</td>'


def _table(head: Sequence[str], rows: Sequence[str], foot: str = "", numeric_from: int = 1) -> str:
    cells = "".join(
        f'<th class="num">{_e(h)}</th>' if i >= numeric_from else f"<th>{_e(h)}</th>"
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
        + _num_td(_share(g.total, whole))
    )


_GROUP_HEAD = ("calls", "billable", "billable min", "usage", "surcharges", "charges", "share")


def _group_table(first: str, groups: Sequence[Group], totals: Group, swatches: bool) -> str:
    rows = []
    for g in groups:
        colour = CLASS_COLOURS.get(g.key)
        swatch = (
            f'<span class="swatch" style="background:{colour}"></span>'
            if swatches and colour
            else ""
        )
        rows.append(f"<td>{swatch}{_e(safe_label(g.key))}</td>" + _group_cells(g, totals.total))
    foot = "<td>all</td>" + _group_cells(totals, totals.total)
    return _table((first, *_GROUP_HEAD), rows, foot)


def _figure_html(chart_id: str, title: str, caption: str, svg: str) -> str:
    return (
        f'<figure class="chart" id="{chart_id}"><figcaption><strong>{_e(title)}</strong>'
        f" &middot; {_e(caption)}</figcaption>{svg}</figure>"
    )


def _section(anchor: str, heading: str, intro: str, body: str, attrs: str = "") -> str:
    return f'<section id="{anchor}"{attrs}><h2>{_e(heading)}</h2><p>{_e(intro)}</p>{body}</section>'


def _kpi(
    label: str, value: str, sub: str = "", ident: str = "", exact: Decimal | None = None
) -> str:
    attrs = f' id="{ident}"' if ident else ""
    if exact is not None:
        attrs += f' data-exact="{_exact(exact)}"'
    small = f"<small>{_e(sub)}</small>" if sub else ""
    return f'<div class="kpi"><dt>{_e(label)}</dt><dd{attrs}>{_e(value)}{small}</dd></div>'


def _charts(summary: CycleSummary, top: int) -> dict[str, str]:
    """chart id -> inline SVG (matplotlib is imported here, only when drawing)."""
    charts: dict[str, tuple[str, Callable[[], Figure]]] = {
        "chart-by-class": (
            "Minutes and charges by call class",
            lambda: _chart_groups(summary.by_class, colour_by_class=True),
        ),
        "chart-by-region": (
            "Minutes and charges by origin region",
            lambda: _chart_groups(summary.by_region, colour_by_class=False),
        ),
        "chart-by-day": ("Charges and minutes per day", lambda: _chart_days(summary.days)),
        "chart-surcharges": ("Surcharges", lambda: _chart_surcharges(summary)),
        "chart-top-accounts": (
            f"Top {top} accounts by charges",
            lambda: _chart_accounts(summary.accounts[:top]),
        ),
        "chart-dead-letters": (
            "Dead letters by reason",
            lambda: _chart_dead(summary.dead_letters),
        ),
    }
    out = {}
    with _style():
        for chart_id, (title, draw) in charts.items():
            out[chart_id] = _svg(draw(), chart_id, title)
    return out


def render_html(
    summary: CycleSummary, *, lake_root: Path, generated_at: datetime, top: int = 15
) -> str:
    """The page as one HTML string, everything inline. ``generated_at`` is shown in UTC.

    Raises :class:`PipelineError` if the page would contain a phone number (it never
    should: no phone-number column is read and labels are masked)."""
    s = summary
    svg = _charts(s, top)
    t = s.totals
    closed = s.closed
    generated = generated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    surcharge_total = sum((x.amount for x in s.surcharges if x.amount is not None), Decimal(0))

    kpis = [
        _kpi("calls", count(t.calls), f"{count(t.billable_calls)} billable", "kpi-calls"),
        _kpi("billable minutes", minutes(t.minutes), "", "kpi-minutes"),
        _kpi("rated charges", usd(t.total), "usage + per-call surcharges", "kpi-charges", t.total),
        _kpi(
            "invoice total",
            usd(s.invoice_total) if s.invoice_total is not None else "not closed",
            f"{count(s.invoice_lines)} invoice lines" if closed else "run close-cycle first",
            "kpi-invoice",
            s.invoice_total,
        ),
        _kpi("accounts", count(len(s.accounts)), "", "kpi-accounts"),
        _kpi("dead letters", count(s.dead_letter_count), "in the lake, all cycles", "kpi-dead"),
    ]
    source = (
        "the cycle's invoice lines (the cycle is closed)"
        if s.surcharge_source == FROM_INVOICE_LINES
        else "the rated records' surcharge column (the cycle is not closed: only the per-call "
        "payphone surcharge is known; short-call, carrier-mix and minute-cap are computed "
        "when the cycle is closed)"
    )
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
    sections = []
    sections.append(
        _section(
            "by-class",
            "Minutes and charges by call class",
            "Latest revision of each call. Charges are usage plus per-call surcharges as rated; "
            "cycle surcharges (C2-C4) are in the surcharges section.",
            _figure_html(
                "chart-by-class",
                "Minutes and charges by call class",
                "calls, billable minutes and charges per class (R2/R3)",
                svg["chart-by-class"],
            )
            + _group_table("call class", s.by_class, t, swatches=True),
        )
    )
    sections.append(
        _section(
            "by-region",
            "Minutes and charges by origin region",
            "Origin region of each call (R-REGION): the caller for inbound and outbound legs, "
            "the original caller for forwarded legs' rating. Sorted by charges.",
            _figure_html(
                "chart-by-region",
                "Minutes and charges by origin region",
                "calls, billable minutes and charges per origin region",
                svg["chart-by-region"],
            )
            + _group_table("origin region", s.by_region, t, swatches=False),
        )
    )
    day_rows = [
        f"<td>{d.day.isoformat()} {d.day:%a}</td>"
        + _num_td(count(d.total.calls))
        + _num_td(minutes(d.total.minutes))
        + _money_td(d.total.total)
        for d in s.days
    ]
    sections.append(
        _section(
            "by-day",
            "By day",
            "Calls by the UTC day of their start time (billing cycles are UTC months).",
            _figure_html(
                "chart-by-day",
                "Charges and minutes per day",
                "stacked by call class",
                svg["chart-by-day"],
            )
            + "<details><summary>Table of days</summary>"
            + _table(("day (UTC)", "calls", "billable min", "charges"), day_rows)
            + "</details>",
        )
    )
    sur_rows = []
    for x in s.surcharges:
        basis = _quantity(x.quantity, x.unit) if x.quantity is not None else "at close"
        lines = count(x.lines) if x.lines is not None else "-"
        sur_rows.append(
            f"<td>{_e(x.label)}</td><td>{_e(x.line_type)}</td>"
            + _num_td(basis)
            + _num_td(lines)
            + _money_td(x.amount)
        )
    sur_foot = "<td>all</td><td></td><td></td><td></td>" + _money_td(surcharge_total)
    count_head = "invoice lines" if s.surcharge_source == FROM_INVOICE_LINES else "calls"
    sections.append(
        _section(
            "surcharges",
            "Surcharges",
            f"Source: {source}.",
            _figure_html(
                "chart-surcharges",
                "Surcharges",
                "payphone (R8), short-call (C2), carrier-mix (C3), minute-cap (C4)",
                svg["chart-surcharges"],
            )
            + _table(
                ("surcharge", "line type", "charged on", count_head, "amount"),
                sur_rows,
                sur_foot,
                numeric_from=2,
            ),
            f' data-source="{s.surcharge_source}"',
        )
    )
    acc_rows = []
    for rank, a in enumerate(s.accounts[:top], start=1):
        g = a.totals
        acc_rows.append(
            _num_td(str(rank))
            + f"<td>{_e(safe_label(g.key))}</td>"
            + _num_td(count(g.calls))
            + _num_td(minutes(g.minutes))
            + _money_td(g.usage)
            + _money_td(g.surcharge)
            + _money_td(g.total)
            + _num_td(_share(g.total, t.total))
            + (_money_td(a.invoice_total) if closed else "")
        )
    acc_head = ["#", "account", "calls", "billable min", "usage", "surcharges", "charges", "share"]
    if closed:
        acc_head.append("invoice total")
    shown = min(top, len(s.accounts))
    sections.append(
        _section(
            "top-accounts",
            "Top accounts by charges",
            (
                f"All {shown} accounts, ranked by rated charges"
                if shown == len(s.accounts)
                else f"The {shown} of {count(len(s.accounts))} accounts with the highest rated charges"
            )
            + (
                "; the invoice total adds the cycle surcharges and rounds per invoice line."
                if closed
                else "."
            ),
            _figure_html(
                "chart-top-accounts",
                f"Top {shown} accounts by charges",
                "rated charges, stacked by call class",
                svg["chart-top-accounts"],
            )
            + _table(acc_head, acc_rows, numeric_from=2).replace(
                "<th>#</th>", '<th class="num">#</th>', 1
            ),
        )
    )
    dead_rows = [f"<td>{_e(safe_label(r))}</td>" + _num_td(count(n)) for r, n in s.dead_letters]
    sections.append(
        _section(
            "dead-letters",
            "Dead letters by reason",
            "Every dead letter in the lake (the lake does not partition dead letters by cycle). "
            "Fix the cause, then replay them with cdr-pipeline dead-letters replay.",
            _figure_html(
                "chart-dead-letters",
                "Dead letters by reason",
                "reason codes of R1 and the adapters",
                svg["chart-dead-letters"],
            )
            + _table(
                ("reason", "dead letters"),
                dead_rows,
                "<td>all</td>" + _num_td(count(s.dead_letter_count)) if dead_rows else "",
            ),
        )
    )
    nav = "".join(
        f'<a href="#{a}">{_e(label)}</a>'
        for a, label in (
            ("by-class", "call class"),
            ("by-region", "origin region"),
            ("by-day", "by day"),
            ("surcharges", "surcharges"),
            ("top-accounts", "top accounts"),
            ("dead-letters", "dead letters"),
        )
    )
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="cdr-pipeline report">
<title>Billing cycle {_e(s.cycle)} &middot; cdr-pipeline report</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<header>
<h1>Billing cycle {_e(s.cycle)}</h1>
<p class="sub">Usage, charges and dead letters &middot; cdr-pipeline cycle report</p>
<dl class="kpis">{"".join(kpis)}</dl>
<p class="meta">Generated <time datetime="{generated_at.astimezone(UTC).isoformat()}">{generated}</time>
 from the lake at <code>{_e(lake_root)}</code>.</p>
<p class="meta">{count(s.records)} rated records read; {count(s.superseded)} superseded revisions left
 out (the highest revision of each call counts, as at cycle close). Surcharges come from {_e(source)}.
 Money is summed exactly and shown rounded half-up to cents.</p>
{"".join(notes)}
<nav>{nav}</nav>
</header>
{"".join(sections)}
<footer>cdr-pipeline &middot; cycle {_e(s.cycle)} &middot; self-contained page: no scripts, fonts or
 images are loaded from anywhere.</footer>
</main>
</body>
</html>
"""
    if PHONE_IN_PAGE.search(page):
        raise PipelineError("refusing to write the report: it would contain a phone number")
    return page


def check_output_outside_lake(output: Path, lake: Lake) -> None:
    """:class:`ConfigError` if ``output`` is the lake or lies inside it, compared as
    resolved paths (symlinks and ``..`` followed, also for a file that does not exist
    yet): a page written into a table directory breaks every later read of the lake."""
    root = lake.root.resolve()
    target = output.resolve()
    if target == root or target.is_relative_to(root):
        raise ConfigError(
            f"--output {output} is inside the lake {lake.root}: write the report outside it"
        )


def write_report(
    lake: Lake,
    cycle: str,
    output: Path,
    *,
    top: int = 15,
    now: datetime | None = None,
) -> ReportResult:
    """Write the page of ``cycle`` to ``output`` (temp file, then rename: a reader never
    sees half a page). Raises :class:`ConfigError` for a bad cycle, a cycle with no
    rated records, an output inside the lake, or an output path that cannot be written."""
    if top < 1:
        raise ConfigError("--top must be at least 1")
    check_output_outside_lake(output, lake)
    summary = load_summary(lake, cycle)
    page = render_html(
        summary,
        lake_root=lake.root.resolve(),
        generated_at=now or datetime.now(UTC),
        top=top,
    )
    data = page.encode("utf-8")
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, output)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ConfigError(f"--output {output}: cannot write: {exc.strerror or exc}") from exc
    return ReportResult(output, len(data), summary)
