"""The charts of the cycle page: matplotlib figures drawn as inline SVG.

matplotlib is imported only when drawing. Text stays text (``svg.fonttype: none``) and
ids are stable (``svg.hashsalt``), so the same summary gives the same SVG. Money is
converted to float here only, to draw; every label is formatted from the exact value.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.rating.codes import CallClass
from pipeline.report.formatting import count, escape, minutes, safe_label, usd
from pipeline.report.model import CLASS_ORDER, Account, CycleSummary, Day, Group
from pipeline.report.style import (
    CALLS_COLOUR,
    CHARGES_COLOUR,
    CLASS_COLOURS,
    DEAD_COLOUR,
    MINUTES_COLOUR,
    SURCHARGE_COLOUR,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.typing import RcKeyType


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
    head += f' role="img" aria-label="{escape(title)}" preserveAspectRatio="xMidYMid meet"'
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


def draw_charts(summary: CycleSummary, top: int) -> dict[str, str]:
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
