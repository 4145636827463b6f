"""Streaming benchmark (issue 3): one consumer process of the real service vs a per-record baseline.

Run: ``.venv/bin/python -m benchmarks.bench_streaming [--events N] [--partitions P]
[--lnp N] ...`` (``python -m benchmarks.run`` runs this and ``bench_decode``).

Phases, all against an embedded broker (tansu) and Redis (valkey) on this machine; each
consumer runs in a spawned child process, so its memory and CPU are its own:

1. **setup** -- reference data of real size (``--lnp`` ported numbers, ``--npanxx``
   NPA-NXX rows) loaded into Redis; ``--events`` call events generated against it (so
   origins hit LNP) and produced to a ``--partitions`` topic.
2. **raw consume** -- the same consumer settings doing nothing but ``consume()`` and
   ``value()``: the broker's delivery ceiling on this machine.
3. **service** -- ONE consumer process of the real service (:func:`build_service`,
   ``stop_when_idle``), nothing in it replaced or wrapped. Rated CDR/s = events /
   (last flush - first message processed). The stage profile is the service's own
   ``RunStats.stage_seconds`` (:mod:`pipeline.runtime.stats`); progress comes from its
   documented hook points (``group:assigned``, ``flush:committed``). Table commit
   latency p50/p99: the duration of each Delta commit (rows + offset) of a flush, from
   ``RunStats.commit_seconds`` (the ``writer:committed`` step, commit by commit).
4. **latency** -- a fresh service child consumes a second topic while this process
   produces ``--latency-events`` at ``--latency-rate`` events/s; event-to-lake latency
   p50/p99 (Kafka CreateTime to the Delta commit holding the rows and the offset), and
   the table commit latency at that steady rate.
5. **baseline** -- :func:`benchmarks.baseline.run_baseline_consumer` (fastavro per
   message, per-record Python rating, one Redis HGET per origin, Parquet from dicts)
   on the first ``--baseline-events`` of the same topic; its rows are then compared
   with the service's lake by (partition, offset).

Issue 11, in the same run (after phase 3):

6. **malformed** -- ``--malformed-events`` (default ``--events``) generated events,
   ``--malformed-share`` (50 %) of them made malformed (random bytes after a valid
   header, truncated datums, bad enum symbols, invalid UTF-8, empty and null values:
   :func:`benchmarks.bench_decode.mix_malformed`), pre-filled on their own topic and
   consumed by one service child like phase 3: msg/s and its ratio to phase 3.
7. **backlog** -- the pre-filled topic of phase 3 consumed with EVERY service default
   (``max_age_s`` included, so buffers grow as they would in production): the peak RSS
   reported against the 512 MiB target.
8. with ``--old-defaults``: phases 3 and 7 again with the memory defaults before issue
   11 (:data:`OLD_MEMORY_DEFAULTS`): the throughput cost and memory of the change.

Optional ``--cprofile``: the service under cProfile over the latency topic.

Results: rich tables on stdout and ``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import json
import logging
import multiprocessing as mp
import os
import platform
import pstats
import queue
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "latest.json"
TARGET_CDR_PER_S = 150_000
TARGET_RATIO = 5.0
#: Issue 11: with half the messages malformed, at least this share of the clean msg/s.
TARGET_MALFORMED_RATIO = 0.5
#: Issue 11: peak RSS of one member catching up on the pre-filled topic (MiB).
TARGET_BACKLOG_RSS_MB = 512
#: Issue 11: the new memory defaults may cost at most this share of the throughput.
TARGET_MEMORY_COST = 0.05
TOPIC = "cdr-bench"
MALFORMED_TOPIC = "cdr-bench-malformed"
LATENCY_TOPIC = "cdr-bench-latency"
DLQ_TOPIC = "cdr-bench-dlq"
#: The memory defaults before issue 11 (``--old-defaults`` measures them too).
OLD_MEMORY_DEFAULTS: dict[str, dict[str, Any]] = {
    "kafka": {"prefetch_max_kbytes": 65_536},
    "batch": {"poll_max_messages": 20_000, "max_bytes": 64 * 1024 * 1024},
}


@dataclass(frozen=True)
class Options:
    events: int = 1_000_000
    partitions: int = 4
    lnp: int = 1_000_000
    npanxx: int = 100_000
    baseline_events: int = 100_000
    latency_events: int = 200_000
    latency_rate: int = 50_000
    poll_max_messages: int | None = None  # None: the service default
    max_age_s: float = 1.0
    malformed_events: int | None = None  # None: as many as ``events``; 0: no such phase
    malformed_share: float = 0.5
    backlog: bool = True
    old_defaults: bool = False
    stop_when_idle_s: float = 8.0
    seed: int = 1
    cprofile: bool = False
    workdir: str | None = None
    keep: bool = False
    results: str = str(RESULTS_PATH)


# ------------------------------------------------------------------ progress
def make_console(*, stderr: bool = False) -> Console:
    """A console 140 columns wide when not on a terminal (logs, CI), else the terminal's."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 140)


