"""The one exception tree of cdr-pipeline.

::

    PipelineError
    ├── ConfigError                 refuse to start: bad settings, tariff or reference file
    │   ├── TariffError
    │   └── ReferenceDataError
    ├── DataError                   one event is bad -> it becomes a dead letter, never raised
    │                               out of a batch (see ``pipeline.rating.codes.Reason``)
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


class InfrastructureError(PipelineError):
    """A dependency is unavailable. Callers pause and retry; data is never dead-lettered."""


class BrokerError(InfrastructureError):
    """Kafka is unreachable or refused an operation."""


class ReferenceStoreError(InfrastructureError):
    """Redis is unreachable or refused an operation."""


class SinkError(InfrastructureError):
    """The lake could not be written."""
