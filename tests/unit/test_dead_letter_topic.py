"""Dead letters on the topic: encoding, caps and delivery (issue 10 #2, spec R1: every
bad event ends as exactly one dead letter, and a dead letter is always deliverable)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from confluent_kafka import KafkaError, KafkaException
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import BrokerError, InfrastructureError, SinkError
from pipeline.io import dead_letter_codec as codec
from pipeline.io import dead_letter_topic as dlt
from pipeline.rating.columns import DEAD_LETTER_SCHEMA
from pipeline.settings import DeadLetterSettings

MiB = 1024 * 1024


def row(payload: bytes | None = b"\x00\x00\x00\x00\x01abc", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "reason": "DECODE_ERROR",
        "detail": "the datum does not decode",
        "call_id": "call-1",
        "revision": None,
        "source_topic": "call-events",
        "source_partition": 3,
        "source_offset": 123_456,
        "source_file": None,
        "source_index": None,
        "payload": payload,
    }
    return {**base, **fields}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fits(message: codec.DeadLetterMessage, cap: int) -> bool:
    return message.size + codec.RECORD_OVERHEAD <= cap


# ----------------------------------------------------------------- encode / decode
def test_round_trip_small_payload() -> None:
    """R1: a small dead letter carries every column and its whole payload."""
    original = row()
    message = codec.encode(original)
    assert not message.truncated
    assert message.ref is None
    assert message.key == b"call-events:3:123456"
    assert message.reason == b"DECODE_ERROR"
    back = codec.decode(message.value)
    assert {k: back[k] for k in DEAD_LETTER_SCHEMA.names} == original
    assert back["payload_size"] == len(original["payload"])
    assert back["payload_sha256"] == sha(original["payload"])
    assert back["payload_truncated"] is False
    assert back["payload_prefix"] is None
    doc = json.loads(message.value)
    assert doc["payload_ref"] is None


def test_none_payload() -> None:
    """A message without value (tombstone) is a dead letter without payload, size or hash."""
    back = codec.decode(codec.encode(row(None)).value)
    assert back["payload"] is None
    assert back["payload_size"] is None
    assert back["payload_sha256"] is None
    assert back["payload_truncated"] is False


def test_empty_payload() -> None:
    """An empty value stays an empty payload (not null), size 0, hash of nothing."""
    back = codec.decode(codec.encode(row(b"")).value)
    assert back["payload"] == b""
    assert back["payload_size"] == 0
    assert back["payload_sha256"] == sha(b"")


@pytest.mark.parametrize(
    "cap", [codec.MIN_MAX_MESSAGE_BYTES, codec.DEFAULT_MAX_MESSAGE_BYTES, 999_000]
)
@pytest.mark.parametrize("size", [999_000, MiB, MiB + 1, 20 * MiB])
def test_oversized_payload_is_capped_with_size_and_hash(cap: int, size: int) -> None:
    """Issue 10 #2: a payload around 1 MiB (or far over) gives a letter within the cap,
    carrying a prefix, the full size and the SHA-256; decode never returns the prefix
    as the payload."""
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    message = codec.encode(row(payload), cap)
    assert fits(message, cap)
    assert message.truncated
    assert message.ref == "dead_letter_payloads/call-events+3+123456.bin"
    back = codec.decode(message.value)
    assert back["payload"] is None
    assert back["payload_truncated"] is True
    assert back["payload_size"] == size
    assert back["payload_sha256"] == sha(payload)
    prefix = back["payload_prefix"]
    assert prefix
    assert payload.startswith(prefix)
    assert len(prefix) > (cap - 4096) * 3 // 4 - 600  # the room is used, not wasted
    assert json.loads(message.value)["payload_ref"] == message.ref


@pytest.mark.parametrize("cap", [codec.MIN_MAX_MESSAGE_BYTES, codec.DEFAULT_MAX_MESSAGE_BYTES])
def test_payload_just_under_and_just_over_the_cap(cap: int) -> None:
    """The largest payload that fits goes whole; one byte more is truncated; both fit."""
    lo, hi = 0, cap
    while lo < hi:  # largest size carried whole
        mid = (lo + hi + 1) // 2
        if codec.encode(row(b"\xff" * mid), cap).truncated:
            hi = mid - 1
        else:
            lo = mid
    under, over = codec.encode(row(b"\xff" * lo), cap), codec.encode(row(b"\xff" * (lo + 1)), cap)
    assert not under.truncated
    assert over.truncated
    assert fits(under, cap)
    assert fits(over, cap)
    assert cap - codec.RECORD_OVERHEAD - under.size < 8  # base64 groups of 4: at most 7 left
    assert codec.decode(under.value)["payload"] == b"\xff" * lo
    # base64 and JSON overhead: the whole payload is about 3/4 of the cap
    assert (cap - 2000) * 3 // 4 < lo < cap * 3 // 4


@pytest.mark.parametrize(
    "text",
    [
        "😀" * 300_000,  # astral plane: 12 bytes each once JSON-escaped
        "\ud800 lone surrogate \udfff" * 1000,
        "\u202e right-to-left \u0000 nul \u200b zero width e\u0301" * 5000,
        "é" * MiB,
    ],
)
def test_odd_unicode_and_huge_text_fields_are_clipped(text: str) -> None:
    """``detail``, ``call_id`` and ``source_file`` of any size or script fit the cap."""
    cap = codec.MIN_MAX_MESSAGE_BYTES
    message = codec.encode(row(b"p" * 5000, detail=text, call_id=text), cap)
    assert fits(message, cap)
    back = codec.decode(message.value)
    assert back["detail"].startswith(text[:200])
    assert back["detail"].endswith("characters, truncated]")
    assert back["call_id"].startswith(text[:64])
    assert f"{len(text):,} characters" in back["call_id"]


def _reference_value(r: dict[str, Any]) -> bytes:
    """The value of a letter with its whole payload, as ``json.dumps`` writes it (the
    encoding before the writer's fast path, issue 11)."""
    payload = r["payload"]
    doc = {name: r.get(name) for name in DEAD_LETTER_SCHEMA.names}
    doc["payload"] = None if payload is None else base64.b64encode(payload).decode()
    doc["payload_size"] = None if payload is None else len(payload)
    doc["payload_sha256"] = None if payload is None else sha(payload)
    doc["payload_truncated"], doc["payload_ref"] = False, None
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode("ascii")


_TEXT = st.one_of(st.none(), st.text(max_size=40), st.just('\ud800 \u202e "quoted" \\ \n'))


@given(
    payload=st.one_of(st.none(), st.binary(max_size=300)),
    detail=st.text(max_size=300),
    call_id=_TEXT,
    revision=st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
    topic=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9._-]{1,30}", fullmatch=True)),
    source_file=st.one_of(st.none(), st.text(st.characters(exclude_categories=["Cs"]))),
    index=st.one_of(st.none(), st.integers(0, 2**62)),
)
@settings(max_examples=300, deadline=None)
def test_fast_letter_is_byte_for_byte_json_dumps(
    payload: bytes | None,
    detail: str,
    call_id: str | None,
    revision: int | None,
    topic: str | None,
    source_file: str | None,
    index: int | None,
) -> None:
    """The writer's fast path writes exactly what ``json.dumps(sort_keys=True)`` did."""
    assert codec._TEMPLATE_FITS  # the fast path is the one tested here
    r = row(
        payload, detail=detail, call_id=call_id, revision=revision, source_topic=topic,
        source_file=source_file, source_index=index,
    )  # fmt: skip
    message = codec.encode(r)
    assert not message.truncated
    assert message.value == _reference_value(r)


