"""The ``ziggurat`` command: serve | run | inspect | bench."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .errors import ZigguratError


def _parse_input(spec: str) -> tuple[str, object]:
    name, sep, value = spec.partition("=")
    if not sep or not name:
        raise ZigguratError(f"--input expects NAME=FILE.npy or NAME=JSON, got {spec!r}")
    path = Path(value)
    if value.endswith(".npy"):
        if not path.is_file():
            raise ZigguratError(f"--input {name}: file {value} does not exist")
        return name, np.load(path, allow_pickle=False)
    if value.endswith(".json") and path.is_file():
        return name, json.loads(path.read_text())
    try:
        return name, json.loads(value)
    except json.JSONDecodeError as exc:
        raise ZigguratError(f"--input {name}: not a .npy file nor valid JSON ({exc})") from None


def _coerce(sess, feeds: dict) -> dict:
    """JSON lists become arrays of the input's declared dtype."""
    from .ir import dtypes

    types = {a.name: a.type for a in sess.get_inputs()}
    out = {}
    for name, value in feeds.items():
        if not isinstance(value, np.ndarray) and name in types:
            t = types[name]
            if t.startswith("tensor("):
                elem = {dtypes.name(c): c for c in range(1, 29)}.get(t[7:-1])
                value = np.asarray(value, dtype=dtypes.to_numpy(elem) if elem else None)
        out[name] = value
    return out


PRECISIONS = ("fp32", "bf16", "fp16")  # as runtime.options.PRECISIONS (not imported: start-up)
PRECISION_HELP = (
    "fp32 (exact), bf16 (bf16 weights and GEMMs; CPUs with AVX512-BF16/AMX) or fp16 (GPU devices)"
)
# --device -> onnxruntime provider list (the CPU last: it runs what the device cannot).
DEVICE_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "vulkan": ["WebGpuExecutionProvider", "CPUExecutionProvider"],
}
DEVICE_HELP = "where the model runs: cpu (default), cuda (CuPy) or vulkan (wgpu); CPU fallback"


def _device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=sorted(DEVICE_PROVIDERS), default="cpu", help=DEVICE_HELP)


def cmd_run(args: argparse.Namespace) -> int:
    from . import InferenceSession, SessionOptions

    opts = SessionOptions(precision=args.precision)
    sess = InferenceSession(args.model, opts, providers=DEVICE_PROVIDERS[args.device])
    feeds = _coerce(sess, dict(_parse_input(s) for s in args.input))
    outs = sess.run(None, feeds)
    out_dir = Path(args.output) if args.output else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    for arg, value in zip(sess.get_outputs(), outs):
        if isinstance(value, np.ndarray):
            summary = f"{value.dtype}{list(value.shape)}"
            if value.size and value.dtype.kind in "fiub":
                v = value.astype(np.float64)
                summary += f" min={v.min():.6g} max={v.max():.6g} mean={v.mean():.6g}"
                if value.ndim <= 2 and value.size <= 16:
                    summary += f" values={value.tolist()}"
        else:
            summary = type(value).__name__
        print(f"{arg.name}: {summary}")
        if out_dir and isinstance(value, np.ndarray):
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in arg.name)
            np.save(out_dir / f"{safe}.npy", value)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .inspect import inspect_model

    if args.plan:
        return _print_plan(args)
    if args.device != "cpu":
        return _print_placement(args)
    report = inspect_model(args.model)
    print(json.dumps(report, indent=2) if args.json else report["text"])
    return 1 if report["unsupported"] and args.strict else 0


def _dims(specs: list[str]) -> dict[str, int]:
    """``--dim NAME=N`` options as {name: size}; a clear error for anything else."""
    dims = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not value.isdigit():
            raise ZigguratError(f"--dim expects NAME=N (e.g. batch=1), got {spec!r}")
        dims[name] = int(value)
    return dims


def _print_plan(args: argparse.Namespace) -> int:
    """``inspect --plan``: the execution plan for inputs of the --dim sizes (random values)."""
    from . import InferenceSession
    from .bench import random_feeds

    dims = _dims(args.dim)
    sess = InferenceSession(args.model)
    print(sess.execution_plan(random_feeds(sess.get_inputs(), dims)))
    return 0


def _print_placement(args: argparse.Namespace) -> int:
    """``inspect --device X``: where each node runs on X (device, host shape arithmetic, or CPU
    fallback with the reason), from one run on random inputs of the --dim sizes."""
    from . import InferenceSession
    from .bench import random_feeds

    dims = _dims(args.dim)
    sess = InferenceSession(args.model, providers=DEVICE_PROVIDERS[args.device])
    placement = sess.placement(random_feeds(sess.get_inputs(), dims))
    if placement is None:
        raise ZigguratError(
            f"device {args.device!r} is not available here (see the warning above); "
            "install its extra: pip install 'ziggurat[cuda]' or 'ziggurat[vulkan]'"
        )
    if args.json:
        print(json.dumps({"provider": placement.provider, "nodes": placement.report()}, indent=2))
    else:
        print(placement.text())
    sess.close()
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ziggurat", description="ONNX inference engine and server"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a model once on inputs from .npy or JSON")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy|JSON")
    p.add_argument("--output", "-o", metavar="DIR", help="write each output to DIR/NAME.npy")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help=PRECISION_HELP)
    _device_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("inspect", help="inputs, outputs, opsets, ops, parameters, what won't run")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--strict", action="store_true", help="exit 1 if any op is unsupported")
    p.add_argument(
        "--plan",
        action="store_true",
        help="print the execution plan (kernels, lifetimes, buffers, peak bytes)",
    )
    p.add_argument("--dim", action="append", default=[], metavar="NAME=N",
                   help="with --plan: size of a symbolic dimension (default 1)")  # fmt: skip
    _device_args(p)  # with a device: per-node placement instead of the model report
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("bench", help="latency and throughput, optionally against onnxruntime")
    p.add_argument("model")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=N",
                   help="size for a symbolic dimension (default 1)")  # fmt: skip
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--compare", choices=["onnxruntime"], help="also time onnxruntime, same inputs")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help=PRECISION_HELP)
    _device_args(p)
    p.set_defaults(func=cmd_bench)

    try:
        from .server.cli import add_parser as add_serve_parser
    except ImportError:
        add_serve_parser = None
    if add_serve_parser is not None:
        add_serve_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ZigguratError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
