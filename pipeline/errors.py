"""The one exception tree of cdr-pipeline.

::

    PipelineError
    ├── ConfigError                 refuse to start: bad settings, tariff or reference file
    │   ├── TariffError
    │   └── ReferenceDataError
    ├── DataError                   one event is bad -> it becomes a dead letter, never raised
    │                               out of a batch (see ``pipeline.rating.codes.Reason``)
    ├── FencedError                 a partition's lake commit was refused: another member
    │                               owns it now -> drop that buffer, never retry
    └── InfrastructureError         a dependency is down -> pause, retry; never dead-letter
        ├── BrokerError             Kafka
        ├── ReferenceStoreError     Redis
        └── SinkError               the lake (filesystem / object store)

Third-party exceptions are translated at the adapter edge with ``raise ... from exc``.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(PipelineError):
    """Configuration, tariff or reference data is invalid; the message names the problem."""


class TariffError(ConfigError):
    """A tariff file is invalid (the message names file and field)."""


class ReferenceDataError(ConfigError):
    """A reference-data file is invalid (the message names file, line and reason)."""


class DataError(PipelineError):
    """A single event is invalid. Carries a stable reason code for its dead letter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class FencedError(PipelineError):
    """The lake refused a partition's commit because the offset it holds for that
    topic-partition is not the one this member expected: another member committed
    since (the partition was reassigned while this one was paused). Not an outage:
    retrying would duplicate or overwrite the new owner's work. Drop the buffer."""


class InfrastructureError(PipelineError):
    """A dependency is unavailable. Callers pause and retry; data is never dead-lettered."""


class BrokerError(InfrastructureError):
    """Kafka is unreachable or refused an operation."""


class ReferenceStoreError(InfrastructureError):
    """Redis is unreachable or refused an operation."""


class SinkError(InfrastructureError):
    """The lake could not be written."""
