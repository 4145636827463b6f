"""Where ``/metrics``, ``/healthz`` and ``/readyz`` listen (issue 11 #4): all interfaces
by default (the container image: the kubelet and Prometheus reach the pod), only the
address asked for with ``metrics_host`` / ``--metrics-host`` / ``CDR_METRICS_HOST``."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator

import pytest

from pipeline.cli import build_parser, settings_from_args
from pipeline.errors import ConfigError
from pipeline.metrics import ServiceMetrics
from pipeline.runtime.health import ObservabilityServer, Probes
from pipeline.settings import load_settings


class _State:
    """A live, assigned, unpaused service (liveness reads ``last_tick`` at each probe)."""

    @property
    def last_tick(self) -> float:
        return time.monotonic()

    assigned = True
    paused_on: str | None = None


def _status(host: str, port: int) -> int:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture
def serve() -> Iterator[list[ObservabilityServer]]:
    servers: list[ObservabilityServer] = []
    yield servers
    for server in servers:
        server.stop()


def _other_loopback_works() -> bool:
    """Linux routes all of 127.0.0.0/8 to lo: 127.0.0.2 is another local address."""
    try:
        with socket.create_server(("127.0.0.2", 0)):
            return True
    except OSError:
        return False


def test_loopback_only_when_asked(serve: list[ObservabilityServer]) -> None:
    server = ObservabilityServer(ServiceMetrics(), Probes(_State(), None), 0, "127.0.0.1")
    serve.append(server)
    assert server.host == "127.0.0.1"
    assert _status("127.0.0.1", server.port) == 200
    if _other_loopback_works():
        with pytest.raises(ConnectionRefusedError):
            _status("127.0.0.2", server.port)


def test_all_interfaces_by_default(serve: list[ObservabilityServer]) -> None:
    settings = load_settings()
    assert settings.metrics_host == "0.0.0.0"
    server = ObservabilityServer(ServiceMetrics(), Probes(_State(), None), 0, settings.metrics_host)
    serve.append(server)
    assert server.host == "0.0.0.0"
    assert _status("127.0.0.1", server.port) == 200
    if _other_loopback_works():
        assert _status("127.0.0.2", server.port) == 200


def test_the_setting_comes_from_flag_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDR_METRICS_HOST", "127.0.0.1")
    assert load_settings().metrics_host == "127.0.0.1"
    args = build_parser().parse_args(["run", "--metrics-host", "::1", "--metrics-port", "9108"])
    assert settings_from_args(args).metrics_host == "::1"


@pytest.mark.parametrize("host", ["", "two words"])
def test_a_blank_host_is_refused(host: str) -> None:
    with pytest.raises(ConfigError, match="metrics_host"):
        load_settings(metrics_host=host)


def test_an_address_not_of_this_machine_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"cannot listen on 192\.0\.2\.1"):
        ObservabilityServer(ServiceMetrics(), Probes(_State(), None), 0, "192.0.2.1")
