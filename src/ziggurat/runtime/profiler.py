"""Per-node timing for ``SessionOptions.enable_profiling``.

The executor compiles timing calls around each kernel call; ``end_profiling`` writes a Chrome
trace (chrome://tracing, Perfetto) like onnxruntime's, and ``summary`` totals time per op type.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from typing import Any

MAX_EVENTS = 200_000  # keeps a long profiled run from growing without bound


class Profiler:
    """Collects node timings; ``provider`` is the execution provider the trace names, as
    onnxruntime's does in each node event's ``args.provider``."""

    def __init__(self, prefix: str = "ziggurat_profile", provider: str = "CPUExecutionProvider"):
        self.prefix = prefix
        self.provider = provider
        self.start_ns = time.perf_counter_ns()
        self.events: list[tuple[str, str, int, int, int]] = []  # node, op, start, duration, thread
        # node -> provider for nodes run elsewhere than ``provider`` (a device session's placed
        # nodes; its CPU fallbacks keep the default), as onnxruntime's trace tells them apart.
        self.providers: dict[str, str] = {}
        self._lock = threading.Lock()

    def record(self, node: str, op: str, start_ns: int) -> None:
        end = time.perf_counter_ns()
        with self._lock:
            if len(self.events) < MAX_EVENTS:
                self.events.append((node, op, start_ns, end - start_ns, threading.get_ident()))

    def summary(self) -> list[dict[str, Any]]:
        """Per op type: calls, total and mean milliseconds, share of the total; slowest first."""
        totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        for _, op, _, dur, _ in self.events:
            totals[op][0] += 1
            totals[op][1] += dur / 1e6
        grand = sum(t for _, t in totals.values()) or 1.0
        rows = [
            {"op": op, "calls": int(n), "total_ms": t, "mean_ms": t / n, "share": t / grand}
            for op, (n, t) in totals.items()
        ]
        return sorted(rows, key=lambda r: -r["total_ms"])

    def write(self, directory: str = ".") -> str:
        """Write the Chrome trace JSON; returns its path."""
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        path = os.path.join(directory, f"{self.prefix}_{stamp}.json")
        tids: dict[int, int] = {}  # thread ident -> small row number in the trace viewer
        trace = [
            {
                "name": node, "cat": "Node", "ph": "X", "pid": os.getpid(),
                "tid": tids.setdefault(tid, len(tids)),
                "ts": (start - self.start_ns) / 1e3, "dur": dur / 1e3, "args": {"op_name": op, "provider": self.providers.get(node, self.provider)},
            }
            for node, op, start, dur, tid in self.events
        ]  # fmt: skip
        with open(path, "w") as f:
            json.dump(trace, f)
        return path
