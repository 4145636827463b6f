"""Issue 9 item 7: peak RSS and time of ``query --analyst`` (one aggregate) and
``report`` at several lake sizes, each measured in a child process.

Not a timed test. Lakes are generated once with ``cdr-pipeline generate`` + ``rate``
and cached (``--cache``, default ``/tmp/cdr-bench-query``): ``lake<N>`` per size. With
``--old PATH`` (a checkout of an earlier version, e.g. ``/work/main``) the same
commands also run with that code first on ``PYTHONPATH``, for a before/after table.

    python -m benchmarks.bench_query --sizes 1000000 4000000 16000000 --old /work/main

Peak RSS is the child's ``ru_maxrss`` (``resource.getrusage(RUSAGE_CHILDREN)`` after
it exits, one child at a time); time is wall-clock of the child.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

QUERY = "SELECT call_class, count(*), sum(total_charge) FROM rated_calls GROUP BY ALL"
ROOT = Path(__file__).resolve().parents[1]


def _cli(code: Path) -> list[str]:
    return [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())"]


def _env(code: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(code)}


def ensure_lake(cache: Path, events: int) -> Path:
    """``cache/lake<events>``, generated and rated with this checkout's code if absent."""
    lake = cache / f"lake{events}"
    if (lake / "rated_calls" / "_delta_log").is_dir():
        return lake
    cache.mkdir(parents=True, exist_ok=True)
    avro = cache / f"events{events}.avro"
    env, cli = _env(ROOT), _cli(ROOT)
    subprocess.run(
        [*cli, "generate", "--events", str(events), "--output", str(avro)], env=env, check=True
    )
    subprocess.run([*cli, "rate", str(avro), "--output", str(lake)], env=env, check=True)
    avro.unlink()
    return lake


def measure(args: list[str], code: Path, cwd: Path) -> dict[str, float | int]:
    """Run ``cdr-pipeline args`` with ``code`` first on the path; its time and peak RSS.
    Children run one at a time, so RUSAGE_CHILDREN's maximum is this child's once it
    exceeds the previous ones; a fresh interpreter per measurement keeps it exact."""
    probe = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
        "print(r.returncode, time.perf_counter() - t, "
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *_cli(code), *args],
        env=_env(code),
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    code_, seconds, kib = int(out[0]), float(out[1]), int(out[2])
    return {"exit": code_, "seconds": round(seconds, 2), "peak_rss_mib": kib // 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/cdr-bench-query"))
    parser.add_argument("--old", type=Path, help="an earlier checkout to compare with")
    parser.add_argument("--old-max", type=int, default=4_000_000, help="largest size for --old")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/query.json")
    args = parser.parse_args()
    rows = []
    for events in args.sizes:
        lake = ensure_lake(args.cache, events)
        cycle = sorted(
            p.name.split("=", 1)[1] for p in (lake / "rated_calls").glob("billing_cycle=*")
        )[0]
        page = args.cache / "report.html"
        commands = {
            "query --analyst": [
                "query",
                "--analyst",
                QUERY,
                "--lake",
                str(lake),
                "--format",
                "csv",
            ],
            "report": ["report", "--lake", str(lake), "--cycle", cycle, "--output", str(page)],
        }
        codes = [("new", ROOT)]
        if args.old is not None and events <= args.old_max:
            codes.insert(0, ("old", args.old))
        for label, code in codes:
            for name, command in commands.items():
                started = time.perf_counter()
                result = measure(command, code, args.cache)
                row = {"events": events, "code": label, "command": name, **result}
                rows.append(row)
                print(json.dumps(row), f"({time.perf_counter() - started:.0f} s)", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(rows, indent=2) + "\n")
    print("\n| rated events | code | command | time s | peak RSS MiB |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['events']:,} | {r['code']} | {r['command']} | {r['seconds']} | {r['peak_rss_mib']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
