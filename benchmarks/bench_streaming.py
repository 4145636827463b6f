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
   ``stop_when_idle``). Rated CDR/s = events / (last flush - first message processed).
   Stages are timed by wrapping the service's own functions in the child.
4. **service + (B)** -- the same, with ``Enricher.for_numbers`` replaced by the whole LNP
   table read once from its Arrow copy in Redis (a prototype; pipeline code unchanged).
5. **latency** -- a fresh service child consumes a second topic while this process
   produces ``--latency-events`` at ``--latency-rate`` events/s; event-to-lake latency
   p50/p99 (Kafka CreateTime to the Delta commit holding the rows and the offset).
6. **baseline** -- :func:`benchmarks.baseline.run_baseline_consumer` (fastavro per
   message, per-record Python rating, one Redis HGET per origin, Parquet from dicts)
   on the first ``--baseline-events`` of the same topic; its rows are then compared
   with the service's lake by (partition, offset).
7. **stage prototypes** -- each stage on real consumed messages, as it is and as
   prototyped (outputs checked equal), plus the baseline's rating alone. Optional
   ``--cprofile``: the service under cProfile over the latency topic.

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
TOPIC = "cdr-bench"
LATENCY_TOPIC = "cdr-bench-latency"
DLQ_TOPIC = "cdr-bench-dlq"


@dataclass(frozen=True)
class Options:
    events: int = 1_000_000
    partitions: int = 4
    lnp: int = 1_000_000
    npanxx: int = 100_000
    baseline_events: int = 100_000
    latency_events: int = 200_000
    latency_rate: int = 50_000
    prototype_events: int = 100_000
    poll_max_messages: int = 20_000
    max_age_s: float = 1.0
    stop_when_idle_s: float = 8.0
    seed: int = 1
    cprofile: bool = False
    full_lnp: bool = True
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


@dataclass
class StageTimer:
    """Seconds and calls per stage; intervals use ``time.monotonic`` like RunStats."""

    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    consume_calls: list[tuple[float, float, int]] = field(default_factory=list)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.calls[name] = self.calls.get(name, 0) + 1

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.monotonic() - started)

        return timed


class _TimedConsumer:
    """Proxy of a confluent_kafka Consumer timing ``consume`` and ``commit``."""

    def __init__(self, consumer: Any, timer: StageTimer) -> None:
        self._consumer = consumer
        self._timer = timer

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        messages = self._consumer.consume(*args, **kwargs)
        self._timer.consume_calls.append((started, time.monotonic(), len(messages)))
        return messages

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return self._consumer.commit(*args, **kwargs)
        finally:
            self._timer.add("kafka_commit", time.monotonic() - started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


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


def _in_span(
    calls: list[tuple[float, float, int]], start: float | None, end: float | None
) -> float:
    """Seconds of ``(started, ended, n)`` intervals inside ``[start, end]``."""
    if start is None or end is None:
        return 0.0
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b, _ in calls)


