"""Server metrics: Prometheus text exposition (``GET /metrics``) and the /api/v1/stats summary.

Hand-rolled rather than prometheus_client: a handful of counters and histograms, no extra
dependency, and recording costs a dict lookup and a bisect on the request path.
"""

from __future__ import annotations

import os
import resource
import time
from bisect import bisect_left
from collections import defaultdict
from typing import TYPE_CHECKING

from ziggurat.server.http import Request, Response
from ziggurat.server.routing import Route

if TYPE_CHECKING:
    from ziggurat.server.app import ZigguratApp
    from ziggurat.server.batching import BatchReport
    from ziggurat.server.model import LoadedModel
    from ziggurat.server.repository import ModelRepository

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    """A Prometheus histogram keyed by a label tuple."""

    def __init__(self, name: str, help_: str, labels: tuple[str, ...], buckets: tuple):
        self.name, self.help, self.labels, self.buckets = name, help_, labels, buckets
        self.data: dict[tuple, list] = {}

    def observe(self, key: tuple, value: float) -> None:
        d = self.data.get(key)
        if d is None:
            d = self.data[key] = [[0] * (len(self.buckets) + 1), 0.0, 0]
        d[0][bisect_left(self.buckets, value)] += 1
        d[1] += value
        d[2] += 1

    def render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {self.help}")
        out.append(f"# TYPE {self.name} histogram")
        for key, (counts, total, n) in sorted(self.data.items()):
            lbl = _labels(self.labels, key)
            sep = "," if lbl else ""
            acc = 0
            for bound, c in zip(self.buckets, counts):
                acc += c
                out.append(f'{self.name}_bucket{{{lbl}{sep}le="{bound}"}} {acc}')
            out.append(f'{self.name}_bucket{{{lbl}{sep}le="+Inf"}} {n}')
            out.append(f"{self.name}_sum{{{lbl}}} {total}")
            out.append(f"{self.name}_count{{{lbl}}} {n}")


def _escape(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: tuple[str, ...], values: tuple) -> str:
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values))


