"""Observability of ``run`` (issue 4): ``/metrics``, ``/healthz``, ``/readyz`` and the
log lines, against a real Kafka-protocol broker and real Redis."""

from __future__ import annotations

import http.client
import io
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message
from prometheus_client.parser import text_string_to_metric_families

from pipeline.avro.schemas import load_call_event_schema
from pipeline.embedded import EmbeddedKafka, EmbeddedRedis, embedded_redis, free_port
from pipeline.io import kafka_clients
from pipeline.io.wire import encode
from pipeline.observability import ROOT_LOGGER, setup_logging
from pipeline.runtime.health import redis_pinger
from pipeline.settings import KafkaSettings
from tests.integration.streaming import (
    ServiceThread,
    lake_rated,
    load_sample_refdata,
    produce_raw,
    settings_for,
    unique,
)
from tests.unit.events import event

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
Messages = list[tuple[bytes | None, bytes | None]]


# ----------------------------------------------------------------------------- helpers
def _get(port: int, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:port/path -> (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def _scrape(port: int) -> Samples:
    status, body = _get(port, "/metrics")
    assert status == 200, body
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def _produce(brokers: str, topic: str, messages: Messages) -> dict[int, int]:
    """Produce ``messages`` (partition by key hash); the last offset (inclusive) each
    partition got, from the delivery reports."""
    last: dict[int, int] = {}

    def delivered(err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        p, offset = msg.partition(), msg.offset()
        assert p is not None
        assert offset is not None
        last[p] = max(last.get(p, -1), offset)

    prod = kafka_clients.producer(KafkaSettings(brokers=brokers))
    for key, value in messages:
        prod.produce(topic, key=key, value=value, on_delivery=delivered)
    kafka_clients.flush_or_raise(prod, 60, "test produce")
    return last


def _traffic(n_good: int) -> tuple[Messages, Counter[str], list[str]]:
    """Wire-format messages: good events plus dead letters of three reasons; the
    expected dead letters by reason; every phone number in them."""
    schema = load_call_event_schema()
    good = [
        event(call_id=f"ok-{i}", account_id="ACC-1001", calling_number=f"+1212555{i:04d}")
        for i in range(n_good)
    ]
    unknown = [
        event(call_id=f"acct-{i}", account_id="ACC-0000", calling_number=f"+1312555{i:04d}")
        for i in range(3)
    ]
    malformed = [
        event(call_id=f"called-{i}", account_id="ACC-1001", called_number=f"1800555{i:04d}")
        for i in range(2)
    ]
    messages: Messages = [
        (str(e["call_id"]).encode(), encode(e, 1, schema)) for e in good + unknown + malformed
    ]
    messages += [(b"magic-1", b"\x01garbage"), (b"magic-2", b"\x07more garbage")]
    expected = Counter({"UNKNOWN_ACCOUNT": 3, "MALFORMED_CALLED_NUMBER": 2, "BAD_MAGIC_BYTE": 2})
    numbers = [
        str(e[k]) for e in good + unknown + malformed for k in ("calling_number", "called_number")
    ]
    return messages, expected, numbers


def _assert_no_phone_numbers(text: str, numbers: list[str]) -> None:
    """Neither the number nor its last 10 digits (the national part) is in ``text``."""
    for number in set(numbers):
        digits = number.lstrip("+")
        assert digits[-10:] not in text, "a phone number reached the log"


@pytest.fixture
def log_capture() -> Iterator[Callable[[str], io.StringIO]]:
    """``setup_logging`` at DEBUG into a buffer (format ``kv`` or ``json``); the
    ``pipeline`` root logger is restored afterwards."""
    logger = logging.getLogger(ROOT_LOGGER)
    saved = (logger.handlers[:], logger.filters[:], logger.level, logger.propagate)

    def capture(fmt: str) -> io.StringIO:
        buf = io.StringIO()
        setup_logging("DEBUG", fmt, stream=buf)
        return buf

    try:
        yield capture
    finally:
        logger.handlers[:], logger.filters[:], logger.level, logger.propagate = saved


# ----------------------------------------------------------------------------- tests
def test_metrics_count_what_the_service_did(
    kafka_broker: EmbeddedKafka,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
    log_capture: Callable[[str], io.StringIO],
) -> None:
    """/metrics of a running service: consumed == rated + dead-lettered, dead letters by
    reason, files, last durable offset and lag per partition; /readyz is 503 before
    the assignment and 200 after; kv flush lines carry the ranges and counts and no
    phone number; the port is closed once the service stops."""
    logs = log_capture("kv")
    load_sample_refdata(redis_server.url)
    topic = unique("obs")
    brokers = kafka_broker.bootstrap
    kafka_clients.ensure_topic(KafkaSettings(brokers=brokers), topic, 2)
    messages, expected_dead, numbers = _traffic(120)
    last = _produce(brokers, topic, messages)
    n = len(messages)
    n_dead = sum(expected_dead.values())

    port = free_port()
    lake = tmp_path / "lake"
    worker = ServiceThread(
        settings_for(brokers, redis_server.url, lake, topic, stop_when_idle=None, metrics_port=port)
    )
    status, body = _get(port, "/readyz")  # built, not yet a group member
    assert (status, body.strip()) == (503, "not assigned: waiting for the consumer group")
    assert _get(port, "/healthz")[0] == 200
    worker.start()
    _wait(lambda: _get(port, "/readyz")[0] == 200, 30, "ready once assigned")

    def all_flushed() -> bool:
        s = _scrape(port)
        return (
            _value(s, "cdr_events_rated_total", topic=topic)
            + sum(_series(s, "cdr_events_dead_lettered_total").values())
            == n
        )

    _wait(all_flushed, 60, "every event rated or dead-lettered")

    def caught_up() -> bool:
        lag = {
            dict(k)["partition"]: v for k, v in _series(_scrape(port), "cdr_consumer_lag").items()
        }
        return all(lag.get(str(p)) == 0.0 for p in last)

    _wait(caught_up, 10, "lag gauge 0 on every partition with events")
    s = _scrape(port)
    assert _get(port, "/healthz")[0] == 200
    assert _get(port, "/readyz") == (200, "ok: assigned, redis reachable\n")
    stats = worker.stop()

    assert _value(s, "cdr_events_consumed_total", topic=topic) == n == stats.consumed
    assert _value(s, "cdr_events_rated_total", topic=topic) == n - n_dead == stats.rated
    dead = {
        dict(k)["reason"]: int(v) for k, v in _series(s, "cdr_events_dead_lettered_total").items()
    }
    assert dead == dict(expected_dead) == stats.by_reason
    # one Delta commit per flush (data files and the partition's offset together)
    assert _value(s, "cdr_files_written_total", topic=topic) == stats.flushes == stats.files
    durable = {
        int(dict(k)["partition"]): int(v) for k, v in _series(s, "cdr_last_durable_offset").items()
    }
    assert durable == last == stats.durable_offsets
    assert _value(s, "cdr_flushes_total", topic=topic) == stats.flushes
    assert _value(s, "cdr_flush_seconds_count") == stats.flushes
    assert _value(s, "cdr_batch_seconds_count") >= 1
    assert _value(s, "cdr_event_to_lake_seconds_count") == n  # dead letters too
    assert _value(s, "cdr_event_to_lake_seconds_bucket", le="+Inf") == n
    lookups = _value(s, "cdr_enrichment_cache_hits_total") + _value(
        s, "cdr_enrichment_cache_misses_total"
    )
    assert lookups >= 1
    assert 0.0 <= _value(s, "cdr_enrichment_cache_hit_ratio") <= 1.0
    assert ("cdr_enrichment_cache_hit_ratio", frozenset()) in s
    assert _value(s, "cdr_consumption_paused") == 0
    with pytest.raises(ConnectionRefusedError):
        _get(port, "/metrics")

    text = logs.getvalue()
    flushed = re.findall(
        rf"pipeline\.runtime\.committer flushed topic={re.escape(topic)} partition=(\d+) "
        r"offsets=(\d+)-(\d+) rated=(\d+) dead_letters=(\d+) files=(\d+) seconds=[0-9.]+$",
        text,
        re.MULTILINE,
    )
    assert len(flushed) == stats.flushes
    assert sum(int(f[3]) for f in flushed) == n - n_dead
    assert sum(int(f[4]) for f in flushed) == n_dead
    for p, end in last.items():  # the ranges of a partition tile 0..last
        spans = sorted((int(a), int(b)) for q, a, b, *_ in flushed if int(q) == p)
        assert spans[0][0] == 0
        assert spans[-1][1] == end
        assert all(b + 1 == c for (_, b), (c, _) in pairwise(spans))
    assert re.search(rf"batch topic={re.escape(topic)} messages=\d+", text)
    _assert_no_phone_numbers(text, numbers)


def test_healthz_fails_while_the_loop_is_stuck_and_json_logs(
    kafka_broker: EmbeddedKafka,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
    log_capture: Callable[[str], io.StringIO],
) -> None:
    """/healthz turns 503 while the loop is stuck in a flush longer than the liveness
    limit and 200 once it moves on; JSON log lines carry the flush range as fields;
    a phone number logged by mistake is redacted."""
    logs = log_capture("json")
    load_sample_refdata(redis_server.url)
    topic = unique("live")
    brokers = kafka_broker.bootstrap
    kafka_clients.ensure_topic(KafkaSettings(brokers=brokers), topic, 1)
    messages, expected_dead, numbers = _traffic(40)
    produce_raw(brokers, topic, messages)
    stuck, release = threading.Event(), threading.Event()

    def hook(point: str, info: dict[str, Any]) -> None:
        if point == "flush:start" and not stuck.is_set():
            stuck.set()
            logging.getLogger("pipeline.runtime.committer").warning(
                "careless line calling=%s partition=%d", numbers[0], info["partition"]
            )
            release.wait(30)

    settings = settings_for(
        brokers, redis_server.url, tmp_path / "lake", topic, stop_when_idle=None
    )
    worker = ServiceThread(settings, hook=hook)
    port = worker.service.serve_http(
        free_port(), host="127.0.0.1", redis_ping=redis_pinger(settings.redis), liveness_s=1.0
    ).port
    worker.start()
    try:
        assert stuck.wait(30), "no flush started"
        _wait(lambda: _get(port, "/healthz")[0] == 503, 10, "liveness failing while stuck")
        assert _get(port, "/healthz")[1].startswith("loop stalled: last tick")
    finally:
        release.set()
    _wait(lambda: _get(port, "/healthz")[0] == 200, 10, "liveness back")
    _wait(lambda: lake_rated(tmp_path / "lake").num_rows == 40, 30, "all rated")
    stats = worker.stop()

    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    flushes = [line for line in lines if line["msg"].startswith("flushed ")]
    assert len(flushes) == stats.flushes
    for line in flushes:
        assert line["topic"] == topic
        assert line["partition"] == 0
        assert line["offsets"] == f"{line['offset_first']}-{line['offset_last']}"
        assert isinstance(line["rated"], int)
        assert isinstance(line["dead_letters"], int)
        assert isinstance(line["files"], int)
    assert sum(line["rated"] + line["dead_letters"] for line in flushes) == len(messages)
    assert sum(line["dead_letters"] for line in flushes) == sum(expected_dead.values())
    careless = [line for line in lines if line["msg"].startswith("careless line")]
    assert len(careless) == 1
    assert careless[0]["calling"] == "<number>"
    _assert_no_phone_numbers(logs.getvalue(), numbers)


def test_readyz_follows_redis(kafka_broker: EmbeddedKafka, tmp_path: Path) -> None:
    """/readyz: 200 when assigned and Redis answers PING; 503 naming Redis when it is
    down (and naming the pause once a batch needs it), /healthz staying 200 and the
    lag gauge showing the messages behind; 200 again when Redis is back."""
    topic = unique("ready")
    brokers = kafka_broker.bootstrap
    kafka_clients.ensure_topic(KafkaSettings(brokers=brokers), topic, 1)
    schema = load_call_event_schema()
    events = [
        event(call_id=f"r-{i}", account_id="ACC-1002", calling_number=f"+1312555{i:04d}")
        for i in range(30)
    ]
    port = free_port()
    with embedded_redis() as redis:
        load_sample_refdata(redis.url)
        worker = ServiceThread(
            settings_for(
                brokers,
                redis.url,
                tmp_path / "lake",
                topic,
                stop_when_idle=None,
                metrics_port=port,
                batch={"poll_max_messages": 10},
            )
        )
        worker.start()
        _wait(lambda: _get(port, "/readyz")[0] == 200, 30, "ready once assigned")
        redis.stop()
        _wait(lambda: _get(port, "/readyz")[0] == 503, 15, "not ready with redis down")
        assert "redis unreachable" in _get(port, "/readyz")[1]
        assert _get(port, "/healthz")[0] == 200  # an outage is not a reason to restart
        produce_raw(
            brokers, topic, [(str(e["call_id"]).encode(), encode(e, 1, schema)) for e in events]
        )
        _wait(lambda: _value(_scrape(port), "cdr_consumption_paused") == 1, 30, "paused")
        assert "paused: redis unavailable" in _get(port, "/readyz")[1]
        _wait(lambda: _value(_scrape(port), "cdr_consumer_lag", topic=topic, partition="0") > 0,
              10, "lag of the messages behind the paused batch")  # fmt: skip
        assert _get(port, "/healthz")[0] == 200
        redis.restart()
        load_sample_refdata(redis.url)
        _wait(lambda: _get(port, "/readyz")[0] == 200, 30, "ready again")
        _wait(
            lambda: _value(_scrape(port), "cdr_events_rated_total", topic=topic) == len(events),
            30,
            "rated after the outage",
        )
        s = _scrape(port)
        assert _value(s, "cdr_consumption_paused") == 0
        _wait(lambda: _value(_scrape(port), "cdr_consumer_lag", topic=topic, partition="0") == 0,
              10, "caught up")  # fmt: skip
        stats = worker.stop()
    assert stats.rated == len(events)
    assert stats.dead_letters == 0


@pytest.mark.parametrize("fmt", ["kv", "json"])
def test_librdkafka_lines_go_through_the_service_logging(
    fmt: str, log_capture: Callable[[str], io.StringIO], capfd: pytest.CaptureFixture[str]
) -> None:
    """Issue 11 #3: a consumer and a producer pointed at a port where no broker listens
    (what a broker freeze looks like from the client): librdkafka's ``FAIL`` lines and
    its client errors come through the ``pipeline`` logging in the chosen format, at
    WARNING, redacted (the client id here holds a phone-number-like run), and nothing
    raw (``%3|...|FAIL|``) reaches stderr."""
    buf = log_capture(fmt)
    kafka = KafkaSettings(brokers=f"127.0.0.1:{free_port()}", client_id="cdr-2125550123")
    consumer = kafka_clients.consumer(kafka, unique("g"))
    consumer.subscribe(["nowhere"])
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        consumer.poll(0.1)
    consumer.close()
    producer = kafka_clients.producer(kafka)
    producer.produce("nowhere", b"x")
    producer.flush(1.0)
    text = buf.getvalue()
    lines = [line for line in text.splitlines() if line]
    if fmt == "json":
        docs = [json.loads(line) for line in lines]
        kafka_lines = [d for d in docs if d["logger"] == "pipeline.io.kafka_clients"]
        fails = [d for d in kafka_lines if d.get("facility") == "FAIL"]
        assert fails, text
        assert {d["level"] for d in fails} == {"WARNING"}
        assert all(d["msg"].startswith("librdkafka: ") for d in fails)
        clients = {re.sub(r"-[0-9]+$", "", d["client"]) for d in fails}
        assert clients == {"cdr-<number>#consumer", "cdr-<number>#producer"}, fails[:2]
        assert any(d.get("code") == "_ALL_BROKERS_DOWN" for d in kafka_lines), text
    else:
        kv = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+) ([\w.]+) (.*)$")
        parsed = [kv.match(line) for line in lines]
        assert all(parsed), [line for line, m in zip(lines, parsed, strict=True) if not m]
        fails = [m for m in parsed if m and " facility=FAIL " in m.group(3)]
        assert fails, text
        assert {m.group(1) for m in fails} == {"WARNING"}
        assert {m.group(2) for m in fails} == {"pipeline.io.kafka_clients"}
        assert any("client=cdr-<number>#producer-" in m.group(3) for m in fails), text
        assert "kafka client error: 1/1 brokers are down code=_ALL_BROKERS_DOWN" in text
    assert "2125550123" not in text
    err = capfd.readouterr().err
    assert "|FAIL|" not in err, "a raw librdkafka line reached stderr"


def test_redis_outage_is_logged_by_cause_and_is_not_idleness(
    kafka_broker: EmbeddedKafka, tmp_path: Path, log_capture: Callable[[str], io.StringIO]
) -> None:
    """Issue 11 #1 and #2 against a real broker and a real Redis, stopped for longer
    than ``stop_when_idle``: the service waits through the outage (it does not stop
    as idle), resumes, rates everything, and only then stops by itself. The log names
    Redis when the pause starts and when it ends, with how long it lasted, once each:
    no other dependency named, no old error repeated after the resume."""
    buf = log_capture("kv")
    brokers = kafka_broker.bootstrap
    topic = unique("outage-log")
    schema = load_call_event_schema()
    first = [
        event(call_id=f"a-{i}", account_id="ACC-1001", calling_number=f"+1212555{i:04d}")
        for i in range(200)
    ]
    second = [
        event(call_id=f"b-{i}", account_id="ACC-1002", calling_number=f"+1312555{i:04d}")
        for i in range(300)
    ]
    lake = tmp_path / "lake"
    outage_s = 9.0
    with embedded_redis() as redis:
        load_sample_refdata(redis.url)
        kafka_clients.ensure_topic(KafkaSettings(brokers=brokers), topic, 2)
        # small polls: most of the second batch is still waiting when Redis goes away
        settings = settings_for(
            brokers, redis.url, lake, topic, stop_when_idle=5.0, batch={"poll_max_messages": 40}
        )
        worker = ServiceThread(settings)
        worker.service.enricher._version_check_s = 0.1
        produce_raw(
            brokers, topic, [(str(e["call_id"]).encode(), encode(e, 1, schema)) for e in first]
        )
        worker.start()
        _wait(lambda: lake_rated(lake).num_rows == len(first), 60, "first events rated")
        redis.stop()
        stopped_at = time.monotonic()
        produce_raw(
            brokers, topic, [(str(e["call_id"]).encode(), encode(e, 1, schema)) for e in second]
        )
        time.sleep(outage_s)
        assert worker.is_alive(), "stopped as idle while paused on Redis"
        assert lake_rated(lake).num_rows == len(first)
        redis.restart()
        load_sample_refdata(redis.url)
        outage = time.monotonic() - stopped_at
        worker.join(60)
        assert not worker.is_alive(), "did not stop by itself once idle"
    assert worker.error is None
    assert worker.stats is not None
    assert worker.stats.dead_letters == 0
    assert worker.stats.consumed == len(first) + len(second), "stopped with messages waiting"
    assert lake_rated(lake).num_rows == len(first) + len(second)
    messages = [
        line.split(" ", 4)[2:] for line in buf.getvalue().splitlines() if line.count(" ") >= 4
    ]
    down = [m for m in messages if " unavailable, " in m[2]]
    back = [m for m in messages if " back after " in m[2]]
    assert len(down) == 1, down
    assert down[0][0] == "WARNING"
    assert down[0][2].startswith("redis unavailable, pausing consumption: ")
    assert len(back) == 1, back
    assert back[0][0] == "INFO"
    assert back[0][2].startswith("redis back after ")
    assert back[0][2].endswith(": resuming consumption")
    seconds = float(back[0][2].removeprefix("redis back after ").split(" ")[0])
    assert outage_s - 1 <= seconds <= outage + 5
    assert not any("schema registry" in m[2] for m in messages)
    idle = [m for m in messages if m[2].startswith("idle for ")]
    assert len(idle) == 1, idle
