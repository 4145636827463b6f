"""Benchmark entry point (``make bench``): wire decode, then the streaming benchmark.

Run: ``.venv/bin/python -m benchmarks.run [--events N] [--partitions P] [--lnp N] ...``
(every option of :mod:`benchmarks.bench_streaming`, plus ``--decode-messages``).
Prints the decode numbers, the streaming tables and a short summary against the
targets of issue 3, and writes ``benchmarks/results/latest.json``. Not part of
``make test``: numbers depend on the machine, and on what else runs on it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
from pathlib import Path
from typing import Any

from benchmarks import bench_decode, bench_streaming

_DECODE_LINE = re.compile(r"decode_batch (?P<name>.+?)\s+(?P<rate>[\d,]+) records/s")


def run_decode(messages: int) -> dict[str, Any]:
    """``bench_decode`` (its output echoed) and the records/s it printed."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        bench_decode.main(["--messages", str(messages)])
    text = buffer.getvalue()
    sys.stdout.write(text)
    rates = {
        m["name"].strip(): float(m["rate"].replace(",", "")) for m in _DECODE_LINE.finditer(text)
    }
    return {"messages": messages, "records_per_s": rates, "output": text.splitlines()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--decode-messages", type=int, default=200_000)
    parser.add_argument("--skip-decode", action="store_true")
    known, rest = parser.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print("benchmarks.run options: --decode-messages N, --skip-decode; streaming options:")
    opts = bench_streaming.parse_args(rest)
    console = bench_streaming.make_console()
    decode = None
    if not known.skip_decode:
        console.rule("bench_decode: wire-format decode")
        decode = run_decode(known.decode_messages)
    console.rule("bench_streaming: one consumer process vs per-record baseline")
    results = bench_streaming.run(opts)
    if decode is not None:
        results["decode"] = decode
    bench_streaming.render(results, console)
    path = bench_streaming.write_results(results, Path(opts.results))

    s, b, lat = results["service"], results["baseline"], results["latency"]
    t = results["targets"]
    console.rule("summary")
    if decode is not None:
        for name, rate in decode["records_per_s"].items():
            console.print(f"decode {name:<28} {rate:>12,.0f} records/s")
    ratio = results["ratio_vs_baseline"]
    console.print(
        f"service   {s['cdr_per_s']:>12,.0f} CDR/s  (target {t['cdr_per_s']:,}: "
        f"{'met' if t['cdr_per_s_met'] else 'NOT met'})"
    )
    console.print(f"baseline  {b['cdr_per_s']:>12,.0f} CDR/s")
    raw = results.get("raw_consume")
    if raw:
        console.print(
            f"raw       {raw['per_s']:>12,.0f} msg/s  (consume only: the broker's ceiling here)"
        )
    console.print(
        f"ratio     {ratio or 0:>12.1f}x      (target {t['ratio_vs_baseline']:.0f}x: "
        f"{'met' if t['ratio_met'] else 'NOT met'})"
    )
    console.print(
        f"latency   p50 {lat['p50_ms'] or 0:,.0f} ms, p99 {lat['p99_ms'] or 0:,.0f} ms "
        f"at {lat['offered_rate']:,} events/s"
    )
    console.print(
        f"peak RSS  service {s['peak_rss_mb']:,.0f} MB, baseline {b['peak_rss_mb']:,.0f} MB"
    )
    if "malformed" in results:
        console.print(
            f"garbage   {results['malformed']['cdr_per_s']:>12,.0f} msg/s with "
            f"{results['malformed_setup']['share']:.0%} malformed: "
            f"{results['malformed_ratio']:.2f} of clean (target {t['malformed_ratio']}: "
            f"{'met' if t['malformed_ratio_met'] else 'NOT met'})"
        )
    if "backlog" in results:
        console.print(
            f"backlog   peak RSS {results['backlog']['peak_rss_mb']:,.0f} MB on the pre-filled "
            f"topic, service defaults (target < {t['backlog_rss_mb']} MiB: "
            f"{'met' if t['backlog_rss_met'] else 'NOT met'})"
        )
    if "memory_defaults_cost" in results:
        console.print(
            f"memory    new defaults cost {results['memory_defaults_cost']:+.1%} of the "
            f"msg/s of the old ones, {results['memory_defaults_cpu_cost']:+.1%} CPU per event "
            f"(target <= {t['memory_defaults_cost']:.0%}: "
            f"{'met' if t['memory_defaults_cost_met'] else 'NOT met'})"
        )
    console.print(f"results   {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
