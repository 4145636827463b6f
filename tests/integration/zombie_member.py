"""A streaming member that freezes itself in the middle of a flush (the zombie of
``test_zombie.py``), run as a child process::

    python -m tests.integration.zombie_member CONFIG.json

``CONFIG.json``: ``{"settings": {...load_settings keywords...}, "report": PATH,
"freeze_at": N}``. At the start of its ``N``-th flush (hook point ``flush:start``, on
the writer thread, with the range taken from its buffer but nothing sent or committed)
the member writes ``{"frozen": {"partition", "first", "last"}}`` to ``report`` and
stops its whole process with SIGSTOP, heartbeat thread included, as a long GC pause or
a frozen VM would. After SIGCONT it carries on where it was. SIGTERM stops it (flush,
commit, leave the group); it then writes the report again with its counters and
``fenced`` (the ``cdr_ranges_fenced_total`` it counted).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from pipeline.observability import setup_logging
from pipeline.settings import load_settings
from pipeline.streaming import build_service


def main(argv: list[str]) -> int:
    config = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    report = Path(config["report"])
    freeze_at = int(config["freeze_at"])
    setup_logging("INFO")
    frozen: dict[str, Any] = {}
    starts = 0

    def hook(point: str, info: dict[str, Any]) -> None:
        nonlocal starts
        if point != "flush:start":
            return
        starts += 1
        if starts == freeze_at:
            frozen.update(info)
            report.write_text(json.dumps({"frozen": frozen}), encoding="utf-8")
            os.kill(os.getpid(), signal.SIGSTOP)  # returns after SIGCONT

    service = build_service(load_settings(**config["settings"]), hook=hook)
    service.install_signal_handlers()
    stats = service.run()
    fenced = sum(
        s.value
        for metric in service.metrics.registry.collect()
        for s in metric.samples
        if s.name == "cdr_ranges_fenced_total"
    )
    report.write_text(
        json.dumps(
            {
                "frozen": frozen,
                "fenced": fenced,
                "rated": stats.rated,
                "dead_letters": stats.dead_letters,
                "flushes": stats.flushes,
            }
        ),
        encoding="utf-8",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