def service_child(config: dict[str, Any], out: Any) -> None:
    """One consumer process of the real service (spawned). Reports to ``out`` (a queue):
    ``("assigned", n)``, ``("progress", events)``, and finally ``("done", results)``."""
    _quiet_child(config["log"])
    import pipeline.runtime.service as service_module
    from pipeline.settings import load_settings
    from pipeline.streaming import build_service

    settings = load_settings(**config["settings"])
    timer = StageTimer()

    def hook(point: str, info: dict[str, Any]) -> None:
        if point == "flush:committed":
            out.put(("progress", int(info["last"]) - int(info["first"]) + 1))

    # Stage timing by wrapping, in this child only (pipeline code is not changed).
    # Methods that a version of the service lacks are skipped.
    service_module.decode_batch = timer.wrap("decode", service_module.decode_batch)  # type: ignore[attr-defined]
    service_module.rate_batch = timer.wrap("rate", service_module.rate_batch)  # type: ignore[attr-defined]
    service = build_service(settings, hook=hook)
    service.consumer = _TimedConsumer(service.consumer, timer)  # type: ignore[assignment]
    if config.get("full_lnp"):  # prototype (B): the whole LNP table, read once
        from pipeline.refdata.redis_store import read_reference_from_redis

        full = read_reference_from_redis(settings.redis.client())
        service.enricher.for_numbers = timer.wrap("enrich", lambda _tns: full)  # type: ignore[method-assign]
    else:
        service.enricher.for_numbers = timer.wrap("enrich", service.enricher.for_numbers)  # type: ignore[method-assign]
    for target, name, stage in (
        (service.lake, "commit_range", "lake_commit"),
        (service.dead_letters, "send", "dead_letters"),
        (service, "_stage", "stage"),  # poll fields, hand-off to the decode thread
        (service, "_prepared", "wait_prepare"),  # waiting for the decode and lookup threads
        (service, "_complete", "complete_total"),
        (service, "_decode", "decode_total"),  # on the decode thread
        (service, "_flush", "flush_total"),  # synchronous flush (before the writer thread)
        (service, "_flush_due", "flush_due"),  # submit to the writer, reap, commit
        (service, "_backpressure", "backpressure"),  # waiting for the writer
        (service, "_write", "write_total"),  # on the writer thread
    ):
        if hasattr(target, name):
            setattr(target, name, timer.wrap(stage, getattr(target, name)))
    on_assign = service._on_assign

    def assigned(consumer: Any, partitions: list[Any]) -> None:
        on_assign(consumer, partitions)
        out.put(("assigned", len(partitions)))

    service._on_assign = assigned  # type: ignore[method-assign]

    profiler = cProfile.Profile() if config.get("cprofile") else None
    if profiler is not None:
        profiler.enable()
    stats = service.run()
    if profiler is not None:
        profiler.disable()
    finished = time.monotonic()
    start, end = stats.first_message_at, stats.last_flush_at
    in_span = _in_span(timer.consume_calls, start, end)
    result: dict[str, Any] = {
        "consumed": stats.consumed,
        "rated": stats.rated,
        "dead_letters": stats.dead_letters,
        "by_reason": stats.by_reason,
        "flushes": stats.flushes,
        "files": stats.files,
        "started": stats.started,
        "first_message_at": start,
        "last_flush_at": end,
        "finished": finished,
        "busy_seconds": stats.busy_seconds,
        "latency_ms": _percentiles(stats.latencies_ms),
        "peak_rss_mb": peak_rss_mb(),
        "cpu_s": process_cpu_s(os.getpid()),
        "enrich_hit_rate": service.enricher.hit_rate,
        "stage_seconds": dict(timer.seconds),
        "stage_calls": dict(timer.calls),
        "consume_seconds_in_span": in_span,
        "consume_calls": len(timer.consume_calls),
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


def raw_consume_phase(env: Env, opts: Options, progress: Bar, produced: int) -> dict[str, Any]:
    config = {
        "brokers": env.brokers,
        "topic": TOPIC,
        "group": "bench-raw-consume",
        "events": produced,
        "batch": opts.poll_max_messages,
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


def _settings(env: Env, opts: Options, topic: str, group: str, lake: Path) -> dict[str, Any]:
    return {
        "kafka": {"brokers": env.brokers},
        "redis": {"url": env.redis_url},
        "topic": topic,
        "group": group,
        "output": str(lake),
        "tariffs": str(env.tariffs),
        "dead_letter_topic": DLQ_TOPIC,
        "stop_when_idle": opts.stop_when_idle_s,
        "log_level": "WARNING",
        "batch": {"max_age_s": opts.max_age_s, "poll_max_messages": opts.poll_max_messages},
    }


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
    from pipeline.refdata.redis_store import load_to_redis
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


def stage_profile(r: dict[str, Any], span: float) -> dict[str, dict[str, Any]]:
    """Stage rows of a service child's timings: the consumer (main) thread's stages add
    up to the span; the decode, lookup and writer threads' run concurrently."""
    stages = r["stage_seconds"]
    consumed = r["consumed"]
    writer_thread = "write_total" in stages
    flush_parts = ("lake_commit", "dead_letters")
    main: dict[str, float] = {
        "consume (poll, in span)": r["consume_seconds_in_span"],
        "poll fields, hand-off": stages.get("stage", 0.0),
        "wait for decode and lookup": stages.get("wait_prepare", 0.0),
        "rate (rate_batch)": stages.get("rate", 0.0),
        "split, buffers": stages.get("complete_total", 0.0)
        - sum(stages.get(k, 0.0) for k in ("wait_prepare", "rate")),
    }
    prepare = {
        "decode: decode_batch": stages.get("decode", 0.0),
        "decode: numbers, origins": stages.get("decode_total", 0.0) - stages.get("decode", 0.0),
        "lookup: Enricher.for_numbers": stages.get("enrich", 0.0),
    }
    writer: dict[str, float] = {}
    if writer_thread:
        main["flush: submit, reap, commit"] = stages.get("flush_due", 0.0) - stages.get(
            "backpressure", 0.0
        )
        main["flush: wait for the writer"] = stages.get("backpressure", 0.0)
        writer = {
            "writer: dead-letter produce": stages.get("dead_letters", 0.0),
            "writer: Delta commit (rows + offset)": stages.get("lake_commit", 0.0),
            "writer: other (stats, metrics)": stages.get("write_total", 0.0)
            - sum(stages.get(k, 0.0) for k in flush_parts),
        }
    else:  # flushes on the consumer thread
        main.update(
            {
                "dead-letter produce": stages.get("dead_letters", 0.0),
                "Delta commit (rows + offset)": stages.get("lake_commit", 0.0),
                "kafka commit": stages.get("kafka_commit", 0.0),
                "flush other (concat)": stages.get("flush_total", 0.0)
                - sum(stages.get(k, 0.0) for k in (*flush_parts, "kafka_commit")),
            }
        )
    main["loop/other"] = span - sum(main.values())
    return {
        name: {
            "seconds": secs,
            "us_per_event": secs / consumed * 1e6 if consumed else 0.0,
            "share": secs / span if span else 0.0,
            "thread": next(
                (t for t in ("writer", "decode", "lookup") if name.startswith(t + ":")), "consumer"
            ),
        }
        for name, secs in {**main, **prepare, **writer}.items()
    }


def service_phase(
    env: Env, opts: Options, progress: Bar, produced: int, *, full_lnp: bool = False
) -> dict[str, Any]:
    name = "service-full-lnp" if full_lnp else "service"
    config = {
        "settings": _settings(env, opts, TOPIC, f"bench-{name}", env.workdir / f"lake-{name}"),
        "log": str(env.workdir / f"{name}.log"),
        "full_lnp": full_lnp,
    }
    label = "service + (B) full LNP" if full_lnp else "service (1 consumer)"
    started = time.monotonic()
    servers = process_cpu_s(env.broker_pid), process_cpu_s(env.redis_pid)
    r = _follow(Child(service_child, config), progress, label, produced)
    broker_cpu = process_cpu_s(env.broker_pid) - servers[0]
    redis_cpu = process_cpu_s(env.redis_pid) - servers[1]
    first, last = r["first_message_at"], r["last_flush_at"]
    span = (last - first) if first is not None and last is not None else float("nan")
    consumed = r["consumed"]
    return {
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
        "flushes": r["flushes"],
        "files": r["files"],
        "enrich_hit_rate": r["enrich_hit_rate"],
        "consume_calls": r["consume_calls"],
        "stage_profile": stage_profile(r, span),
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


# ------------------------------------------------------------------ stage prototypes
def _consume_messages(brokers: str, topic: str, n: int, batch: int) -> list[list[Any]]:
    """``n`` messages of ``topic`` from the beginning (explicit assignment), in batches."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    from pipeline.io import kafka_clients
    from pipeline.settings import KafkaSettings

    consumer = kafka_clients.consumer(KafkaSettings(brokers=brokers), "bench-prototypes")
    try:
        meta = consumer.list_topics(topic, timeout=30)
        parts = sorted(meta.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        batches: list[list[Any]] = []
        got = 0
        deadline = time.monotonic() + 120
        while got < n and time.monotonic() < deadline:
            messages = [m for m in consumer.consume(min(batch, n - got), 1.0) if m.error() is None]
            if messages:
                batches.append(messages)
                got += len(messages)
        return batches
    finally:
        consumer.close()


def prototype_phase(
    *,
    brokers: str,
    redis_url: str,
    topic: str,
    tariffs: Path,
    refdata: Path,
    workdir: Path,
    events: int,
    batch: int,
) -> dict[str, Any]:
    """Each stage of the service on real consumed messages, as it is and as prototyped.

    Variants: (A) LNP from Redis with one packed argument and one packed reply;
    (B) the whole LNP table in memory from its Arrow copy in Redis, read once per
    version; (D) the Parquet write on a background thread, overlapped with the next
    batch. Every variant's output is compared with the original's.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    import pyarrow.compute as pc
    import redis

    from pipeline.io.registry import ShippedSchemas
    from pipeline.io.wire import KafkaSources, decode_batch
    from pipeline.lake.lake import Lake
    from pipeline.rating.rate import origin_numbers, rate_batch
    from pipeline.refdata.redis_store import RedisReferenceReader, read_reference_from_redis
    from pipeline.runtime.enrich import Enricher
    from pipeline.tariff_files import load_tariff_dir

    batches = _consume_messages(brokers, topic, events, batch)
    n = sum(len(b) for b in batches)
    book = load_tariff_dir(tariffs)
    resolver = ShippedSchemas()
    client = redis.Redis.from_url(redis_url)
    seconds: dict[str, float] = {}

    def clock(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        value = fn(*args, **kwargs)
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
        return value

    def extract(msgs: list[Any]) -> tuple[Any, ...]:
        m = len(msgs)
        return (
            [x.value() for x in msgs],
            [x.key() for x in msgs],
            np.fromiter((x.partition() for x in msgs), np.int32, m),
            np.fromiter((x.offset() for x in msgs), np.int64, m),
            np.fromiter((x.timestamp()[1] for x in msgs), np.int64, m),
        )

    decoded = []
    for msgs in batches:
        values, keys, partitions, offsets, _ = clock("extract", extract, msgs)
        sources = KafkaSources(topic, partitions, offsets)
        events_t, _dead = clock("decode", decode_batch, values, sources, resolver, keys=keys)
        decoded.append(events_t)

    enricher = Enricher(RedisReferenceReader(client))
    snapshot = enricher.snapshot()
    refs = [clock("enrich", enricher.for_batch, ev) for ev in decoded]

    reader = RedisReferenceReader(client)

    def packed(ev: Any) -> Any:
        """The store's packed lookup (what ``Enricher.for_batch`` uses) without the cache."""
        origin = origin_numbers(ev)
        tns = np.unique(origin.national[origin.nanp])
        tns = tns[(tns >= 2_000_000_000) & (tns <= 9_999_999_999)]
        _, ocns = reader.lookup_lnp_array(tns)
        found = pc.is_valid(ocns)
        hit = np.asarray(found.to_numpy(zero_copy_only=False), dtype=np.bool_)
        return snapshot.with_lnp(tns[hit], ocns.filter(found))

    for ev, ref in zip(decoded, refs, strict=True):
        alt = clock("enrich_packed", packed, ev)
        same_keys = np.array_equal(alt.lnp.keys, ref.lnp.keys)
        if not (same_keys and np.array_equal(alt.lnp_ocn, ref.lnp_ocn)):
            raise RuntimeError("packed LNP lookup differs from Enricher.for_batch")

    full = clock("load_full_lnp_once", read_reference_from_redis, client)
    rated = [
        clock("rate", rate_batch, ev, ref, book) for ev, ref in zip(decoded, refs, strict=True)
    ]
    for ev, expected in zip(decoded, rated, strict=True):
        if not clock("rate_full_lnp", rate_batch, ev, full, book).rated.equals(expected.rated):
            raise RuntimeError("rating with the full LNP table differs")

    lake = Lake(workdir / "lake-prototypes")
    for result in rated:
        clock("write_parquet", lake.write_rated, result.rated)

    # The baseline's per-record rating alone (LNP in a dict, no Kafka/Redis/Parquet):
    # the pure compute ratio of the vectorized core over plain Python.
    from benchmarks.baseline import load_lnp_dict, load_refs, rate_event

    plain_refs, plain_lnp = load_refs(refdata), load_lnp_dict(refdata)

    def per_record(rows: list[dict[str, Any]]) -> list[Any]:
        return [rate_event(r, plain_refs, plain_lnp.get, book) for r in rows]

    for ev in decoded:
        clock("baseline_rate_event", per_record, ev.to_pylist())

    # Whole batch pipelines (consume excluded): as is, and with B + D.
    def as_is() -> None:
        for ev in decoded:
            r = rate_batch(ev, enricher.for_batch(ev), book)
            lake.write_rated(r.rated)

    def improved() -> None:
        with ThreadPoolExecutor(1) as pool:
            pending: Future[Any] | None = None
            for ev in decoded:
                r = rate_batch(ev, full, book)
                if pending is not None:
                    pending.result()
                pending = pool.submit(lake.write_rated, r.rated)
            if pending is not None:
                pending.result()

    enricher = Enricher(RedisReferenceReader(client))  # cold cache, as in a fresh service
    clock("pipeline_as_is", as_is)
    clock("pipeline_improved", improved)

    per = {k: v / n * 1e6 for k, v in seconds.items()}
    dec = per["extract"] + per["decode"]
    rows = [
        {"name": "extract message fields", "us_per_event": per["extract"], "note": "value/key/partition/offset/timestamp per message"},
        {"name": "decode_batch", "us_per_event": per["decode"], "note": "columnar (polars)"},
        {"name": "enrich: Enricher.for_batch (as is)", "us_per_event": per["enrich"],
         "note": "as the service does it (cache + Lua lookup per batch)"},
        {"name": "enrich (A): packed lookup, no cache", "us_per_event": per["enrich_packed"],
         "note": "RedisReferenceReader.lookup_lnp_array alone; same LNP subset (checked)"},
        {"name": "enrich (B): full LNP in memory", "us_per_event": 0.0,
         "note": f"per batch 0; once per version {seconds['load_full_lnp_once']:.2f} s (Arrow copy in Redis)"},
        {"name": "rate_batch (as is)", "us_per_event": per["rate"], "note": "LNP subset of the batch"},
        {"name": "rate_batch with full LNP", "us_per_event": per["rate_full_lnp"], "note": "identical output (checked)"},
        {"name": "baseline rate_event per record", "us_per_event": per["baseline_rate_event"],
         "note": f"plain Python, LNP in a dict, no I/O: {per['baseline_rate_event'] / per['rate']:.1f}x rate_batch"},
        {"name": "Delta append (Lake.write_rated)", "us_per_event": per["write_parquet"], "note": "zstd, one commit"},
        {"name": "enrich+rate+Parquet, one thread", "us_per_event": per["pipeline_as_is"] + dec,
         "note": f"+ extract + decode, no consume: {1e6 / (per['pipeline_as_is'] + dec):,.0f} CDR/s"},
        {"name": "(B) + Parquet on a 2nd thread (D)", "us_per_event": per["pipeline_improved"] + dec,
         "note": f"+ extract + decode, no consume: {1e6 / (per['pipeline_improved'] + dec):,.0f} CDR/s"},
    ]  # fmt: skip
    return {"events": n, "batch": batch, "seconds": seconds, "us_per_event": per, "rows": rows}


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
            results["service"] = service_phase(env, opts, bar, results["setup"]["produced"])
            if opts.full_lnp:
                results["service_full_lnp"] = service_phase(
                    env, opts, bar, results["setup"]["produced"], full_lnp=True
                )
            results["latency"] = latency_phase(env, opts, bar)
            results["baseline"] = baseline_phase(env, opts, bar)
            task = bar.add_task("stage prototypes", total=None)
            results["prototypes"] = prototype_phase(
                brokers=env.brokers,
                redis_url=env.redis_url,
                topic=TOPIC,
                tariffs=env.tariffs,
                refdata=env.refdata,
                workdir=workdir,
                events=min(opts.prototype_events, opts.events),
                batch=opts.poll_max_messages,
            )
            bar.update(task, total=1, completed=1)
            if opts.cprofile:
                results["cprofile"] = cprofile_phase(env, opts, bar)
    finally:
        if not opts.keep and not opts.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    service, baseline = results["service"]["cdr_per_s"], results["baseline"]["cdr_per_s"]
    results["ratio_vs_baseline"] = service / baseline if baseline else None
    results["targets"]["cdr_per_s_met"] = service >= TARGET_CDR_PER_S
    results["targets"]["ratio_met"] = bool(baseline) and service / baseline >= TARGET_RATIO
    return results


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
    full_lnp = results.get("service_full_lnp")
    if full_lnp:
        main.add_row(
            "service + (B) full LNP, CDR/s",
            _fmt(full_lnp["cdr_per_s"]),
            f"the same service, Enricher.for_numbers replaced by the whole LNP table read once; "
            f"RSS {full_lnp['peak_rss_mb']:,.0f} MB",
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

    for title, run_ in (
        ("Where the service's time goes (one consumer, measured run)", s),
        ("Service + (B) full LNP in memory", results.get("service_full_lnp")),
    ):
        if not run_:
            continue
        prof = Table(title=title)
        prof.add_column("stage")
        prof.add_column("thread")
        prof.add_column("seconds", justify="right")
        prof.add_column("us/event", justify="right")
        prof.add_column("share of span", justify="right")
        for name, row in run_["stage_profile"].items():
            prof.add_row(
                name,
                row.get("thread", "consumer"),
                f"{row['seconds']:.3f}",
                f"{row['us_per_event']:.2f}",
                f"{row['share']:.0%}",
            )
        console.print(prof)

    protos = results.get("prototypes")
    if protos:
        proto = Table(
            title=f"Stage prototypes on {protos['events']:,} real messages (batches of {protos['batch']:,})"
        )
        proto.add_column("stage / variant")
        proto.add_column("us/event", justify="right")
        proto.add_column("note")
        for row in protos["rows"]:
            proto.add_row(row["name"], f"{row['us_per_event']:.2f}", row.get("note", ""))
        console.print(proto)
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
    p.add_argument("--prototype-events", type=int, default=d.prototype_events)
    p.add_argument("--poll-max-messages", type=int, default=d.poll_max_messages)
    p.add_argument(
        "--max-age", type=float, default=d.max_age_s, help="batch.max_age_s of the service"
    )
    p.add_argument("--stop-when-idle", type=float, default=d.stop_when_idle_s)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--cprofile", action="store_true", help="also run the service under cProfile")
    p.add_argument("--no-full-lnp", action="store_true", help="skip the service + (B) run")
    p.add_argument("--workdir", default=None, help="keep inputs and lakes here")
    p.add_argument("--keep", action="store_true", help="do not delete the temporary workdir")
    p.add_argument("--results", default=str(RESULTS_PATH), help="JSON output path")
    a = p.parse_args(argv)
    return Options(
        events=a.events, partitions=a.partitions, lnp=a.lnp, npanxx=a.npanxx,
        baseline_events=a.baseline_events, latency_events=a.latency_events,
        latency_rate=a.latency_rate, prototype_events=a.prototype_events,
        poll_max_messages=a.poll_max_messages, max_age_s=a.max_age,
        stop_when_idle_s=a.stop_when_idle, seed=a.seed, cprofile=a.cprofile,
        full_lnp=not a.no_full_lnp,
        workdir=a.workdir, keep=a.keep, results=a.results,
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
