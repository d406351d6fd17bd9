"""``ziggurat serve``: the subcommand (added to the main CLI by ``add_parser``) and the runner.

Settings come from ``--config FILE`` (TOML) < ``ZIGGURAT_*`` environment < flags; every Config
field has a flag. With no model and no repository the bundled demo model is served.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from ziggurat.config import Config, describe_fields, env_name

HELP = {
    "host": "address to listen on",
    "server_port": "TCP port",
    "max_connections": "concurrent requests + streams; beyond: 503 with Retry-After",
    "request_timeout_ms": "per-request deadline incl. queueing; beyond: 504, work cancelled",
    "max_body_mb": "largest request body / stream message; beyond: 413",
    "max_request_memory_mb": "estimated tensor memory of a request or batch call; beyond: 413",
    "shutdown_timeout_s": "on SIGTERM/SIGINT, wait this long for in-flight requests",
    "access_log": "one JSON line per request on stdout",
    "log_level": "server log level (debug, info, warning, error)",
    "model_repository": "folder of <name>.onnx or <name>/<version>/model.onnx models",
    "max_model_size_mb": "refuse model files larger than this (checked before reading)",
    "model_cache_size": "loaded model versions kept; least recently used idle one evicted",
    "load_on_demand": "load a repository model when a request names it",
    "enable_gpu": "use a GPU when one is present",
    "gpu_memory_mb": "GPU memory pool limit (per device, shared by its models)",
    "device": "auto | cpu | gpu | cuda | vulkan: where models run (config.toml overrides)",
    "cpu_threads": "intra-op threads per model (default: all cores)",
    "inter_op_threads": "inter-op threads per model",
    "graph_optimization_level": "disable | basic | extended | all",
    "enable_fusion": "fuse operator patterns when optimizing",
    "enable_quantization": "dynamic int8: MatMul/Gemm weights int8 per column at load, inputs per call",
    "precision": "fp32 | bf16 (CPUs with AVX512-BF16 or AMX) | fp16 (GPU devices)",
    "model_concurrency": "parallel runs of one model",
    "inline_run_us": "runs faster than this (recent mean) skip the worker thread; 0: never",
    "max_batch_size": "dynamic batching: max rows per run (0/1: off)",
    "max_queue_delay_us": "dynamic batching: extra wait for a fuller batch",
    "max_queue_size": "requests waiting per model; beyond: 503",
    "api_keys": "API key (repeatable); env: comma-separated",
    "cors_origins": "allowed CORS origin (repeatable); env: comma-separated",
    "cors_allow_credentials": "allow credentials in CORS (needs explicit origins)",
    "stream_max_in_flight": "requests in flight per WebSocket before reads pause",
}
# Time a connection gets to complete a request's headers (capped by request_timeout_ms).
HEADER_TIMEOUT_S = 10.0

FLAG = {
    "server_port": "--port",
    "api_keys": "--api-key",
    "cors_origins": "--cors-origin",
    "models": None,
}


def _flag(name: str) -> str | None:
    return FLAG.get(name, "--" + name.replace("_", "-"))


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand to ``subparsers``; sets ``func`` to :func:`serve`."""
    epilog = [
        "settings: file (--config, TOML) < environment < flags",
        "",
        f"{'setting':<26} {'environment':<36} default",
    ]
    for name, _, default in describe_fields():
        if name == "models":
            continue
        epilog.append(f"{name:<26} {env_name(name):<36} {default!r}")
    p = subparsers.add_parser(
        "serve",
        help="serve models over HTTP (/api/v1, KServe V2, WebSocket, /metrics)",
        description="Serve ONNX models over HTTP. With no model: the bundled demo model.",
        epilog="\n".join(epilog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "models",
        nargs="*",
        metavar="MODEL_OR_DIR",
        help="model files (.onnx), model folders or a model repository folder",
    )
    p.add_argument("--config", metavar="FILE", help="TOML settings file")
    for name, kind, _ in describe_fields():
        flag = _flag(name)
        if flag is None:
            continue
        help_ = f"{HELP.get(name, '')} [{env_name(name)}]"
        dest = f"opt_{name}"
        if kind.startswith("bool"):
            p.add_argument(
                flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_
            )
        elif kind.startswith("tuple"):
            p.add_argument(
                flag, dest=dest, action="append", default=None, help=help_, metavar="VALUE"
            )
        else:
            typ = int if kind.startswith("int") else float if kind.startswith("float") else str
            metavar = {int: "N", float: "X"}.get(typ, "VALUE")
            p.add_argument(flag, dest=dest, type=typ, default=None, help=help_, metavar=metavar)
    from ziggurat.integrations import serve_flags  # --replicas & co; Ray loads only when used

    serve_flags.add_arguments(p)
    p.set_defaults(func=serve)
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_")}
    if args.models:
        overrides["models"] = list(args.models)
    return Config.load(args.config, overrides=overrides)


def demo_model_path() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "digits.onnx"


def serve(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM/SIGINT; exits 0 after draining in-flight requests."""
    cfg = config_from_args(args)
    if not cfg.models and not cfg.model_repository:
        demo = demo_model_path()
        if not demo.is_file():
            print(
                f"error: no model given and the demo model {demo} is missing; build it with "
                "`python scripts/make_demo_model.py` or pass MODEL_OR_DIR",
                file=sys.stderr,
            )
            return 2
        cfg = cfg.with_(models=(str(demo),))
    from ziggurat.integrations import serve_flags

    if serve_flags.wanted(args):
        from ziggurat.integrations import ray_serve

        return ray_serve.serve_cluster(cfg, ray_serve.scale_from_args(args), args.ray_address)
    return run(cfg)


def run(cfg: Config, app: Any = None) -> int:
    import uvicorn

    from ziggurat.server.app import ZigguratApp

    logging.basicConfig(
        level=cfg.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = app or ZigguratApp(cfg)
    uv = uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.server_port,
        loop=_pick("uvloop", "uvloop", "asyncio"),
        http=_http_protocol(cfg),
        ws=_ws_protocol(),
        lifespan="on",
        access_log=False,  # ours is structured (one JSON line per request)
        log_level=cfg.log_level.lower(),
        timeout_graceful_shutdown=cfg.shutdown_timeout_s,
        ws_max_size=cfg.max_body_bytes + 1024,
        server_header=False,
    )
    server = _Server(uv)
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    print(f"ziggurat: dashboard at http://{host}:{cfg.server_port}/", file=sys.stderr, flush=True)
    server.run()
    return 0 if server.started else 1


def _http_protocol(cfg: Config) -> type:
    """uvicorn's HTTP protocol (httptools, else h11) with a deadline for request headers."""
    from uvicorn.config import HTTP_PROTOCOLS
    from uvicorn.importer import import_from_string

    from ziggurat.server.connections import protocol_class

    base = import_from_string(HTTP_PROTOCOLS[_pick("httptools", "httptools", "h11")])
    return protocol_class(base, min(HEADER_TIMEOUT_S, cfg.request_timeout_ms / 1000))


def _ws_protocol() -> str:
    """websockets' sans-I/O protocol where this uvicorn has it (the older one is deprecated)."""
    from uvicorn.config import WS_PROTOCOLS

    if _pick("websockets", "ok", "") != "ok":
        return "none"
    return "websockets-sansio" if "websockets-sansio" in WS_PROTOCOLS else "websockets"


def _pick(module: str, good: str, fallback: str) -> str:
    import importlib.util

    return good if importlib.util.find_spec(module) is not None else fallback


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises a caught SIGTERM after its graceful shutdown, which makes the
        process die by the signal; an orderly drain should exit 0, so the signal is consumed."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit and sig == 2:  # a second Ctrl-C: stop waiting
                self.force_exit = True
            else:
                self.should_exit = True

    return Server


def _Server(uv: Any) -> Any:  # noqa: N802 - reads like the class it builds
    return _server_class()(uv)