class RateColumn(ProgressColumn):
    """Items per second of a task."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:>10,.0f}/s" if speed else f"{'':>10}  ", style="cyan")


class Bar(Protocol):
    """What the phases need of a progress display (rich's Progress or PlainProgress)."""

    def add_task(self, description: str, *, total: float | None = ...) -> Any: ...
    def advance(self, task_id: Any, advance: float = ...) -> None: ...
    def update(
        self, task_id: Any, *, total: float | None = ..., completed: float | None = ...
    ) -> None: ...


@dataclass
class _PlainTask:
    description: str
    total: float | None
    done: float = 0.0
    finished: bool = False
    started: float = field(default_factory=time.monotonic)
    printed: float = field(default_factory=time.monotonic)


class PlainProgress:
    """Progress for logs (stderr not a terminal): a line per task every ``every_s``
    seconds and when it completes, with its rate and ETA."""

    def __init__(self, console: Console, every_s: float = 5.0) -> None:
        self.console = console
        self.every_s = every_s
        self.tasks: list[_PlainTask] = []

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def add_task(self, description: str, *, total: float | None = None) -> int:
        self.tasks.append(_PlainTask(description, total))
        return len(self.tasks) - 1

    def advance(self, task_id: Any, advance: float = 1) -> None:
        task = self.tasks[int(task_id)]
        task.done += advance
        self._maybe_print(task)

    def update(
        self, task_id: Any, *, total: float | None = None, completed: float | None = None
    ) -> None:
        task = self.tasks[int(task_id)]
        if total is not None:
            task.total = total
        if completed is not None:
            task.done = completed
        self._maybe_print(task)

    def _maybe_print(self, task: _PlainTask) -> None:
        now = time.monotonic()
        finished = task.total is not None and task.done >= task.total
        if task.finished or (not finished and now - task.printed < self.every_s):
            return
        task.printed, task.finished = now, finished
        elapsed = max(now - task.started, 1e-9)
        rate = task.done / elapsed
        if finished:
            tail = f"done in {elapsed:.1f} s"
        elif task.total and rate > 0:
            tail = f"ETA {(task.total - task.done) / rate:.0f} s"
        else:
            tail = ""
        of = f"/{task.total:,.0f}" if task.total else ""
        self.console.print(
            f"{task.description:<28} {task.done:>12,.0f}{of}  {rate:>10,.0f}/s  {tail}"
        )


def progress_bar(console: Console) -> Progress | PlainProgress:
    """A live rich progress display on a terminal, else :class:`PlainProgress` lines."""
    if not console.is_terminal:
        return PlainProgress(console)
    return Progress(
        TextColumn("{task.description:<26}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        RateColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


# ------------------------------------------------------------------ child processes
def _quiet_child(log_path: str) -> None:
    """Send the child's stderr (librdkafka and log lines) to a file."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    logging.basicConfig(level=logging.WARNING)


def peak_rss_mb() -> float:
    """Peak resident set of this process (MB): ``VmHWM`` of ``/proc/self/status``.

    Not ``ru_maxrss``: on Linux that survives ``exec``, so a spawned child would report
    at least its parent's RSS at fork time."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (0.0 if unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentiles(latencies: list[npt.NDArray[np.int64]]) -> dict[str, float]:
    if not latencies:
        return {}
    values = np.concatenate(latencies)
    if values.size == 0:
        return {}
    p50, p90, p99 = np.percentile(values, [50, 90, 99]).tolist()
    return {"p50": p50, "p90": p90, "p99": p99, "max": float(values.max()), "n": int(values.size)}


def _commit_ms(seconds: Any) -> dict[str, float]:
    """p50/p90/p99/max (ms) of the lake commits' durations (``RunStats.commit_seconds``)."""
    values = np.fromiter(seconds, np.float64) * 1000.0
    if values.size == 0:
        return {}
    p50, p90, p99 = np.percentile(values, [50, 90, 99]).tolist()
    return {"p50": p50, "p90": p90, "p99": p99, "max": float(values.max()), "n": int(values.size)}


def _thread_cpu(stop: threading.Event, seen: dict[str, float], every_s: float = 0.25) -> None:
    """Sample the CPU seconds of each thread of this process into ``seen`` (thread name
    -> seconds; Python threads by their name, librdkafka's as ``librdkafka``) until
    ``stop``; a thread's last sample stands for it once it has ended."""
    tick = os.sysconf("SC_CLK_TCK")
    per_tid: dict[int, tuple[str, float]] = {}
    while True:
        names = {t.native_id: t.name for t in threading.enumerate()}
        for tid_text in os.listdir("/proc/self/task"):
            tid = int(tid_text)
            try:
                stat = Path(f"/proc/self/task/{tid}/stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            name = names.get(tid) or ("librdkafka" if comm.startswith("rdk:") else comm)
            name = name.rsplit("_", 1)[0] if name[-1:].isdigit() and "_" in name else name
            per_tid[tid] = (name, (int(fields[11]) + int(fields[12])) / tick)
        totals: dict[str, float] = {}
        for name, cpu in per_tid.values():
            totals[name] = totals.get(name, 0.0) + cpu
        seen.clear()
        seen.update(totals)
        if stop.wait(every_s):
            return


def service_child(config: dict[str, Any], out: Any) -> None:
    """One consumer process of the real service (spawned). Reports to ``out`` (a queue):
    ``("assigned", n)``, ``("progress", events)``, and finally ``("done", results)``.
    Everything it reports comes from the service itself: its hook points and
    :class:`~pipeline.runtime.stats.RunStats` (stage timings included)."""
    _quiet_child(config["log"])
    from pipeline.settings import load_settings
    from pipeline.streaming import build_service

    settings = load_settings(**config["settings"])

    def hook(point: str, info: dict[str, Any]) -> None:
        if point == "flush:committed":
            out.put(("progress", int(info["last"]) - int(info["first"]) + 1))
        elif point == "group:assigned":
            out.put(("assigned", len(info["partitions"])))

    service = build_service(settings, hook=hook)
    profiler = cProfile.Profile() if config.get("cprofile") else None
    thread_cpu: dict[str, float] = {}
    stop_sampler = threading.Event()
    sampler = threading.Thread(
        target=_thread_cpu, args=(stop_sampler, thread_cpu), name="bench-sampler", daemon=True
    )
    sampler.start()
    if profiler is not None:
        profiler.enable()
    stats = service.run()
    if profiler is not None:
        profiler.disable()
    stop_sampler.set()
    sampler.join()
    finished = time.monotonic()
    result: dict[str, Any] = {
        "consumed": stats.consumed,
        "rated": stats.rated,
        "dead_letters": stats.dead_letters,
        "by_reason": stats.by_reason,
        "flushes": stats.flushes,
        "files": stats.files,
        "started": stats.started,
        "first_message_at": stats.first_message_at,
        "last_flush_at": stats.last_flush_at,
        "finished": finished,
        "busy_seconds": stats.busy_seconds,
        "latency_ms": _percentiles(stats.latencies_ms),
        "commit_ms": _commit_ms(stats.commit_seconds),
        "peak_rss_mb": peak_rss_mb(),
        "cpu_s": process_cpu_s(os.getpid()),
        "enrich_hit_rate": service.enricher.hit_rate,
        "stage_seconds": dict(stats.stage_seconds),
        "thread_cpu_s": dict(sorted(thread_cpu.items(), key=lambda kv: -kv[1])),
    }
    if profiler is not None:
        result["cprofile"] = _top_functions(profiler, 20)
    out.put(("done", result))


def _top_functions(profiler: cProfile.Profile, n: int) -> list[dict[str, Any]]:
    stats = pstats.Stats(profiler)
    rows = []
    for (path, line, name), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(path).name}:{line}({name})" if path != "~" else name
        rows.append({"function": where, "calls": calls, "tottime_s": tottime, "cumtime_s": cumtime})
    rows.sort(key=lambda r: -float(r["tottime_s"]))
    return rows[:n]


def raw_consume_child(config: dict[str, Any], out: Any) -> None:
    """The broker's delivery ceiling on this machine: the service's consumer settings,
    ``consume(poll_max_messages, 0.2)`` and ``value()`` per message, nothing else."""
    _quiet_child(config["log"])
    from pipeline.io import kafka_clients
    from pipeline.settings import KafkaSettings

    consumer = kafka_clients.consumer(KafkaSettings(brokers=config["brokers"]), config["group"])
    consumer.subscribe([config["topic"]])
    n, target = 0, int(config["events"])
    first: float | None = None
    last = time.monotonic()
    try:
        while n < target and time.monotonic() - last < 30:
            messages = consumer.consume(int(config["batch"]), 0.2)
            values = [m.value() for m in messages if m.error() is None]
            if values:
                last = time.monotonic()
                first = first or last
                n += len(values)
                out.put(("progress", len(values)))
    finally:
        consumer.close()
    out.put(
        ("done", {"consumed": n, "first": first, "last": last, "cpu_s": process_cpu_s(os.getpid())})
    )


def _default_poll() -> int:
    from pipeline.settings import BatchSettings

    return BatchSettings().poll_max_messages


def raw_consume_phase(env: Env, opts: Options, progress: Bar, produced: int) -> dict[str, Any]:
    config = {
        "brokers": env.brokers,
        "topic": TOPIC,
        "group": "bench-raw-consume",
        "events": produced,
        "batch": opts.poll_max_messages or _default_poll(),
        "log": str(env.workdir / "raw-consume.log"),
    }
    r = _follow(Child(raw_consume_child, config), progress, "raw consume (no processing)", produced)
    span = r["last"] - r["first"] if r["first"] is not None else float("nan")
    return {
        "events": r["consumed"],
        "per_s": r["consumed"] / span if span else 0.0,
        "span_s": span,
        "cpu_s": r["cpu_s"],
    }


def baseline_child(config: dict[str, Any], out: Any) -> None:
    """The per-record baseline consumer (spawned); reports like :func:`service_child`."""
    _quiet_child(config["log"])
    from benchmarks.baseline import run_baseline_consumer

    stats = run_baseline_consumer(
        brokers=config["brokers"],
        topic=config["topic"],
        group=config["group"],
        redis_url=config["redis_url"],
        refdata_dir=Path(config["refdata_dir"]),
        tariffs_dir=Path(config["tariffs_dir"]),
        output=Path(config["output"]),
        max_events=config["max_events"],
        progress=lambda n: out.put(("progress", n)),
    )
    result = asdict(stats)
    result["peak_rss_mb"] = peak_rss_mb()
    result["cpu_s"] = process_cpu_s(os.getpid())
    out.put(("done", result))


class Child:
    """A spawned child process and its report queue."""

    def __init__(
        self, target: Callable[[dict[str, Any], Any], None], config: dict[str, Any]
    ) -> None:
        ctx = mp.get_context("spawn")
        self.queue: Any = ctx.Queue()
        self.log = Path(config["log"])
        self.process = ctx.Process(target=target, args=(config, self.queue), daemon=True)
        self.process.start()
        self.result: dict[str, Any] | None = None

    def events(self, timeout: float = 0.25) -> Iterator[tuple[str, Any]]:
        """Reports until ``done`` (raises if the child dies without one)."""
        while self.result is None:
            try:
                kind, payload = self.queue.get(timeout=timeout)
            except queue.Empty:
                if not self.process.is_alive():
                    tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
                    raise RuntimeError(
                        f"child exited with code {self.process.exitcode}; log tail:\n{tail}"
                    ) from None
                yield ("tick", None)
                continue
            if kind == "done":
                self.result = payload
            yield kind, payload

    def join(self) -> dict[str, Any]:
        for _ in self.events():
            pass
        self.process.join(60)
        assert self.result is not None
        return self.result


# ------------------------------------------------------------------ phases
@dataclass
class Env:
    """The running servers and generated inputs."""

    brokers: str
    redis_url: str
    broker_pid: int
    redis_pid: int
    workdir: Path
    refdata: Path
    tariffs: Path


def _settings(
    env: Env,
    opts: Options,
    topic: str,
    group: str,
    lake: Path,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The service settings of a phase: the service defaults, but ``max_age_s`` from
    ``opts`` (and ``poll_max_messages`` when given), then ``overrides`` by section."""
    batch: dict[str, Any] = {"max_age_s": opts.max_age_s}
    if opts.poll_max_messages is not None:
        batch["poll_max_messages"] = opts.poll_max_messages
    settings: dict[str, Any] = {
        "kafka": {"brokers": env.brokers},
        "redis": {"url": env.redis_url},
        "topic": topic,
        "group": group,
        "output": str(lake),
        "tariffs": str(env.tariffs),
        "dead_letter_topic": DLQ_TOPIC,
        "stop_when_idle": opts.stop_when_idle_s,
        "log_level": "WARNING",
        "batch": batch,
    }
    for section, values in (overrides or {}).items():
        settings[section] = {**settings.get(section, {}), **values}
    return settings


def _follow(child: Child, progress: Bar, description: str, total: int) -> dict[str, Any]:
    task = progress.add_task(description, total=total)
    for kind, payload in child.events():
        if kind == "progress":
            progress.advance(task, int(payload))
    progress.update(task, completed=total)
    return child.join()


def setup(env: Env, opts: Options, progress: Bar) -> dict[str, Any]:
    """Reference data into Redis, events generated and produced to ``TOPIC``."""
    import redis

    from pipeline.generate import write_generated
    from pipeline.refdata.generate import generate_reference_dir
    from pipeline.refdata.redis_load import load_to_redis
    from pipeline.settings import KafkaSettings
    from pipeline.streaming import produce_files

    out: dict[str, Any] = {}
    task = progress.add_task("reference data (gen+load)", total=2)
    started = time.perf_counter()
    generate_reference_dir(env.refdata, npanxx_rows=opts.npanxx, lnp_rows=opts.lnp, seed=opts.seed)
    out["refdata_generate_s"] = time.perf_counter() - started
    progress.advance(task)
    started = time.perf_counter()
    client = redis.Redis.from_url(env.redis_url)
    out["refdata_version"] = load_to_redis(client, env.refdata)
    out["redis_load_s"] = time.perf_counter() - started
    out["redis_used_memory_mb"] = int(client.info("memory")["used_memory"]) / 2**20
    progress.advance(task)

    events_file = env.workdir / "events.avro"
    task = progress.add_task("generate events", total=opts.events)
    started = time.perf_counter()
    write_generated(
        events_file,
        opts.events,
        seed=opts.seed,
        refdata_dir=env.refdata,
        progress=lambda n: progress.advance(task, n),
    )
    out["generate_s"] = time.perf_counter() - started
    out["events_file_mb"] = events_file.stat().st_size / 2**20

    task = progress.add_task(f"produce ({opts.partitions} partitions)", total=opts.events)
    stats = produce_files(
        [events_file],
        KafkaSettings(brokers=env.brokers),
        TOPIC,
        partitions=opts.partitions,
        progress=lambda n: progress.advance(task, n),
    )
    out["produced"] = stats.events
    out["produce_s"] = stats.seconds
    out["produce_per_s"] = stats.events / stats.seconds if stats.seconds else 0.0
    return out


#: Rows of the stage profile: the service's stage names (pipeline.runtime.stats) and
#: their labels here. Stages not listed (another lake's commit steps, say) are shown
#: under their own names.
STAGE_LABELS = {
    "main:consume": "consume (calls that returned messages)",
    "main:stage": "poll fields, hand-off",
    "main:wait_prepared": "wait for decode and lookup",
    "main:rate": "rate (rate_batch)",
    "main:buffer": "split, buffers",
    "main:flush": "flush: submit, reap, commit",
    "main:backpressure": "flush: wait for the writer",
    "main:paused": "paused on a dependency",
    "decode:decode_batch": "decode: decode_batch",
    "decode:numbers": "decode: numbers, origins",
    "lookup:for_numbers": "lookup: Enricher.for_numbers",
    "writer:dead-letters-acked": "writer: dead-letter produce",
    "writer:committed": "writer: Delta commit (rows + offset)",
    "writer:other": "writer: other (stats, metrics)",
}
#: Stages left out of the profile: idle polls, which include the group join and the
#: idle wait before ``stop_when_idle`` (outside the span).
UNPROFILED = ("main:consume_idle",)


def stage_profile(r: dict[str, Any], span: float) -> dict[str, dict[str, Any]]:
    """Stage rows from a service child's own ``stage_seconds``: the main thread's rows,
    with "loop/other" (the span minus them: loop overhead and the idle polls at the
    end of the stream, before the last flush), add up to the span; the decode, lookup
    and writer threads run concurrently."""
    stages = {k: v for k, v in r["stage_seconds"].items() if k not in UNPROFILED}
    order = {name: i for i, name in enumerate(STAGE_LABELS)}
    names = sorted(stages, key=lambda k: (not k.startswith("main:"), order.get(k, len(order)), k))
    rows = [
        (
            STAGE_LABELS.get(k, k),
            "consumer" if k.startswith("main:") else k.split(":")[0],
            stages[k],
        )
        for k in names
    ]
    main_total = sum(secs for _, thread, secs in rows if thread == "consumer")
    main_count = sum(1 for _, thread, _ in rows if thread == "consumer")
    rows.insert(main_count, ("loop/other", "consumer", span - main_total))
    consumed = r["consumed"]
    return {
        label: {
            "seconds": secs,
            "us_per_event": secs / consumed * 1e6 if consumed else 0.0,
            "share": secs / span if span else 0.0,
            "thread": thread,
        }
        for label, thread, secs in rows
    }


def service_phase(
    env: Env,
    opts: Options,
    progress: Bar,
    produced: int,
    *,
    name: str = "service",
    label: str = "service (1 consumer)",
    topic: str = TOPIC,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One service child over the pre-filled ``topic`` (own group and lake)."""
    settings = _settings(env, opts, topic, f"bench-{name}", env.workdir / f"lake-{name}", overrides)
    config = {"settings": settings, "log": str(env.workdir / f"{name}.log")}
    started = time.monotonic()
    servers = process_cpu_s(env.broker_pid), process_cpu_s(env.redis_pid)
    r = _follow(Child(service_child, config), progress, label, produced)
    broker_cpu = process_cpu_s(env.broker_pid) - servers[0]
    redis_cpu = process_cpu_s(env.redis_pid) - servers[1]
    first, last = r["first_message_at"], r["last_flush_at"]
    span = (last - first) if first is not None and last is not None else float("nan")
    consumed = r["consumed"]
    return {
        "topic": topic,
        "settings": {k: settings[k] for k in ("kafka", "batch") if k in settings},
        "events": consumed,
        "rated": r["rated"],
        "dead_letters": r["dead_letters"],
        "by_reason": r["by_reason"],
        "cdr_per_s": consumed / span if span else 0.0,
        "span_s": span,
        "busy_s": r["busy_seconds"],
        "join_s": (first - r["started"]) if first is not None else None,
        "end_to_end_s": (last - r["started"]) if last is not None else None,
        "child_wall_s": r["finished"] - started,
        "peak_rss_mb": r["peak_rss_mb"],
        "cpu_s": {"consumer": r["cpu_s"], "broker": broker_cpu, "redis": redis_cpu},
        # less sensitive than msg/s to what else runs on the machine
        "consumer_cpu_us_per_event": r["cpu_s"] / consumed * 1e6 if consumed else None,
        "flushes": r["flushes"],
        "files": r["files"],
        "enrich_hit_rate": r["enrich_hit_rate"],
        "commit_ms": r["commit_ms"],
        "stage_seconds": r["stage_seconds"],
        "stage_profile": stage_profile(r, span),
        "thread_cpu_s": r["thread_cpu_s"],
    }


def setup_malformed(env: Env, opts: Options, progress: Bar, n: int) -> dict[str, Any]:
    """``MALFORMED_TOPIC``: ``n`` generated events, ``malformed_share`` of them spread
    evenly and made malformed (:func:`benchmarks.bench_decode.mix_malformed`: the kinds
    of ``MALFORMED_KINDS`` in rotation), produced before any consumer starts."""
    from benchmarks.bench_decode import MALFORMED_KINDS, mix_malformed
    from pipeline.io import kafka_clients
    from pipeline.settings import KafkaSettings

    kafka = KafkaSettings(brokers=env.brokers)
    kafka_clients.ensure_topic(kafka, MALFORMED_TOPIC, opts.partitions)
    good, keys = _encoded_events(env, n, opts.seed + 2000)
    values, spoilt = mix_malformed(good, opts.malformed_share, opts.seed)
    del good
    task = progress.add_task(f"produce {opts.malformed_share:.0%} malformed", total=n)
    started = time.perf_counter()
    producer = kafka_clients.producer(kafka)
    for lo in range(0, n, 10_000):
        for i in range(lo, min(lo + 10_000, n)):
            while True:
                try:
                    producer.produce(MALFORMED_TOPIC, value=values[i], key=keys[i])
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.poll(0)
        progress.advance(task, min(10_000, n - lo))
    kafka_clients.flush_or_raise(producer, 120, "produce malformed")
    return {
        "produced": n,
        "malformed": spoilt,
        "share": opts.malformed_share,
        "kinds": list(MALFORMED_KINDS),
        "produce_s": time.perf_counter() - started,
    }


def _encoded_events(env: Env, n: int, seed: int) -> tuple[list[bytes], list[bytes]]:
    from pipeline.generate import generate_events
    from pipeline.io.registry import CALL_EVENT_SCHEMA_ID
    from pipeline.io.wire import encode_table

    events = generate_events(n, seed=seed, refdata_dir=env.refdata)
    values = encode_table(events, CALL_EVENT_SCHEMA_ID)
    keys = [str(k).encode() for k in events.column("call_id").to_pylist()]
    return values, keys


def latency_phase(env: Env, opts: Options, progress: Bar) -> dict[str, Any]:
    """Produce at a steady rate while one consumer runs; event-to-lake p50/p99."""
    from pipeline.io import kafka_clients
    from pipeline.settings import KafkaSettings

    kafka = KafkaSettings(brokers=env.brokers)
    kafka_clients.ensure_topic(kafka, LATENCY_TOPIC, opts.partitions)
    values, keys = _encoded_events(env, opts.latency_events, opts.seed + 1000)
    config = {
        "settings": _settings(
            env, opts, LATENCY_TOPIC, "bench-latency", env.workdir / "lake-latency"
        ),
        "log": str(env.workdir / "latency.log"),
    }
    child = Child(service_child, config)
    consumed = progress.add_task("latency: consumed", total=opts.latency_events)
    sent_task = progress.add_task(f"latency: produce @{opts.latency_rate:,}/s", total=len(values))
    for kind, _payload in child.events():  # wait until the group is joined
        if kind == "assigned":
            break
        if kind == "done":
            raise RuntimeError("latency consumer stopped before it was assigned partitions")
    producer = kafka_clients.producer(kafka)
    tick = 0.01
    per_tick = max(1, int(opts.latency_rate * tick))
    started = time.monotonic()
    sent = 0
    events = child.events(timeout=0.0)
    while sent < len(values):
        due = started + (sent / opts.latency_rate)
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        stop = min(sent + per_tick, len(values))
        for i in range(sent, stop):
            while True:
                try:
                    producer.produce(LATENCY_TOPIC, value=values[i], key=keys[i])
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.poll(0)
        progress.advance(sent_task, stop - sent)
        sent = stop
        with contextlib.suppress(StopIteration):
            kind, payload = next(events)
            if kind == "progress":
                progress.advance(consumed, int(payload))
    produce_s = time.monotonic() - started
    kafka_clients.flush_or_raise(producer, 60, "latency produce")
    for kind, payload in child.events():
        if kind == "progress":
            progress.advance(consumed, int(payload))
    r = child.join()
    progress.update(consumed, completed=opts.latency_events)
    lat = r["latency_ms"]
    return {
        "events": r["consumed"],
        "offered_rate": opts.latency_rate,
        "achieved_produce_rate": len(values) / produce_s if produce_s else 0.0,
        "p50_ms": lat.get("p50"),
        "p90_ms": lat.get("p90"),
        "p99_ms": lat.get("p99"),
        "max_ms": lat.get("max"),
        "max_age_s": opts.max_age_s,
        "peak_rss_mb": r["peak_rss_mb"],
        "flushes": r["flushes"],
        "commit_ms": r["commit_ms"],
    }


def baseline_phase(env: Env, opts: Options, progress: Bar) -> dict[str, Any]:
    n = min(opts.baseline_events, opts.events)
    config = {
        "brokers": env.brokers,
        "topic": TOPIC,
        "group": "bench-baseline",
        "redis_url": env.redis_url,
        "refdata_dir": str(env.refdata),
        "tariffs_dir": str(env.tariffs),
        "output": str(env.workdir / "lake-baseline"),
        "max_events": n,
        "log": str(env.workdir / "baseline.log"),
    }
    servers = process_cpu_s(env.broker_pid), process_cpu_s(env.redis_pid)
    r = _follow(Child(baseline_child, config), progress, "baseline (per record)", n)
    broker_cpu = process_cpu_s(env.broker_pid) - servers[0]
    redis_cpu = process_cpu_s(env.redis_pid) - servers[1]
    first, last = r["first_message_at"], r["last_write_at"]
    span = (last - first) if first is not None and last is not None else float("nan")
    return {
        "events": r["consumed"],
        "rated": r["rated"],
        "dead_letters": r["dead_letters"],
        "redis_hgets": r["redis_gets"],
        "cdr_per_s": r["consumed"] / span if span else 0.0,
        "span_s": span,
        "peak_rss_mb": r["peak_rss_mb"],
        "cpu_s": {"consumer": r["cpu_s"], "broker": broker_cpu, "redis": redis_cpu},
        "agreement": compare_lakes(
            env.workdir / "lake-baseline", env.workdir / "lake-service" / "rated_calls"
        ),
    }


#: Fields compared between the baseline's rows and the service's lake.
COMPARED = (
    "call_class", "origin_region", "origin_state", "origin_ocn", "origin_carrier_category",
    "destination_region", "jurisdiction", "increment_class", "billable_seconds",
    "rate_per_min", "usage_charge", "surcharge", "total_charge", "tariff_version", "flags",
)  # fmt: skip


def compare_lakes(baseline_dir: Path, service_rated: Path) -> dict[str, Any]:
    """The baseline's rated rows against the service's, matched by (partition, offset):
    an end-to-end oracle check on the real-size reference data (LNP from Redis)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = sorted(baseline_dir.glob("baseline-0*.parquet"))
    if not files or not service_rated.is_dir():
        return {"compared": 0}
    base = pa.concat_tables([pq.read_table(f) for f in files])

    def key(t: pa.Table) -> pa.Array:
        partition = pc.cast(t.column("source_partition"), pa.int64())
        return pc.add(pc.multiply(partition, 1 << 40), t.column("source_offset"))

    svc = pq.read_table(service_rated, columns=["source_partition", "source_offset", *COMPARED])
    svc = svc.filter(pc.is_in(key(svc), value_set=key(base).combine_chunks()))
    by_key = {
        (r["source_partition"], r["source_offset"]): r
        for r in svc.select(["source_partition", "source_offset", *COMPARED]).to_pylist()
    }
    mismatched: dict[str, int] = {}
    rows = 0
    missing = 0
    for b in base.select(["source_partition", "source_offset", *COMPARED]).to_pylist():
        s = by_key.get((b["source_partition"], b["source_offset"]))
        if s is None:
            missing += 1
            continue
        rows += 1
        for f in COMPARED:
            left, right = (sorted(b[f]), sorted(s[f])) if f == "flags" else (b[f], s[f])
            if left != right:
                mismatched[f] = mismatched.get(f, 0) + 1
    return {"compared": rows, "missing_in_service": missing, "mismatched_by_field": mismatched}


def cprofile_phase(env: Env, opts: Options, progress: Bar) -> dict[str, Any]:
    config = {
        "settings": _settings(
            env, opts, LATENCY_TOPIC, "bench-cprofile", env.workdir / "lake-prof"
        ),
        "log": str(env.workdir / "cprofile.log"),
        "cprofile": True,
    }
    r = _follow(
        Child(service_child, config), progress, "service under cProfile", opts.latency_events
    )
    first, last = r["first_message_at"], r["last_flush_at"]
    span = (last - first) if first is not None and last is not None else float("nan")
    return {
        "events": r["consumed"],
        "cdr_per_s_under_profiler": r["consumed"] / span if span else 0.0,
        "top_tottime": r["cprofile"],
    }


# ------------------------------------------------------------------ main
def run(opts: Options, console: Console | None = None) -> dict[str, Any]:
    """Every phase; returns the results (see module docstring)."""
    from pipeline.embedded import embedded_kafka, embedded_redis
    from pipeline.tariff_files import DEFAULT_TARIFFS_DIR

    console = console or make_console(stderr=True)
    workdir = Path(opts.workdir) if opts.workdir else Path(tempfile.mkdtemp(prefix="cdr-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "note": "broker (tansu, memory), Redis (valkey), consumer and producer share these CPUs",
        },
        "options": asdict(opts),
        "targets": {"cdr_per_s": TARGET_CDR_PER_S, "ratio_vs_baseline": TARGET_RATIO},
    }
    try:
        display = progress_bar(console)
        with embedded_kafka() as kafka, embedded_redis() as redis_server, display:
            bar: Bar = display
            env = Env(
                brokers=kafka.bootstrap,
                redis_url=redis_server.url,
                broker_pid=kafka.handle.proc.pid,
                redis_pid=redis_server.handle.proc.pid,
                workdir=workdir,
                refdata=workdir / "refdata",
                tariffs=DEFAULT_TARIFFS_DIR,
            )
            results["setup"] = setup(env, opts, bar)
            results["raw_consume"] = raw_consume_phase(env, opts, bar, results["setup"]["produced"])
            produced = results["setup"]["produced"]
            results["service"] = service_phase(env, opts, bar, produced)
            malformed_n = opts.events if opts.malformed_events is None else opts.malformed_events
            if malformed_n:
                results["malformed_setup"] = setup_malformed(env, opts, bar, malformed_n)
                results["malformed"] = service_phase(
                    env, opts, bar, malformed_n, name="malformed", topic=MALFORMED_TOPIC,
                    label=f"service, {opts.malformed_share:.0%} malformed",
                )  # fmt: skip
            if opts.old_defaults:
                results["service_old_defaults"] = service_phase(
                    env, opts, bar, produced, name="service-old", overrides=OLD_MEMORY_DEFAULTS,
                    label="service, old memory defaults",
                )  # fmt: skip
            if opts.backlog:
                service_defaults = {"batch": {"max_age_s": _default_max_age()}}
                results["backlog"] = service_phase(
                    env, opts, bar, produced, name="backlog", overrides=service_defaults,
                    label="backlog: all service defaults",
                )  # fmt: skip
                if opts.old_defaults:
                    old = {
                        "kafka": OLD_MEMORY_DEFAULTS["kafka"],
                        "batch": {**OLD_MEMORY_DEFAULTS["batch"], **service_defaults["batch"]},
                    }
                    results["backlog_old_defaults"] = service_phase(
                        env, opts, bar, produced, name="backlog-old", overrides=old,
                        label="backlog: old memory defaults",
                    )  # fmt: skip
            results["latency"] = latency_phase(env, opts, bar)
            results["baseline"] = baseline_phase(env, opts, bar)
            if opts.cprofile:
                results["cprofile"] = cprofile_phase(env, opts, bar)
    finally:
        if not opts.keep and not opts.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    service, baseline = results["service"]["cdr_per_s"], results["baseline"]["cdr_per_s"]
    results["ratio_vs_baseline"] = service / baseline if baseline else None
    targets = results["targets"]
    targets["cdr_per_s_met"] = service >= TARGET_CDR_PER_S
    targets["ratio_met"] = bool(baseline) and service / baseline >= TARGET_RATIO
    if "malformed" in results:
        ratio = results["malformed"]["cdr_per_s"] / service if service else 0.0
        results["malformed_ratio"] = ratio
        targets["malformed_ratio"] = TARGET_MALFORMED_RATIO
        targets["malformed_ratio_met"] = ratio >= TARGET_MALFORMED_RATIO
    if "backlog" in results:
        targets["backlog_rss_mb"] = TARGET_BACKLOG_RSS_MB
        targets["backlog_rss_met"] = results["backlog"]["peak_rss_mb"] < TARGET_BACKLOG_RSS_MB
    if "service_old_defaults" in results:
        old = results["service_old_defaults"]["cdr_per_s"]
        results["memory_defaults_cost"] = 1 - service / old if old else None  # < 0: faster
        new_cpu = results["service"]["consumer_cpu_us_per_event"]
        old_cpu = results["service_old_defaults"]["consumer_cpu_us_per_event"]
        results["memory_defaults_cpu_cost"] = new_cpu / old_cpu - 1 if old_cpu else None
        targets["memory_defaults_cost"] = TARGET_MEMORY_COST
        targets["memory_defaults_cost_met"] = bool(old) and 1 - service / old <= TARGET_MEMORY_COST
    return results


def _default_max_age() -> float:
    from pipeline.settings import BatchSettings

    return BatchSettings().max_age_s


def write_results(results: dict[str, Any], path: Path = RESULTS_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def _fmt(value: object, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}{unit}"
    return str(value)


def render(results: dict[str, Any], console: Console | None = None) -> None:
    """Print the results as rich tables."""
    console = console or make_console()
    s, b, lat = results["service"], results["baseline"], results["latency"]
    main = Table(
        title=f"Streaming benchmark ({results['date']}, {results['machine']['cpus']} CPUs)"
    )
    main.add_column("measure")
    main.add_column("value", justify="right")
    main.add_column("note")
    target = results["targets"]
    main.add_row(
        "service rated CDR/s",
        _fmt(s["cdr_per_s"]),
        f"{s['events']:,} events / {s['span_s']:.2f} s first message -> last flush; "
        f"target {target['cdr_per_s']:,} {'MET' if target['cdr_per_s_met'] else 'NOT MET'}",
    )
    agree = b.get("agreement", {})
    main.add_row(
        "baseline CDR/s",
        _fmt(b["cdr_per_s"]),
        f"{b['events']:,} events, per record; vs service lake: {agree.get('compared', 0):,} "
        f"rows compared, mismatches {json.dumps(agree.get('mismatched_by_field', {}))}",
    )
    raw = results.get("raw_consume")
    if raw:
        main.add_row(
            "raw consume (broker ceiling) msg/s",
            _fmt(raw["per_s"]),
            "same consumer settings, consume() + value() only: no processing at all",
        )
    ratio = results.get("ratio_vs_baseline")
    main.add_row(
        "service / baseline",
        _fmt(ratio, 1, "x"),
        f"target {target['ratio_vs_baseline']:.0f}x {'MET' if target['ratio_met'] else 'NOT MET'}",
    )
    main.add_row("end-to-end wall (incl. join)", _fmt(s["end_to_end_s"], 2, " s"),
                 f"group join + start-up {_fmt(s['join_s'], 2, ' s')}")  # fmt: skip
    main.add_row(
        "busy seconds (process batches)", _fmt(s["busy_s"], 2, " s"), "RunStats.busy_seconds"
    )
    main.add_row(
        "latency p50 / p99",
        f"{_fmt(lat['p50_ms'])} / {_fmt(lat['p99_ms'])} ms",
        f"{lat['events']:,} events at {lat['offered_rate']:,}/s offered "
        f"({lat['achieved_produce_rate']:,.0f}/s achieved, "
        f"{lat['offered_rate'] / max(s['cdr_per_s'], 1):.0%} of the measured throughput), "
        f"max_age_s={lat['max_age_s']}",
    )
    for label, phase in (("full speed", s), ("latency run", lat)):
        commit = phase.get("commit_ms") or {}
        main.add_row(
            f"table commit p50 / p99 ({label})",
            f"{_fmt(commit.get('p50'), 1)} / {_fmt(commit.get('p99'), 1)} ms",
            f"{commit.get('n', 0):,} Delta commits (rows + offset, one per flush), "
            f"max {_fmt(commit.get('max'), 1)} ms",
        )
    main.add_row(
        "peak RSS service", _fmt(s["peak_rss_mb"], 0, " MB"), "VmHWM of the consumer process"
    )
    main.add_row("peak RSS baseline", _fmt(b["peak_rss_mb"], 0, " MB"), "")
    cpu = s["cpu_s"]
    main.add_row(
        "CPU s: consumer / broker / redis",
        f"{cpu['consumer']:.1f} / {cpu['broker']:.1f} / {cpu['redis']:.1f}",
        f"whole service child (incl. start-up, join, idle stop) vs span {s['span_s']:.1f} s",
    )
    main.add_row("enrichment cache hit rate", _fmt(s["enrich_hit_rate"] * 100, 1, " %"), "")
    main.add_row("dead letters", _fmt(s["dead_letters"]), json.dumps(s["by_reason"]))
    console.print(main)
    render_capacity(results, console)

    prof = Table(title="Where the service's time goes (its own stage timings, measured run)")
    prof.add_column("stage")
    prof.add_column("thread")
    prof.add_column("seconds", justify="right")
    prof.add_column("us/event", justify="right")
    prof.add_column("share of span", justify="right")
    for name, row in s["stage_profile"].items():
        prof.add_row(
            name,
            row["thread"],
            f"{row['seconds']:.3f}",
            f"{row['us_per_event']:.2f}",
            f"{row['share']:.0%}",
        )
    console.print(prof)
    cprof = results.get("cprofile")
    if cprof:
        top = Table(
            title=f"cProfile, service over {cprof['events']:,} events (consumer thread only, "
            "top by own time; consume includes the group join and the idle wait before stop)"
        )
        top.add_column("function")
        top.add_column("calls", justify="right")
        top.add_column("own s", justify="right")
        top.add_column("cum s", justify="right")
        for row in cprof["top_tottime"][:15]:
            top.add_row(
                row["function"],
                f"{row['calls']:,}",
                f"{row['tottime_s']:.3f}",
                f"{row['cumtime_s']:.3f}",
            )
        console.print(top)


def _met(flag: object) -> str:
    return "MET" if flag else "NOT MET"


def render_capacity(results: dict[str, Any], console: Console) -> None:
    """Issue 11: garbage against clean traffic, memory on a backlog (when measured)."""
    s, target = results["service"], results["targets"]
    table = Table(title="Capacity under garbage and on a backlog (issue 11, same run)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("note")
    m = results.get("malformed")
    if m:
        setup = results["malformed_setup"]
        table.add_row("clean msg/s", _fmt(s["cdr_per_s"]), f"{s['events']:,} events ({TOPIC})")
        table.add_row(
            f"{setup['share']:.0%} malformed msg/s",
            _fmt(m["cdr_per_s"]),
            f"{m['events']:,} messages, {setup['malformed']:,} malformed "
            f"({', '.join(setup['kinds'])}); dead letters {m['dead_letters']:,}",
        )
        table.add_row(
            "malformed / clean",
            _fmt(results["malformed_ratio"], 2),
            f"target >= {target['malformed_ratio']} {_met(target['malformed_ratio_met'])}",
        )
        decode = m["stage_profile"].get(STAGE_LABELS["decode:decode_batch"], {})
        table.add_row(
            "decode_batch, malformed run",
            _fmt(decode.get("us_per_event"), 2, " us/msg"),
            f"clean run {_fmt(s['stage_profile'][STAGE_LABELS['decode:decode_batch']]['us_per_event'], 2, ' us/msg')}",
        )
    old = results.get("service_old_defaults")
    if old:
        table.add_row(
            "consumer CPU us/event: new / old defaults",
            f"{_fmt(s['consumer_cpu_us_per_event'], 2)} / "
            f"{_fmt(old['consumer_cpu_us_per_event'], 2)}",
            "whole consumer child (start-up included) / events",
        )
        table.add_row(
            "clean msg/s, old memory defaults",
            _fmt(old["cdr_per_s"]),
            f"msg/s cost of the new defaults {(results['memory_defaults_cost'] or 0):+.1%} "
            f"(negative: faster), CPU/event {(results['memory_defaults_cpu_cost'] or 0):+.1%}"
            f" (target <= {target['memory_defaults_cost']:.0%} "
            f"{_met(target['memory_defaults_cost_met'])}); peak RSS {_fmt(old['peak_rss_mb'])} MB",
        )
    backlog = results.get("backlog")
    if backlog:
        table.add_row(
            "backlog peak RSS",
            _fmt(backlog["peak_rss_mb"], 0, " MB"),
            f"pre-filled {backlog['events']:,}-event topic, every service default "
            f"(max_age_s {backlog['settings']['batch']['max_age_s']}); target < "
            f"{target['backlog_rss_mb']} MiB {_met(target['backlog_rss_met'])}",
        )
    backlog_old = results.get("backlog_old_defaults")
    if backlog_old:
        table.add_row(
            "backlog peak RSS, old memory defaults",
            _fmt(backlog_old["peak_rss_mb"], 0, " MB"),
            json.dumps(OLD_MEMORY_DEFAULTS),
        )
    if table.row_count:
        console.print(table)


def parse_args(argv: list[str] | None = None) -> Options:
    d = Options()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument(
        "--events", type=int, default=d.events, help="events produced for the throughput run"
    )
    p.add_argument("--partitions", type=int, default=d.partitions)
    p.add_argument(
        "--lnp", type=int, default=d.lnp, help="ported numbers in the generated reference data"
    )
    p.add_argument("--npanxx", type=int, default=d.npanxx)
    p.add_argument("--baseline-events", type=int, default=d.baseline_events)
    p.add_argument("--latency-events", type=int, default=d.latency_events)
    p.add_argument("--latency-rate", type=int, default=d.latency_rate, help="events/s offered")
    p.add_argument(
        "--poll-max-messages",
        type=int,
        default=d.poll_max_messages,
        help="batch.poll_max_messages of the service (default: the service default)",
    )
    p.add_argument(
        "--malformed-events",
        type=int,
        default=d.malformed_events,
        help="messages of the malformed-traffic phase (default: --events; 0: skip it)",
    )
    p.add_argument(
        "--malformed-share",
        type=float,
        default=d.malformed_share,
        help="share of malformed messages in that phase",
    )
    p.add_argument(
        "--no-backlog",
        action="store_true",
        help="skip the backlog phase (pre-filled topic, every service default: peak RSS)",
    )
    p.add_argument(
        "--old-defaults",
        action="store_true",
        help="also run the service with the memory defaults before issue 11",
    )
    p.add_argument(
        "--max-age", type=float, default=d.max_age_s, help="batch.max_age_s of the service"
    )
    p.add_argument("--stop-when-idle", type=float, default=d.stop_when_idle_s)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--cprofile", action="store_true", help="also run the service under cProfile")
    p.add_argument("--workdir", default=None, help="keep inputs and lakes here")
    p.add_argument("--keep", action="store_true", help="do not delete the temporary workdir")
    p.add_argument("--results", default=str(RESULTS_PATH), help="JSON output path")
    a = p.parse_args(argv)
    return Options(
        events=a.events, partitions=a.partitions, lnp=a.lnp, npanxx=a.npanxx,
        baseline_events=a.baseline_events, latency_events=a.latency_events,
        latency_rate=a.latency_rate, poll_max_messages=a.poll_max_messages,
        max_age_s=a.max_age, stop_when_idle_s=a.stop_when_idle, seed=a.seed,
        malformed_events=a.malformed_events, malformed_share=a.malformed_share,
        backlog=not a.no_backlog, old_defaults=a.old_defaults,
        cprofile=a.cprofile, workdir=a.workdir, keep=a.keep, results=a.results,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    opts = parse_args(argv)
    results = run(opts)
    render(results)
    path = write_results(results, Path(opts.results))
    make_console(stderr=True).print(f"results written to {path}")
    return results


if __name__ == "__main__":
    main()
