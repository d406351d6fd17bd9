"""Requests/s of ``ziggurat serve`` with 1 and 2 Ray Serve replicas, and without Ray, on this host.

Each configuration is a fresh ``python -m ziggurat.server`` subprocess on a free 127.0.0.1 port
(Ray's local cluster on loopback), warmed up, then driven closed-loop by ``--workers`` keep-alive
connections for ``--seconds`` (tests/server/loadgen.py's ``capacity``), ``--rounds`` times; the
median is printed with the CPU milliseconds each role (load generator, Ray's proxy, replicas,
Ray's other processes, or the plain server) spent per request in the last round. Every replica gets one CPU and one engine thread (``--num-cpus-per-replica
1``), the plain server one engine thread, so the replica count is the only difference.

Models: ``mlp`` (the tests' 4x3 linear model: per-request cost is all HTTP, proxy and Python)
and ``mobilenetv2`` (bench-models/, ~4 ms of engine work per request, V2 binary tensors).

    .venv/bin/python benchmarks/ray_scale.py --models mlp,mobilenetv2 --seconds 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.server import models  # noqa: E402
from tests.server.conftest import free_port  # noqa: E402
from tests.server.loadgen import capacity, infer_request  # noqa: E402

CONFIGS = {
    "plain": ["--cpu-threads", "1"],
    "ray-1": ["--replicas", "1", "--num-cpus-per-replica", "1"],
    "ray-2": ["--replicas", "2", "--num-cpus-per-replica", "1"],
}


def binary_request(model: str, name: str, x: np.ndarray) -> bytes:
    """A V2 binary-extension infer request for one FP32 input, outputs in binary too."""
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": "FP32",
                    "shape": list(x.shape),
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }  # fmt: skip
    ).encode()
    body = head + x.tobytes()
    return (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        f"content-type: application/octet-stream\r\ninference-header-content-length: {len(head)}"
        f"\r\ncontent-length: {len(body)}\r\nconnection: keep-alive\r\n\r\n"
    ).encode() + body


def workload(name: str, tmp: Path) -> tuple[Path, bytes]:
    if name == "mlp":
        return models.linear(tmp / "linear.onnx"), infer_request("linear")
    if name == "mobilenetv2":
        path = ROOT / "bench-models" / "mobilenetv2.onnx"
        x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
        return path, binary_request("mobilenetv2", "pixel_values", x)
    raise SystemExit(f"unknown model {name!r}: mlp or mobilenetv2")


def cpu_seconds(root: int) -> dict[str, float]:
    """CPU seconds used so far by the server process tree, by role, and by this load generator."""
    import psutil

    out = {"client": sum(os.times()[:2])}
    procs = [psutil.Process(root)]
    procs += procs[0].children(recursive=True)
    for p in procs:
        try:
            name, t = p.name(), p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        role = "proxy" if "ProxyActor" in name else "replicas" if "ServeRepl" in name else "other"
        if p.pid == root:
            role = "server" if "--replicas" not in " ".join(p.cmdline()) else "other"
        out[role] = out.get(role, 0.0) + t.user + t.system
    return out


def run_config(flags: list[str], model: Path, request: bytes, args) -> list[float]:
    port = free_port()
    temp = tempfile.mkdtemp(prefix="zgb-")
    cmd = [sys.executable, "-m", "ziggurat.server", str(model), "--port", str(port),
           "--host", "127.0.0.1", "--no-access-log", "--log-level", "warning", *flags]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "ZIGGURAT_RAY_TEMP_DIR": temp}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode()[-2000:])
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).is_success:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        asyncio.run(capacity(port, request, seconds=3.0, workers=args.workers))  # warm-up
        rates, cpu = [], {}
        for _ in range(args.rounds):
            before, t0 = cpu_seconds(proc.pid), time.perf_counter()
            rates.append(
                asyncio.run(capacity(port, request, seconds=args.seconds, workers=args.workers))
            )
            after, elapsed = cpu_seconds(proc.pid), time.perf_counter() - t0
            done = rates[-1] * elapsed
            for k in after:  # CPU ms per request, last round
                cpu[k] = round((after[k] - before.get(k, 0.0)) / done * 1e3, 3)
        return rates, cpu
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()
        shutil.rmtree(temp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", default="mlp,mobilenetv2")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--seconds", type=float, default=8.0, help="per round (bounded loop)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=8, help="keep-alive connections")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="zgb-repo-"))
    for name in args.models.split(","):
        model, request = workload(name, tmp)
        medians = {}
        for config in args.configs.split(","):
            rates, cpu = run_config(CONFIGS[config], model, request, args)
            medians[config] = statistics.median(rates)
            print(json.dumps({"model": name, "config": config, "req_s": [round(r) for r in rates],
                              "median": round(medians[config]), "cpu_ms_per_req": cpu}), flush=True)  # fmt: skip
        if "ray-1" in medians and "ray-2" in medians:
            ratio = medians["ray-2"] / medians["ray-1"]
            print(json.dumps({"model": name, "ray-2 / ray-1": round(ratio, 2)}), flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
