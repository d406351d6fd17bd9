"""What one open dashboard costs the server: run_bench.py's tiny-MLP throughput run (V2 JSON,
16 connections, dynamic batching, one BLAS thread) with and without one dashboard event stream
open, on the same server, alternating A/B rounds so machine drift hits both alike.

    python benchmarks/server/dashboard_cost.py [--duration 5] [--rounds 3]

The stream is read by a separate process (as a browser would be), the way the page reads it:
``GET /api/v1/dashboard/events``, one sample a second. Prints the medians and their ratio.
Everything listens on 127.0.0.1 and stops before the script exits. Needs ``wrk``.

On a loaded machine wrk's numbers swing by more than the effect, so the script also measures
the stream's work directly: the CPU time of one sample (counters, models table, JSON), in
process, with the MLP loaded and served. One sample a second on the server's one event loop
takes that fraction of the loop, which bounds the throughput it can cost.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_bench import PY, Server, lua_script, make_mlp, ours, v2_json, wrk  # noqa: E402

READER = """
import sys, urllib.request
n = 0
with urllib.request.urlopen(sys.argv[1] + "/api/v1/dashboard/events", timeout=60) as r:
    for line in r:
        if line.startswith(b"event: "):
            n += 1
            print(n, flush=True)
"""


def tick_cost(repo: Path, n: int = 300) -> float:
    """Median CPU seconds of one stream tick (sample + models table + encoding), in process."""
    import asyncio
    import time

    from ziggurat.config import Config
    from ziggurat.server import create_app, dashboard_events
    from ziggurat.server.routes_dashboard import overview

    async def run() -> float:
        app = create_app(Config(model_repository=str(repo), access_log=False))
        await app.startup(wait=True)
        m = await app.repo.get("mlp")
        x = np.zeros((1, 784), np.float32)
        for _ in range(200):  # counters, latency windows and batch histograms to walk
            await m.infer({"x": x}, ["probs"])
            app.metrics.request("v2_infer", "mlp", 200, 0.001)
        hub = dashboard_events.hub_of(app)
        hub.sample()
        times = []
        for _ in range(n):
            t0 = time.process_time()
            s = hub.sample()
            dashboard_events._event("sample", {**s, "models": overview(app)})
            times.append(time.process_time() - t0)
        await app.shutdown()
        return statistics.median(times)

    return asyncio.run(run())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3, help="A/B pairs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        repo = tmp / "mlp-repo"
        make_mlp(repo / "mlp" / "1" / "model.onnx")
        (repo / "mlp" / "config.toml").write_text("max_batch_size = 32\n")
        x = np.random.default_rng(1).random((1, 784), dtype=np.float32)
        js = lua_script(tmp, "mlp_json", v2_json({"x": x}))
        cmd, port = ours(str(repo), "--cpu-threads", "1")
        env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        without, with_ = [], []
        with Server(cmd, port, env=env) as s:
            url = s.url + "/v2/models/mlp/infer"
            wrk(url, js, 16, 2)  # warm-up
            for _ in range(args.rounds):
                without.append(wrk(url, js, 16, args.duration)["rps"])
                reader = subprocess.Popen(
                    [PY, "-c", READER, s.url], stdout=subprocess.PIPE, text=True
                )
                try:
                    reader.stdout.readline()  # the stream is open: its hello arrived
                    with_.append(wrk(url, js, 16, args.duration)["rps"])
                    events = 1
                finally:
                    reader.terminate()
                    out, _ = reader.communicate(timeout=30)
                    events += len(out.split())
                if events < args.duration:  # the stream must really have been flowing
                    print(f"the dashboard stream sent only {events} events", file=sys.stderr)
                    return 1
        tick = tick_cost(repo)
    a, b = statistics.median(without), statistics.median(with_)
    print(f"one stream tick: {tick * 1e6:.0f} us of CPU a second = {tick * 100:.3f} % of the loop")
    print(
        f"requests/s without a dashboard: {a:,.0f} (runs: {', '.join(f'{v:,.0f}' for v in without)})"
    )
    print(
        f"requests/s with one open dashboard: {b:,.0f} (runs: {', '.join(f'{v:,.0f}' for v in with_)})"
    )
    print(f"ratio with/without: {b / a:.3f} (goal: cost < 1 %, ratio > 0.99)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
