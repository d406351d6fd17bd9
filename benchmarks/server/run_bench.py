"""Server benchmarks, side by side in one run: Ziggurat's server vs a FastAPI + onnxruntime one.

    python benchmarks/server/run_bench.py [--duration 10] [--only mlp,binary,bert,bert-tiny,cold]
                                          [--models bench-models]

* tiny MLP 784-128-10, V2 JSON, 16 connections: requests/s and p99, both servers, same body;
  then Ziggurat with the V2 binary tensor extension.
* BERT-base seq 128 (bench-models/bert-base.onnx, from `make check-models`): Ziggurat with dynamic
  batching vs one request per run, sequences/s at 8 connections.
* cold start: process start to the first 200 on /v2/health/ready, demo model, median of 5.

Needs ``wrk`` (Debian: ``apt-get install wrk``). Everything listens on 127.0.0.1 only, and every
server started here is stopped before the script exits.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
BASELINE = ROOT / "benchmarks" / "server" / "baseline_fastapi.py"
DEMO = ROOT / "src" / "ziggurat" / "data" / "digits.onnx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, cmd: list[str], port: int, env: dict[str, str] | None = None):
        self.url = f"http://127.0.0.1:{port}"
        self.t0 = time.perf_counter()
        full_env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, env=full_env
        )
        try:
            self.cold_s = self._wait()
        except BaseException:
            self.stop()
            raise

    def _wait(self, timeout: float = 600) -> float:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read().decode()[-3000:])
            try:
                with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - self.t0
            except OSError:
                time.sleep(0.002)
        raise RuntimeError("server not ready in time")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def ours(model: str, *flags: str) -> tuple[list[str], int]:
    port = free_port()
    return [
        PY,
        "-m",
        "ziggurat.server",
        model,
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        *flags,
    ], port


def baseline(model: str) -> tuple[list[str], int]:
    port = free_port()
    return [PY, str(BASELINE), model, "--port", str(port)], port


LUA = """
local f = io.open("{body}", "rb")
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "{ctype}"
{extra}
"""


def lua_script(tmp: Path, name: str, body: bytes, header_len: int | None = None) -> Path:
    (tmp / f"{name}.body").write_bytes(body)
    extra = f'wrk.headers["Inference-Header-Content-Length"] = "{header_len}"' if header_len else ""
    ctype = "application/octet-stream" if header_len else "application/json"
    path = tmp / f"{name}.lua"
    path.write_text(LUA.format(body=tmp / f"{name}.body", ctype=ctype, extra=extra))
    return path


def wrk(url: str, script: Path, conns: int, duration: int) -> dict:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{duration}s",
            "--timeout",
            "60s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)  # includes wrk's timeouts
    return {
        "rps": rps,
        "p99_ms": float(p99.group(1)) * scale,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(0) if errors else "",
    }


def make_mlp(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.standard_normal((784, 128)) * 0.05).astype(np.float32), "w1"),
        numpy_helper.from_array(np.zeros(128, np.float32), "b1"),
        numpy_helper.from_array((rng.standard_normal((128, 10)) * 0.05).astype(np.float32), "w2"),
        numpy_helper.from_array(np.zeros(10, np.float32), "b2"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
            helper.make_node("Relu", ["h"], ["a"]),
            helper.make_node("Gemm", ["a", "w2", "b2"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 784])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def v2_json(inputs: dict[str, np.ndarray], outputs: list[str] | None = None) -> bytes:
    names = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}
    body = {
        "inputs": [
            {
                "name": k,
                "shape": list(v.shape),
                "datatype": names[v.dtype],
                "data": v.ravel().tolist(),
            }
            for k, v in inputs.items()
        ]
    }
    if outputs:
        body["outputs"] = [{"name": n} for n in outputs]
    return json.dumps(body).encode()


def v2_binary(inputs: dict[str, np.ndarray]) -> tuple[bytes, int]:
    head = {
        "inputs": [
            {
                "name": k,
                "shape": list(v.shape),
                "datatype": {"float32": "FP32", "int64": "INT64"}[v.dtype.name],
                "parameters": {"binary_data_size": v.nbytes},
            }
            for k, v in inputs.items()
        ],
        "parameters": {"binary_data_output": True},
    }
    js = json.dumps(head).encode()
    return js + b"".join(v.tobytes() for v in inputs.values()), len(js)


def row(name: str, r: dict) -> str:
    return f"| {name} | {r['rps']:,.0f} | {r['p99_ms']:.2f} | {r['non2xx']} |"


def bench_mlp(tmp: Path, duration: int, binary: bool) -> list[str]:
    repo = tmp / "mlp-repo"
    model = make_mlp(repo / "mlp" / "1" / "model.onnx")
    # Dynamic batching for the MLP: concurrent requests share one run.
    (repo / "mlp" / "config.toml").write_text("max_batch_size = 32\n")
    x = np.random.default_rng(1).random((1, 784), dtype=np.float32)
    js = lua_script(tmp, "mlp_json", v2_json({"x": x}))
    lines = [
        "| server, tiny MLP 784-128-10, 16 connections | requests/s | p99 ms | non-2xx |",
        "|---|---|---|---|",
    ]
    cmd, port = baseline(str(model))
    with Server(cmd, port) as s:
        wrk(s.url + "/v2/models/model/infer", js, 16, 2)  # warm-up
        base = wrk(s.url + "/v2/models/model/infer", js, 16, duration)
    lines.append(row("FastAPI + onnxruntime, JSON", base))
    cmd, port = ours(str(repo), "--cpu-threads", "1")
    # One BLAS thread: a multi-threaded OpenBLAS GEMM of 16x784x128 can take milliseconds on a
    # loaded 2-core machine (its threads spin and get descheduled). Set by env as well, until
    # the engine applies intra_op_num_threads to BLAS itself.
    with Server(cmd, port, env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}) as s:
        url = s.url + "/v2/models/mlp/infer"
        wrk(url, js, 16, 2)
        mine = wrk(url, js, 16, duration)
        lines.append(row("Ziggurat, JSON", mine))
        if binary:
            body, n = v2_binary({"x": x})
            b = wrk(url, lua_script(tmp, "mlp_bin", body, n), 16, duration)
            lines.append(row("Ziggurat, V2 binary", b))
    lines.append("")
    lines.append(
        f"JSON: {mine['rps'] / base['rps']:.2f}x the baseline's requests/s "
        f"(goal >= 2.5x); p99 {mine['p99_ms']:.2f} ms vs {base['p99_ms']:.2f} ms"
    )
    return lines


def bench_bert(
    tmp: Path, models: Path, duration: int, name: str = "bert-base", binary: bool = False
) -> list[str]:
    """Sequences/s with one request per run vs dynamic batching, seq 128 (BERT-base: 8
    connections, JSON; bert-tiny: 16 connections, V2 binary tensors, as the performance issue
    asks)."""
    model = models / f"{name}.onnx"
    if not model.is_file():
        return [f"({name} skipped: {model} is missing; `make check-models` builds it)"]
    rng = np.random.default_rng(2)
    feeds = {
        "input_ids": rng.integers(1000, 20000, (1, 128)).astype(np.int64),
        "attention_mask": np.ones((1, 128), np.int64),
    }
    conns, max_batch = (16, 16) if binary else (8, 8)
    if binary:
        body, n = v2_binary(feeds)
        script = lua_script(tmp, name, body, n)
    else:
        script = lua_script(tmp, name, v2_json(feeds, ["pooler_output"]))
    form = "V2 binary" if binary else "JSON"
    lines = [
        f"| {name} seq128, {conns} connections, {form} | sequences/s | p99 ms | non-2xx |",
        "|---|---|---|---|",
    ]
    results = {}
    batching = f"dynamic batching (max {max_batch})"
    for label, flags in (
        ("one request per run", ["--max-batch-size", "0"]),
        (batching, ["--max-batch-size", str(max_batch), "--max-queue-delay-us", "20000"]),
    ):
        cmd, port = ours(str(model), "--max-model-size-mb", "2048", *flags)
        with Server(cmd, port) as s:
            url = s.url + f"/v2/models/{name}/infer"
            wrk(url, script, conns, 5)
            results[label] = wrk(url, script, conns, duration)
        lines.append(row(f"Ziggurat, {label}", results[label]))
    a, b = results["one request per run"], results[batching]
    goal = "2x" if binary else "1.5x"
    lines += ["", f"dynamic batching: {b['rps'] / a['rps']:.2f}x sequences/s (goal >= {goal})"]
    return lines


def bench_cold(runs: int = 5) -> list[str]:
    # Byte-compile Ziggurat first, as any installed package is: with PYTHONDONTWRITEBYTECODE set
    # (some shells and CI images set it) an editable install recompiles every module at each start,
    # which alone added ~0.1 s here (0.27 s vs 0.17 s to the first 200).
    import compileall

    compileall.compile_dir(str(ROOT / "src" / "ziggurat"), quiet=1)

    def median(make) -> float:
        times = []
        for _ in range(runs):
            cmd, port = make()
            s = Server(cmd, port)
            times.append(s.cold_s)
            s.stop()
        return statistics.median(times)

    z = median(lambda: ours(str(DEMO)))
    b = median(lambda: baseline(str(DEMO)))
    return [
        "| cold start to first 200 on /v2/health/ready, demo model | median s |",
        "|---|---|",
        f"| FastAPI + onnxruntime | {b:.3f} |",
        f"| Ziggurat | {z:.3f} |",
        "",
        f"Ziggurat / baseline: {z / b:.2f}x (goal <= 0.6x and <= 0.25 s)",
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--only", default="mlp,binary,bert,bert-tiny,cold")
    ap.add_argument("--models", type=Path, default=ROOT / "bench-models")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: `apt-get update && apt-get install -y wrk`", file=sys.stderr)
        return 2
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        out: list[str] = []
        if "mlp" in only:
            out += bench_mlp(tmp, args.duration, "binary" in only) + [""]
        if "bert" in only:
            out += bench_bert(tmp, args.models, max(args.duration, 20)) + [""]
        if "bert-tiny" in only:
            out += bench_bert(tmp, args.models, args.duration, "bert-tiny", binary=True) + [""]
        if "cold" in only:
            out += bench_cold()
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
