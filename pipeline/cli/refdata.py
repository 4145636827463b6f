"""The reference data commands: ``refdata load`` (validate a directory, load it into
Redis atomically) and ``refdata generate`` (reference data of real size).

Contract: ``load`` makes the new version current only once all of it is in Redis and
valid (:mod:`pipeline.refdata.redis_load`); the Redis password and TLS files come from
``CDR_REDIS__*`` or the secrets dir (:func:`~pipeline.cli.common.redis_settings`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline.cli.common import redis_settings
from pipeline.observability import console


def cmd_refdata_load(args: argparse.Namespace) -> int:
    from pipeline.refdata.redis_load import load_to_redis

    store = redis_settings(args.redis)
    version = load_to_redis(store.client(), Path(args.directory), namespace=store.namespace)
    console.print(f"reference data version {version} is now current")
    return 0


def cmd_refdata_generate(args: argparse.Namespace) -> int:
    from pipeline.refdata.generate import generate_reference_dir

    started = time.perf_counter()
    generate_reference_dir(
        Path(args.output), npanxx_rows=args.npanxx, lnp_rows=args.lnp, seed=args.seed
    )
    console.print(f"wrote reference data to {args.output} in {time.perf_counter() - started:.1f} s")
    return 0