def test_short_unicode_detail_round_trips() -> None:
    detail = "bad 😀 \u202e \ud800 é"
    assert codec.decode(codec.encode(row(detail=detail)).value)["detail"] == detail


def test_without_prefix_keeps_size_and_hash() -> None:
    """The shrink step after a broker refusal: no prefix, size and hash kept."""
    payload = b"q" * 500
    message = codec.encode(row(payload), keep_prefix=False)
    assert message.truncated
    back = codec.decode(message.value)
    assert back["payload"] is None
    assert back["payload_prefix"] is None
    assert (back["payload_size"], back["payload_sha256"]) == (500, sha(payload))


def test_payload_ref_cannot_escape_the_lake() -> None:
    """The name is derived from the event identity; a hostile topic name is hashed."""
    assert codec.payload_ref(row()) == "dead_letter_payloads/call-events+3+123456.bin"
    ref = codec.payload_ref(row(source_topic="../../etc/passwd"))
    assert ref.startswith("dead_letter_payloads/")
    assert ".." not in ref
    assert ref.count("/") == 1
    ref = codec.payload_ref(row(source_topic=None, source_file="/x/../y.avro", source_index=4))
    assert ref.startswith("dead_letter_payloads/file+")
    assert ".." not in ref


def test_decode_refuses_what_is_not_a_dead_letter() -> None:
    with pytest.raises(ValueError, match="not a dead-letter"):
        codec.decode(b'{"x": 1}')
    doc = json.loads(codec.encode(row()).value)
    doc["payload"] = base64.b64encode(b"other").decode()
    with pytest.raises(ValueError, match="sha256"):
        codec.decode(json.dumps(doc).encode())


