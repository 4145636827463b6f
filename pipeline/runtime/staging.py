"""Staging: a polled batch decoded on one thread and enriched on another, while the
main thread rates the batch before it.

:meth:`Staging.stage` (main thread) reads the messages' fields and hands the batch to
the decode thread, which decodes it columnar (:func:`~pipeline.io.wire.decode_batch`),
parses its numbers once and hands its distinct origin numbers to the lookup thread
(LNP through the enrichment cache and Redis). :meth:`Staging.prepared` (main thread,
one poll later) waits for both. So the Redis round trip and the GIL-free parts of
decoding overlap rating.

Failures: the schema registry (decode) or Redis (lookup) being down raise
:class:`~pipeline.errors.InfrastructureError` from :meth:`Staging.prepared`; the
caller pauses and calls it again, which retries the step that failed. A step that had
already failed *before* it was asked for (a batch staged during an outage that has
ended since) is tried afresh once before its error counts, so the end of an outage
does not report that outage's old error again.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar, overload

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from confluent_kafka import Message

from pipeline.errors import InfrastructureError
from pipeline.io.wire import KafkaSources, SchemaResolver, decode_batch
from pipeline.rating.numbers import EventNumbers, parse_event_numbers
from pipeline.rating.reference import ReferenceData
from pipeline.runtime.enrich import origin_tns
from pipeline.runtime.stats import StageClock

T = TypeVar("T")
I64 = npt.NDArray[np.int64]

_SECOND = operator.itemgetter(1)  # of a message's (timestamp type, timestamp)


@dataclass(frozen=True)
class Decoded:
    """A decoded batch: events, decode dead letters, parsed numbers, LNP numbers to ask."""

    events: pa.Table
    dead: pa.Table
    numbers: EventNumbers
    tns: I64


class MessageKeys(Sequence[bytes | str | None]):
    """The keys of a poll's messages, read only where needed (the call id of a
    message that does not decode, for its dead letter)."""

    def __init__(self, messages: list[Message]) -> None:
        self._messages = messages

    def __len__(self) -> int:
        return len(self._messages)

    @overload
    def __getitem__(self, index: int) -> bytes | str | None: ...
    @overload
    def __getitem__(self, index: slice) -> list[bytes | str | None]: ...
    def __getitem__(self, index: int | slice) -> bytes | str | list[bytes | str | None] | None:
        if isinstance(index, slice):
            return [m.key() for m in self._messages[index]]
        return self._messages[index].key()


@dataclass
class StagedBatch:
    """One poll's messages from :meth:`Staging.stage` to their rating (parallel
    arrays, in poll order)."""

    started: float
    values: list[bytes | None]
    keys: Sequence[bytes | str | None]
    partitions: npt.NDArray[np.int32]
    offsets: I64
    stamps: I64
    generation: int  # the assignment the messages were polled under
    decoded: Future[Decoded] | None = None  # on the decode thread
    reference: Future[ReferenceData] | None = None  # on the lookup thread
    main_seconds: float = 0.0

    @property
    def size(self) -> int:
        return len(self.values)


class Staging:
    """The decode and lookup threads of one service. ``lookup`` gives the reference
    data holding the LNP entries of some numbers (``Enricher.for_numbers``)."""

    def __init__(
        self,
        topic: str,
        resolver: SchemaResolver,
        lookup: Callable[[I64], ReferenceData],
        stages: StageClock,
    ) -> None:
        self._topic = topic
        self._resolver = resolver
        self._lookup_fn = lookup
        self._stages = stages
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
        self._lookup = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lookup")

    def stage(self, messages: list[Message], generation: int) -> StagedBatch:
        """Main thread: the messages' fields, and their decoding handed to the decode
        thread."""
        started = time.perf_counter()
        n = len(messages)
        batch = StagedBatch(
            started=started,
            values=list(map(Message.value, messages)),
            keys=MessageKeys(messages),
            partitions=np.fromiter(map(Message.partition, messages), np.int32, n),
            offsets=np.fromiter(map(Message.offset, messages), np.int64, n),
            stamps=np.fromiter(map(_SECOND, map(Message.timestamp, messages)), np.int64, n),
            generation=generation,
        )
        batch.decoded = self._decoder.submit(self._decode, batch)
        batch.main_seconds = time.perf_counter() - started
        self._stages.add("main:stage", batch.main_seconds)
        return batch

    def prepared(self, batch: StagedBatch) -> tuple[Decoded, ReferenceData]:
        """Main thread: wait for the batch's decoding and reference data. Raises
        :class:`InfrastructureError` when a step failed (the next call retries it)."""
        with self._stages.timing("main:wait_prepared"):

            def decode() -> Future[Decoded]:
                batch.decoded = self._decoder.submit(self._decode, batch)
                return batch.decoded

            decoded = _outcome(batch.decoded, decode)
            tns = decoded.tns

            def enrich() -> Future[ReferenceData]:
                batch.reference = self._lookup.submit(self._enrich, tns)
                return batch.reference

            return decoded, _outcome(batch.reference, enrich)

    def close(self) -> None:
        """Stop both threads (a batch still staged is dropped)."""
        self._decoder.shutdown(wait=True, cancel_futures=True)
        self._lookup.shutdown(wait=True, cancel_futures=True)

    def _decode(self, batch: StagedBatch) -> Decoded:
        """Decode thread: decode, parse numbers, hand the LNP lookup to the lookup
        thread (so the next batch decodes while Redis answers). Raises
        :class:`InfrastructureError` when the schema registry is down."""
        with self._stages.timing("decode:decode_batch"):
            sources = KafkaSources(self._topic, batch.partitions, batch.offsets)
            events, dead = decode_batch(batch.values, sources, self._resolver, keys=batch.keys)
        with self._stages.timing("decode:numbers"):
            numbers = parse_event_numbers(events)
            tns = origin_tns(events, numbers)
        batch.reference = self._lookup.submit(self._enrich, tns)
        return Decoded(events, dead, numbers, tns)

    def _enrich(self, tns: I64) -> ReferenceData:
        with self._stages.timing("lookup:for_numbers"):
            return self._lookup_fn(tns)


def _outcome(current: Future[T] | None, submit: Callable[[], Future[T]]) -> T:
    """The result of a staged step. With no attempt yet, or one that has already failed
    with an infrastructure error (the caller is retrying), a new attempt. An attempt
    made before this call that fails now may have failed in an outage that has ended
    since: it is tried afresh once before its error is raised."""
    if current is None or (current.done() and isinstance(current.exception(), InfrastructureError)):
        return submit().result()
    try:
        return current.result()
    except InfrastructureError:
        return submit().result()
