"""The look of the cycle page: colours shared by the charts and the tables, and the
page's style sheet (inlined in a ``<style>`` element: the page fetches nothing)."""

from __future__ import annotations

from pipeline.rating.codes import CallClass

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

CSS = """
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
