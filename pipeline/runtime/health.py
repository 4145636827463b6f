"""The service's HTTP endpoints: ``/metrics``, ``/healthz`` and ``/readyz`` on one port.

* ``/metrics``: the service's own Prometheus registry (:mod:`pipeline.metrics`).
* ``/healthz`` (liveness): 200 while the service loop has ticked within
  ``liveness_s`` seconds (default 30). The loop ticks on every poll (at least every
  0.2 s) and on every retry while paused on a failed dependency, so a Redis or
  Kafka outage is *not* a liveness failure (restarting would not help); a loop stuck
  in one call is.
* ``/readyz`` (readiness): 200 when the consumer has received an assignment from the
  group coordinator (possibly empty: a standby member of a group with more members
  than partitions is healthy) **and** Redis answered a ``PING`` within the last
  ``redis_check_s`` seconds **and** consumption is not paused on a failed dependency
  (Redis during enrichment, the schema registry, the lake or Kafka during a flush).
  Otherwise 503 with the reasons, one per line.

The ``PING`` is sent from the HTTP thread at most once per ``redis_check_s``
(default 5 s) whatever the probe rate, with its own short timeout, through a
dedicated client (not the enrichment client's connection pool). Bodies are plain
text and never contain a URL, a password or a phone number.

The server is a stdlib :class:`~http.server.ThreadingHTTPServer` on a daemon thread;
:meth:`ObservabilityServer.stop` closes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from pipeline.errors import ConfigError, ReferenceStoreError
from pipeline.metrics import ServiceMetrics
from pipeline.settings import RedisSettings

LOG = logging.getLogger(__name__)

#: All interfaces, so that the kubelet and Prometheus reach the pod.
DEFAULT_HOST = "0.0.0.0"  # noqa: S104


class ServiceState(Protocol):
    """What the probes read from the service (attributes of ``StreamingService``)."""

    @property
    def last_tick(self) -> float:
        """``time.monotonic()`` of the loop's last tick."""

    @property
    def assigned(self) -> bool:
        """True once the group coordinator gave this member an assignment."""

    @property
    def paused_on(self) -> str | None:
        """The dependency consumption is paused on (``"redis"``, ...), else None."""


@dataclass(frozen=True)
class Probe:
    """A probe's answer: ``ok`` and the reason(s), one per line."""

    ok: bool
    detail: str


def redis_pinger(redis: RedisSettings, timeout_s: float = 1.0) -> Callable[[], None]:
    """A ``PING`` through a dedicated client of ``redis`` with a ``timeout_s`` socket
    timeout. The callable raises :class:`ReferenceStoreError` (no URL in the message)
    when Redis does not answer."""
    import redis as redis_lib

    client = redis.model_copy(update={"socket_timeout_s": timeout_s}).client()

    def ping() -> None:
        try:
            client.ping()
        except redis_lib.RedisError as exc:
            raise ReferenceStoreError(f"redis did not answer PING ({type(exc).__name__})") from exc

    return ping


class Probes:
    """Liveness and readiness of one service (see the module docstring)."""

    def __init__(
        self,
        state: ServiceState,
        redis_ping: Callable[[], None] | None,
        *,
        liveness_s: float = 30.0,
        redis_check_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._state = state
        self._ping = redis_ping
        self._liveness_s = liveness_s
        self._redis_check_s = redis_check_s
        self._clock = clock
        self._lock = threading.Lock()
        self._redis: Probe | None = None
        self._redis_at = float("-inf")

    def live(self) -> Probe:
        age = self._clock() - self._state.last_tick
        if age <= self._liveness_s:
            return Probe(True, f"ok: loop ticked {age:.1f} s ago")
        return Probe(
            False, f"loop stalled: last tick {age:.1f} s ago (limit {self._liveness_s:g} s)"
        )

    def redis(self) -> Probe:
        """The cached PING result, refreshed when older than ``redis_check_s``."""
        if self._ping is None:
            return Probe(True, "redis: not checked")
        with self._lock:  # one PING at a time; concurrent probes share its answer
            now = self._clock()
            if self._redis is None or now - self._redis_at >= self._redis_check_s:
                try:
                    self._ping()
                    self._redis = Probe(True, "redis: ok")
                except ReferenceStoreError as exc:
                    self._redis = Probe(False, f"redis unreachable: {exc}")
                self._redis_at = self._clock()
            return self._redis

    def ready(self) -> Probe:
        problems: list[str] = []
        if not self._state.assigned:
            problems.append("not assigned: waiting for the consumer group")
        paused = self._state.paused_on
        if paused is not None:
            problems.append(f"paused: {paused} unavailable")
        redis = self.redis()
        if not redis.ok:
            problems.append(redis.detail)
        if problems:
            return Probe(False, "\n".join(problems))
        return Probe(True, "ok: assigned, redis reachable")


class ObservabilityServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (``port`` 0: any free
    port; :attr:`host` and :attr:`port` are the bound ones). Serving starts in the
    constructor."""

    def __init__(
        self, metrics: ServiceMetrics, probes: Probes, port: int, host: str = DEFAULT_HOST
    ) -> None:
        handler = _handler_for(metrics, probes)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(f"metrics port {port}: cannot listen on {host}: {exc}") from exc
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"cdr-http-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self.host = str(self._server.server_address[0])
        LOG.info("serving /metrics /healthz /readyz on host=%s port=%d", self.host, self.port)

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()


def _handler_for(metrics: ServiceMetrics, probes: Probes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "cdr-pipeline"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, content_type = metrics.render(self.headers.get("Accept", ""))
                self._send(HTTPStatus.OK, body, content_type)
            elif path in ("/healthz", "/readyz"):
                probe = probes.live() if path == "/healthz" else probes.ready()
                status = HTTPStatus.OK if probe.ok else HTTPStatus.SERVICE_UNAVAILABLE
                self._send(status, (probe.detail + "\n").encode(), "text/plain; charset=utf-8")
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes every few seconds: not decisions worth a log line

    return Handler