def test_letters_of_the_old_format_still_decode() -> None:
    """Letters written before size and hash existed: computed on reading."""
    old = {**row(), "payload": base64.b64encode(b"abc").decode()}
    back = codec.decode(json.dumps(old).encode())
    assert back["payload"] == b"abc"
    assert (back["payload_size"], back["payload_sha256"]) == (3, sha(b"abc"))


def test_default_cap_matches_the_setting() -> None:
    assert DeadLetterSettings().max_message_bytes == codec.DEFAULT_MAX_MESSAGE_BYTES
    assert (
        codec.DEFAULT_MAX_MESSAGE_BYTES + codec.RECORD_OVERHEAD < dlt.LIBRDKAFKA_MESSAGE_MAX_BYTES
    )
    assert dlt.producer_config(262_144) == {
        "message.max.bytes": 1_000_000,
        "delivery.report.only.error": True,  # failures are all the producer acts on
    }
    assert dlt.producer_config(8 * MiB)["message.max.bytes"] > 8 * MiB


# ----------------------------------------------------------------- resolve_payloads
def test_resolve_payloads_from_the_lake(tmp_path: Path) -> None:
    """Export/replay: the whole payload comes back from the lake, checked by size and
    hash; otherwise the payload stays null with a note, never the prefix."""
    payload = b"z" * (2 * MiB)
    ref = codec.payload_ref(row())
    (tmp_path / ref).parent.mkdir(parents=True)
    (tmp_path / ref).write_bytes(payload)
    found = codec.decode(codec.encode(row(payload)).value)
    assert dlt.resolve_payloads([found], tmp_path) == 0
    assert found["payload"] == payload

    absent = codec.decode(codec.encode(row(payload)).value)
    assert dlt.resolve_payloads([absent], None) == 1
    assert absent["payload"] is None
    assert "no lake given" in absent["detail"]

    (tmp_path / ref).write_bytes(payload[:-1] + b"y")
    differs = codec.decode(codec.encode(row(payload)).value)
    assert dlt.resolve_payloads([differs], tmp_path) == 1
    assert differs["payload"] is None
    assert "differs" in differs["detail"]
    assert sha(payload) in differs["detail"]
    table = codec.to_table([found, differs])
    assert table.schema == DEAD_LETTER_SCHEMA
    assert table.column("payload").to_pylist() == [payload, None]


# ----------------------------------------------------------------- the producer
class FakeMessage:
    """What a delivery report hands over: the message (its key identifies the letter)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def key(self) -> bytes:
        return self._key


class FakeProducer:
    """In-memory stand-in for ``confluent_kafka.Producer``: refuses values over
    ``client_limit`` in ``produce`` (like librdkafka's message.max.bytes) and over
    ``broker_limit`` in the delivery report (like a broker's max.message.bytes)."""

    def __init__(
        self,
        *,
        client_limit: int = 1_000_000,
        broker_limit: int = 1_000_000,
        fail: KafkaError | None = None,
        on_produce: Callable[[bytes, bytes], None] | None = None,
    ) -> None:
        self.client_limit, self.broker_limit, self.fail = client_limit, broker_limit, fail
        self.on_produce = on_produce
        self.pending: list[tuple[bytes, bytes, Any]] = []
        self.delivered: list[tuple[bytes, bytes]] = []

    def produce(
        self, topic: str, *, key: bytes, value: bytes, headers: Any, on_delivery: Any
    ) -> None:
        if len(key) + len(value) > self.client_limit:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        if self.on_produce is not None:
            self.on_produce(key, value)
        self.pending.append((key, value, on_delivery))

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float) -> int:
        for key, value, callback in self.pending:
            message = FakeMessage(key)
            if self.fail is not None:
                callback(self.fail, message)
            elif len(key) + len(value) > self.broker_limit:
                callback(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), message)
            else:
                self.delivered.append((key, value))
                callback(None, message)
        self.pending.clear()
        return 0


def _table(*rows: dict[str, Any]) -> pa.Table:
    return codec.to_table(list(rows))


def _producer(
    fake: FakeProducer, lake: Path, cap: int = codec.DEFAULT_MAX_MESSAGE_BYTES
) -> dlt.DeadLetterProducer:
    return dlt.DeadLetterProducer(fake, "dlq", lake=lake, max_message_bytes=cap)  # type: ignore[arg-type]


