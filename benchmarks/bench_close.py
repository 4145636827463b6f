"""Peak memory and time of ``cdr-pipeline close-cycle`` by cycle size (issue 9 #5).

    .venv/bin/python -m benchmarks.bench_close [--sizes 1000000,4000000,16000000]
        [--cache DIR] [--old PYTHONPATH] [--old-max N] [--memory-limit 1GB]

For each size N: ``cdr-pipeline generate --events N`` and ``cdr-pipeline rate`` into a
lake, once, kept in ``--cache`` (default ``/tmp/cdr-bench-close``: 16M events take a
few minutes to generate and rate; later runs reuse them), then ``close-cycle`` of the
generated cycle in a child process, timed, its peak RSS read from ``wait4`` (the
child's own ``ru_maxrss``). ``--old DIR``: also run the code found at ``DIR`` (e.g. a
checkout of the commit before the out-of-core close, whose ``close-cycle`` loads the
cycle in memory) for sizes up to ``--old-max``. Target: peak RSS under 1.5 GiB at
16M rated rows, time growing linearly. Not a test: numbers depend on the machine and
on what else runs on it. Writes ``benchmarks/results/close.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
CYCLE = "2026-11"  # the cycle of generate's default traffic
GiB = 1024**3


def _cli(*args: str) -> list[str]:
    """``cdr-pipeline ARGS`` of whichever ``pipeline`` the child's PYTHONPATH finds."""
    code = "import sys; from pipeline.cli import main; sys.exit(main())"
    return [sys.executable, "-c", code, *args]


def _run_in() -> str:
    """The children's working directory: not a checkout (``python -c`` puts it first on
    ``sys.path``, where it would shadow ``PYTHONPATH``)."""
    return "/"


def _env(pythonpath: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(pythonpath), COLUMNS="200")
    env.update(extra or {})
    return env


def prepare(cache: Path, n: int, console: Console) -> Path:
    """The lake of ``n`` generated events rated (generated and rated once per cache)."""
    events, lake = cache / f"events-{n}.avro", cache / f"lake-{n}"
    if not events.exists():
        console.print(f"generating {n:,} events -> {events}")
        subprocess.run(
            _cli("generate", "--events", str(n), "--output", str(events), "--seed", "7"),
            env=_env(REPO),
            cwd=_run_in(),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    if not (lake / "rated_calls" / "_delta_log").exists():
        console.print(f"rating {events} -> {lake}")
        subprocess.run(
            _cli("rate", "--output", str(lake), str(events)),
            env=_env(REPO),
            cwd=_run_in(),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return lake


def measure(pythonpath: Path, lake: Path, extra_env: dict[str, str]) -> dict[str, Any]:
    """One ``close-cycle`` of ``lake`` in a child process: seconds and peak RSS. The
    lake's invoice lines are removed first: every run is a first close, and code from
    before ``rated_calls_version`` cannot write to a table that has the column."""
    shutil.rmtree(lake / "invoice_lines", ignore_errors=True)
    started = time.perf_counter()
    child = subprocess.Popen(
        _cli("close-cycle", "--lake", str(lake), "--cycle", CYCLE),
        env=_env(pythonpath, extra_env),
        cwd=_run_in(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert child.stdout is not None
    output = child.stdout.read()
    _pid, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"close-cycle failed ({child.returncode}):\n{output.decode()[-2000:]}")
    return {
        "seconds": seconds,
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "summary": output.decode(errors="replace").strip().splitlines()[-2:],
    }


def rated_rows(lake: Path) -> int:
    from deltalake import DeltaTable

    actions = DeltaTable(str(lake / "rated_calls")).get_add_actions(flatten=True)
    return int(sum(actions.column("num_records").to_pylist()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,4000000,16000000")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/cdr-bench-close"))
    parser.add_argument("--old", type=Path, help="PYTHONPATH of the code to compare with")
    parser.add_argument("--old-max", type=int, default=4_000_000)
    parser.add_argument("--memory-limit", help="close.memory_limit (default: the setting's)")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks/results/close.json")
    opts = parser.parse_args(argv)
    console = Console()
    opts.cache.mkdir(parents=True, exist_ok=True)
    extra = {"CDR_CLOSE__MEMORY_LIMIT": opts.memory_limit} if opts.memory_limit else {}
    runs: list[dict[str, Any]] = []
    for n in (int(s) for s in opts.sizes.split(",")):
        lake = prepare(opts.cache, n, console)
        rows = rated_rows(lake)
        codes = [("new", REPO)]
        if opts.old is not None and n <= opts.old_max:
            codes.append(("old", opts.old))
        for name, path in codes:
            result = measure(path, lake, extra)
            result.update(events=n, rated_rows=rows, code=name, pythonpath=str(path))
            runs.append(result)
            console.print(
                f"{name} {rows:,} rated rows: {result['seconds']:.1f} s, "
                f"peak RSS {result['peak_rss_bytes'] / GiB:.2f} GiB"
            )
    table = Table(
        title=f"close-cycle by cycle size (memory_limit {opts.memory_limit or 'default'})"
    )
    for column in ("code", "rated rows", "seconds", "s per M rows", "peak RSS GiB"):
        table.add_column(column, justify="right")
    for r in runs:
        table.add_row(
            r["code"],
            f"{r['rated_rows']:,}",
            f"{r['seconds']:.1f}",
            f"{r['seconds'] / (r['rated_rows'] / 1e6):.2f}",
            f"{r['peak_rss_bytes'] / GiB:.2f}",
        )
    console.print(table)
    biggest = max((r for r in runs if r["code"] == "new"), key=lambda r: r["rated_rows"])
    ok = biggest["peak_rss_bytes"] < 1.5 * GiB
    console.print(
        f"target: peak RSS < 1.5 GiB at the largest size ({biggest['rated_rows']:,} rows): "
        + ("[green]met[/green]" if ok else "[red]missed[/red]")
    )
    opts.results.parent.mkdir(parents=True, exist_ok=True)
    opts.results.write_text(json.dumps({"cycle": CYCLE, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