def rss_bytes() -> int:
    """Resident set size now (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Metrics:
    """Counters for every request plus per-model latency, queue time and batch sizes."""

    def __init__(self) -> None:
        self.started = time.time()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)  # route, model, status
        self.failures: dict[tuple[str, str], int] = defaultdict(int)  # model, reason
        self.in_flight = 0
        self.rejected = 0
        self.latency = Histogram(
            "ziggurat_request_duration_seconds",
            "Request latency from first byte to response, by route and model.",
            ("route", "model"),
            LATENCY_BUCKETS,
        )
        self.queue = Histogram(
            "ziggurat_queue_duration_seconds",
            "Time a request waited before its run started.",
            ("model",),
            LATENCY_BUCKETS,
        )
        self.compute = Histogram(
            "ziggurat_compute_duration_seconds",
            "Duration of one model run (a batch).",
            ("model",),
            LATENCY_BUCKETS,
        )
        self.batch = Histogram(
            "ziggurat_batch_size",
            "Rows per model run (dynamic batching stacks requests).",
            ("model",),
            BATCH_BUCKETS,
        )

    def request(self, route: str, model: str, status: int, seconds: float) -> None:
        self.requests[(route, model, status)] += 1
        if route != "other":
            self.latency.observe((route, model), seconds)
        if status >= 400 and model:
            self.failures[(model, _reason(status))] += 1

    def batch_done(self, model: LoadedModel, rep: BatchReport) -> None:
        name = model.name
        for q in rep.queue_s:
            self.queue.observe((name,), q)
        self.compute.observe((name,), rep.compute_s)
        self.batch.observe((name,), rep.rows)

    def render(self, repo: ModelRepository) -> str:
        out: list[str] = []
        out += [
            "# HELP ziggurat_requests_total HTTP requests by route, model and status.",
            "# TYPE ziggurat_requests_total counter",
        ]
        for (route, model, status), n in sorted(self.requests.items()):
            out.append(
                f'ziggurat_requests_total{{route="{route}",model="{_escape(model)}",'
                f'status="{status}"}} {n}'
            )
        out += [
            "# HELP ziggurat_request_failures_total Failed requests by model and reason.",
            "# TYPE ziggurat_request_failures_total counter",
        ]
        for (model, reason), n in sorted(self.failures.items()):
            out.append(
                f'ziggurat_request_failures_total{{model="{_escape(model)}",reason="{reason}"}} {n}'
            )
        for h in (self.latency, self.queue, self.compute, self.batch):
            h.render(out)
        loaded = repo.loaded()
        out += [
            "# HELP ziggurat_models_loaded Model versions loaded and ready.",
            "# TYPE ziggurat_models_loaded gauge",
            f"ziggurat_models_loaded {len(loaded)}",
            "# HELP ziggurat_model_size_bytes Size of each loaded model's files.",
            "# TYPE ziggurat_model_size_bytes gauge",
        ]
        for m in loaded:
            out.append(
                f'ziggurat_model_size_bytes{{model="{_escape(m.name)}",'
                f'version="{m.version}"}} {m.size_bytes}'
            )
        out += [
            "# HELP ziggurat_model_pending_requests Requests queued or running per model.",
            "# TYPE ziggurat_model_pending_requests gauge",
        ]
        for m in loaded:
            out.append(
                f'ziggurat_model_pending_requests{{model="{_escape(m.name)}",'
                f'version="{m.version}"}} {m.scheduler.pending}'
            )
        out += [
            "# HELP ziggurat_in_flight_requests Requests and streams being handled.",
            "# TYPE ziggurat_in_flight_requests gauge",
            f"ziggurat_in_flight_requests {self.in_flight}",
            "# HELP ziggurat_rejected_total Requests refused by max_connections.",
            "# TYPE ziggurat_rejected_total counter",
            f"ziggurat_rejected_total {self.rejected}",
            "# HELP process_resident_memory_bytes Resident memory of the server process.",
            "# TYPE process_resident_memory_bytes gauge",
            f"process_resident_memory_bytes {rss_bytes()}",
            *_device_memory_lines(),
            "# HELP process_start_time_seconds Start time of the process (Unix time).",
            "# TYPE process_start_time_seconds gauge",
            f"process_start_time_seconds {self.started}",
        ]
        return "\n".join(out) + "\n"

    def stats(self, repo: ModelRepository) -> dict:
        """The /api/v1/stats body."""
        total = sum(self.requests.values())
        errors = sum(n for (_, _, s), n in self.requests.items() if s >= 400)
        models = []
        for m in repo.loaded():
            s = m.stats
            models.append(
                {
                    "name": m.name,
                    "version": str(m.version),
                    "requests": s.success + s.failure,
                    "failures": s.failure,
                    "executions": s.executions,
                    "rows": s.inferences,
                    "mean_queue_ms": round(s.queue_ns / 1e6 / max(s.executions, 1), 3),
                    "mean_compute_ms": round(s.compute_ns / 1e6 / max(s.executions, 1), 3),
                    "latency": s.percentiles(),
                    "batch_sizes": {str(k): v[0] for k, v in sorted(s.batches.items())},
                    "pending": m.scheduler.pending,
                    "memory_bytes": m.size_bytes,
                    **_model_device(m),
                }
            )
        return {
            "uptime_s": round(time.time() - self.started, 3),
            "requests": total,
            "errors": errors,
            "in_flight": self.in_flight,
            "rejected": self.rejected,
            "memory": {"rss_bytes": rss_bytes(), "devices": device_memory()},
            "models": models,
        }


def device_memory() -> list[dict]:
    """Pool statistics of each device backend opened in this process (none: [])."""
    from ..backends import device

    return [b.pool.stats() for b in device.opened().values()]


def _device_memory_lines() -> list[str]:
    out = [
        "# HELP ziggurat_device_memory_bytes Device memory pool bytes (in_use, cached, peak, "
        "limit) per device.",
        "# TYPE ziggurat_device_memory_bytes gauge",
    ]
    for s in device_memory():
        for state in ("in_use", "cached", "peak", "limit"):
            value = s[f"{state}_bytes"]
            if value is not None:
                out.append(
                    f'ziggurat_device_memory_bytes{{device="{_escape(s["device"])}",'
                    f'state="{state}"}} {value}'
                )
    return out


def _model_device(m: LoadedModel) -> dict:
    """The provider a model runs on and the device bytes its session holds."""
    session = getattr(m, "session", None)
    providers = getattr(session, "get_providers", lambda: ["CPUExecutionProvider"])()
    mem = getattr(session, "device_memory", lambda: None)()
    return {"provider": providers[0], "device_bytes": 0 if mem is None else mem["session_bytes"]}


def _reason(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        413: "too_large",
        429: "overloaded",
        503: "unavailable",
        504: "timeout",
    }.get(status, "error" if status >= 500 else "client_error")


async def prometheus(app: ZigguratApp, req: Request) -> Response:
    """``GET /metrics``: the Prometheus text exposition."""
    return Response(
        app.metrics.render(app.repo).encode(), 200, "text/plain; version=0.0.4; charset=utf-8"
    )


ROUTES = [Route("GET", "/metrics", prometheus, "metrics")]