def test_send_keeps_the_whole_payload_in_the_lake_before_producing(tmp_path: Path) -> None:
    """Issue 10 #2: the whole payload is durable in the lake before its capped letter
    is produced (so the offset only advances once it is)."""
    big = b"\x07" + bytes(range(256)) * 4096  # ~1 MiB of junk
    path = tmp_path / codec.payload_ref(row(big, source_offset=7))
    seen: list[bool] = []
    fake = FakeProducer(
        on_produce=lambda key, _v: seen.append(path.is_file()) if key.endswith(b":7") else None
    )
    sent = _producer(fake, tmp_path).send(_table(row(big, source_offset=7), row(source_offset=8)))
    assert sent == 2
    assert seen == [True]
    assert path.read_bytes() == big
    assert not (tmp_path / codec.payload_ref(row(source_offset=8))).exists()  # small: not kept
    letters = [codec.decode(v) for _, v in fake.delivered]
    assert [d["payload_truncated"] for d in letters] == [True, False]
    assert letters[0]["payload_sha256"] == sha(big)
    assert all(
        len(k) + len(v) + codec.RECORD_OVERHEAD <= codec.DEFAULT_MAX_MESSAGE_BYTES
        for k, v in fake.delivered
    )


def test_broker_limit_below_the_cap_drops_the_prefix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker that refuses our capped letter as too large gets it again without
    prefix (size and hash kept, whole payload in the lake); the decision is logged,
    without phone numbers."""
    payload = b"+12125550100 " * 10_000  # 130 kB carried whole under the default cap
    fake = FakeProducer(broker_limit=20_000)
    with caplog.at_level(logging.WARNING, logger="pipeline.io.dead_letter_topic"):
        assert _producer(fake, tmp_path).send(_table(row(payload))) == 1
    ((_key, value),) = fake.delivered
    back = codec.decode(value)
    assert back["payload_truncated"]
    assert back["payload_prefix"] is None
    assert back["payload_sha256"] == sha(payload)
    assert (tmp_path / codec.payload_ref(back)).read_bytes() == payload
    assert "refused 1 dead letter(s) as too large" in caplog.text
    assert "5550100" not in caplog.text


def test_client_side_refusal_drops_the_prefix(tmp_path: Path) -> None:
    """librdkafka refusing in ``produce`` (its message.max.bytes below our cap) is
    handled the same way: the letter goes without prefix, never an exception."""
    fake = FakeProducer(client_limit=20_000)
    assert _producer(fake, tmp_path).send(_table(row(b"a" * 100_000))) == 1
    assert codec.decode(fake.delivered[0][1])["payload_prefix"] is None


def test_refused_even_without_payload_is_an_outage_not_a_loop(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="even without payload"):
        _producer(FakeProducer(broker_limit=100), tmp_path).send(_table(row()))


@pytest.mark.parametrize(
    "fail", [KafkaError(KafkaError._MSG_TIMED_OUT), KafkaError(KafkaError.NOT_ENOUGH_REPLICAS)]
)
def test_delivery_failure_is_a_broker_error(tmp_path: Path, fail: KafkaError) -> None:
    """A letter not acknowledged is an outage (InfrastructureError: the service pauses
    and retries), never a crash."""
    with pytest.raises(InfrastructureError):
        _producer(FakeProducer(fail=fail), tmp_path).send(_table(row()))


def test_produce_exception_is_a_broker_error(tmp_path: Path) -> None:
    class Refusing(FakeProducer):
        def produce(self, *_a: Any, **_k: Any) -> None:
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC))

    with pytest.raises(BrokerError):
        _producer(Refusing(), tmp_path).send(_table(row()))


def test_lake_unwritable_is_a_sink_error(tmp_path: Path) -> None:
    (tmp_path / "dead_letter_payloads").write_text("a file where the folder should be")
    fake = FakeProducer()
    with pytest.raises(SinkError):
        _producer(fake, tmp_path).send(_table(row(b"j" * MiB)))
    assert fake.pending == []
    assert fake.delivered == []


def test_cap_setting_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cap too small to hold a dead letter is refused at start-up, naming the field."""
    from pipeline.errors import ConfigError
    from pipeline.settings import load_settings

    monkeypatch.setenv("CDR_DEAD_LETTER__MAX_MESSAGE_BYTES", "100000")
    assert load_settings().dead_letter.max_message_bytes == 100_000
    with pytest.raises(ConfigError, match=r"dead_letter\.max_message_bytes"):
        load_settings(dead_letter={"max_message_bytes": 1000})
