"""Wire-format decode throughput: columnar (polars block) vs fastavro per message.

Run: ``.venv/bin/python -m benchmarks.bench_decode [--messages N] [--batch B]``.

Encodes N realistic ``CallEvent`` messages (Confluent wire format, shipped schema
id 1), then decodes them in batches of B with :func:`pipeline.io.wire.decode_batch`
both ways and prints records/s and the ratio. Both paths produce the same Arrow
tables (checked). Then the columnar path again with ``--malformed-share`` (default
50 %) of the messages malformed (:func:`mix_malformed`, issue 11), and the ratio of
the two messages/s. :func:`realistic_events` is also used by the wire tests.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from pipeline.avro.varint import read_long
from pipeline.io.registry import CALL_EVENT_SCHEMA_ID, ShippedSchemas
from pipeline.io.wire import HEADER_SIZE, KafkaSources, decode_batch, encode_table, zigzag_varint
from pipeline.rating.columns import CALL_EVENT_FIELDS

_NPAS = np.array([907, 212, 415, 808, 787, 340, 671, 312, 713, 305, 617, 206, 604, 416, 876])
_TOLL_FREE = np.array([800, 833, 844, 855, 866, 877, 888])
_INTERNATIONAL = np.array(["+44", "+52", "+49", "+63", "+91", "+33"])
_DISPOSITIONS = np.array(["ANSWERED", "BUSY", "NO_ANSWER", "FAILED", "CANCELLED"])
_SIP = {"ANSWERED": 200, "BUSY": 486, "NO_ANSWER": 480, "FAILED": 503, "CANCELLED": 487}


def _nanp(rng: np.random.Generator, npas: np.ndarray, n: int) -> np.ndarray:
    npa = rng.choice(npas, n)
    rest = rng.integers(2_000_000, 9_999_999, n)
    return np.char.add("+1", np.char.add(npa.astype(str), rest.astype(str)))


def realistic_events(n: int, seed: int = 1) -> pa.Table:
    """``n`` plausible call legs (the call-event columns of EVENT_SCHEMA), vectorized."""
    rng = np.random.default_rng(seed)
    direction = np.where(rng.random(n) < 0.7, "INBOUND", "OUTBOUND")
    forwarded = (direction == "OUTBOUND") & (rng.random(n) < 0.15)
    disposition = rng.choice(_DISPOSITIONS, n, p=[0.82, 0.06, 0.06, 0.03, 0.03])
    answered = disposition == "ANSWERED"
    duration = np.where(answered, rng.exponential(180_000, n).astype(np.int64), 0)
    called_tf = _nanp(rng, _TOLL_FREE, n)
    called_other = _nanp(rng, _NPAS, n)
    intl = np.char.add(rng.choice(_INTERNATIONAL, n), rng.integers(10**8, 10**10, n).astype(str))
    outbound_called = np.where(rng.random(n) < 0.1, intl, called_other)
    called = np.where(
        direction == "INBOUND",
        np.where(rng.random(n) < 0.6, called_tf, called_other),
        outbound_called,
    )
    calling = _nanp(rng, _NPAS, n)
    calling_missing = rng.random(n) < 0.02
    start = datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1_000_000
    start_us = (start + rng.integers(0, 30 * 86_400 * 1_000_000, n)).astype(np.int64)
    ani = rng.choice(np.array(["00", "27", "70", "29", "07"]), n)
    switch = rng.integers(1, 9, n)
    seq = np.arange(n) + seed * 10_000_000
    columns = {
        "call_id": np.char.add(
            np.char.add("SW", switch.astype(str)), np.char.add("-", seq.astype(str))
        ),
        "revision": np.where(rng.random(n) < 0.02, 1, 0).astype(np.int32),
        "account_id": np.char.add("ACC-", rng.integers(1, 5_000, n).astype(str)),
        "trunk_id": np.char.add("TRK-", rng.integers(1, 800, n).astype(str)),
        "direction": direction,
        "leg": np.where(forwarded, "FORWARDED", "ORIGINAL"),
        "calling_number": pa.array(calling, mask=calling_missing),
        "called_number": called,
        "original_calling_number": pa.array(_nanp(rng, _NPAS, n), mask=~forwarded),
        "start_time": pa.array(start_us, pa.timestamp("us", "UTC")),
        "duration_ms": duration,
        "disposition": disposition,
        "ani_ii": pa.array(ani, mask=rng.random(n) < 0.9),
        "sip_response_code": np.vectorize(_SIP.__getitem__, otypes=[np.int32])(disposition),
        "switch_id": np.char.add("SW-0", switch.astype(str)),
    }
    schema = pa.schema(list(CALL_EVENT_FIELDS))
    return pa.Table.from_arrays([pa.array(columns[f.name], f.type) for f in schema], schema=schema)


#: The kinds of malformed messages of :func:`malformed` (issue 11), in rotation.
MALFORMED_KINDS = (
    "random bytes",  # a valid wire header, then random bytes
    "truncated datum",
    "bad enum symbol",  # direction index 7: no such symbol in Direction
    "invalid UTF-8",  # the first byte of call_id 0xFF
    "empty value",
    "null value",
)


def _direction_offset(value: bytes) -> int:
    """Where the ``direction`` enum index of a shipped-schema message value is."""
    pos = HEADER_SIZE
    for field in ("call_id", "revision", "account_id", "trunk_id"):
        n, pos = read_long(value, pos)
        if field != "revision":
            pos += n
    return pos


def malformed(value: bytes, kind: str, rnd: random.Random) -> bytes | None:
    """``value`` (a good message of the shipped schema) made bad in the way ``kind``
    says (one of :data:`MALFORMED_KINDS`)."""
    if kind == "random bytes":
        return value[:HEADER_SIZE] + rnd.randbytes(len(value) - HEADER_SIZE)
    if kind == "truncated datum":
        return value[: rnd.randrange(HEADER_SIZE, len(value))]
    if kind == "bad enum symbol":
        at = _direction_offset(value)
        return value[:at] + zigzag_varint(7) + value[at + 1 :]
    if kind == "invalid UTF-8":
        broken = bytearray(value)
        broken[HEADER_SIZE + 1] = 0xFF
        return bytes(broken)
    if kind == "empty value":
        return b""
    if kind == "null value":
        return None
    raise ValueError(f"unknown kind of malformed message {kind!r}")


def mix_malformed(
    values: Sequence[bytes], share: float, seed: int = 1
) -> tuple[list[bytes | None], int]:
    """``values`` with ``share`` of them, spread evenly, made malformed (the kinds of
    :data:`MALFORMED_KINDS` in rotation): the new values and how many were spoilt."""
    rnd = random.Random(seed)
    out: list[bytes | None] = list(values)
    picked = np.flatnonzero(np.diff(np.floor(np.arange(len(values) + 1) * share)) > 0)
    for k, i in enumerate(picked.tolist()):
        out[i] = malformed(values[i], MALFORMED_KINDS[k % len(MALFORMED_KINDS)], rnd)
    return out, len(picked)


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>12,.0f} records/s  ({seconds:.3f} s)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument(
        "--malformed-share", type=float, default=0.5, help="share of malformed messages"
    )
    args = parser.parse_args(argv)
    n, batch = args.messages, args.batch

    events = realistic_events(n)
    t0 = time.perf_counter()
    values_clean = encode_table(events, CALL_EVENT_SCHEMA_ID)
    values: list[bytes | None] = list(values_clean)
    encode_s = time.perf_counter() - t0
    size = sum(len(v) for v in values if v is not None) / n
    print(f"{n:,} messages, {size:.1f} bytes each on average, batches of {batch:,}")
    print(f"encode_table (Arrow, column-wise)     {_rate(n, encode_s)}")

    resolver = ShippedSchemas()
    results = {}
    for name, columnar in (("columnar (polars block)", True), ("fastavro per message", False)):
        decode_batch(
            values[:1000], KafkaSources("cdr", [0] * 1000, np.arange(1000)), resolver
        )  # warm-up
        tables = []
        t0 = time.perf_counter()
        for lo in range(0, n, batch):
            chunk = values[lo : lo + batch]
            sources = KafkaSources("cdr", [0] * len(chunk), np.arange(lo, lo + len(chunk)))
            good, dead = decode_batch(chunk, sources, resolver, columnar=columnar)
            assert dead.num_rows == 0
            tables.append(good)
        seconds = time.perf_counter() - t0
        results[name] = seconds
        print(f"decode_batch {name:<24} {_rate(n, seconds)}")
        decoded = pa.concat_tables(tables)
        assert decoded.num_rows == n
        assert decoded.select(events.column_names).equals(events)
    fast, slow = results.values()
    print(f"columnar / per-message speed-up: {slow / fast:.1f}x")

    mixed, spoilt = mix_malformed(values_clean, args.malformed_share)
    seconds = _decode_all(mixed, batch, resolver, expect_dead=spoilt)
    name = f"{args.malformed_share:.0%} malformed"
    print(f"decode_batch {name:<24} {_rate(n, seconds)}")
    print(f"malformed / clean (columnar, msg/s): {fast / seconds:.2f}")


def _decode_all(
    values: Sequence[bytes | None], batch: int, resolver: ShippedSchemas, expect_dead: int
) -> float:
    """Seconds :func:`decode_batch` (columnar) takes over ``values`` in batches."""
    dead_letters = 0
    t0 = time.perf_counter()
    for lo in range(0, len(values), batch):
        chunk = values[lo : lo + batch]
        sources = KafkaSources("cdr", [0] * len(chunk), np.arange(lo, lo + len(chunk)))
        _, dead = decode_batch(chunk, sources, resolver)
        dead_letters += dead.num_rows
    seconds = time.perf_counter() - t0
    assert dead_letters == expect_dead, (dead_letters, expect_dead)
    return seconds


if __name__ == "__main__":
    main()
