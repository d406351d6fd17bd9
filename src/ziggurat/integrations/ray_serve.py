"""Ziggurat as a Ray Serve application: N replicas of the server behind Ray's HTTP proxy.

Each replica is the whole Ziggurat ASGI app (``/api/v1``, ``/v2``, WebSocket, ``/metrics``, the
dashboard) with its own copies of the models, its own dynamic-batching queues and its own
metrics; replicas read the model repository by path (a shared volume on a multi-node cluster).

Three ways in:

- ``ziggurat serve --replicas 2 [MODEL_OR_DIR ...]`` starts a local Ray for the run (every Ray
  process on the loopback address), deploys, serves until SIGTERM/SIGINT, then stops Serve and
  Ray in-process; ``--ray-address ADDR`` deploys on an existing cluster instead.
- ``serve run ziggurat.integrations.ray_serve:build model_repository=/models num_replicas=2``:
  :func:`build` is a Ray application builder; every ``key=value`` is a :class:`ScaleOptions`
  field or a :class:`ziggurat.config.Config` field.
- ``serve deploy deploy/ray/serve_config.yaml``: the same builder from a Serve config file.

Ray is an optional extra (``pip install 'ziggurat[ray]'``), imported on first use only.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass, fields
from typing import Any

from ziggurat.config import Config
from ziggurat.errors import ConfigError

APP_NAME = "ziggurat"
DEPLOYMENT_NAME = "Ziggurat"
INSTALL_HINT = "pip install 'ziggurat[ray]'"
# Parent folder of the local cluster's session files (default: the system's temp folder).
TEMP_DIR_ENV = "ZIGGURAT_RAY_TEMP_DIR"
log = logging.getLogger("ziggurat.ray")


@dataclass(frozen=True)
class ScaleOptions:
    """How many replicas, how they autoscale, and what each one gets.

    ``min_replicas``/``max_replicas`` turn on Ray Serve's autoscaling (``num_replicas`` is then
    the initial count); ``target_ongoing_requests`` is the per-replica load it aims at.
    ``max_ongoing_requests`` bounds what Ray hands one replica at once: it must exceed a
    model's ``max_batch_size`` for dynamic batching to fill batches.
    """

    num_replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing_requests: float = 2.0
    num_cpus_per_replica: float = 1.0
    max_ongoing_requests: int = 100

    def __post_init__(self) -> None:
        if self.num_replicas < 1:
            raise ConfigError(f"num_replicas must be >= 1, got {self.num_replicas}")
        if self.num_cpus_per_replica <= 0:
            raise ConfigError(f"num_cpus_per_replica must be > 0, got {self.num_cpus_per_replica}")
        if self.target_ongoing_requests <= 0 or self.max_ongoing_requests < 1:
            raise ConfigError("target_ongoing_requests must be > 0 and max_ongoing_requests >= 1")
        lo, hi = self.min_replicas, self.max_replicas
        if (lo is not None and lo < 0) or (hi is not None and hi < 1):
            raise ConfigError(f"need min_replicas >= 0 and max_replicas >= 1, got {lo}, {hi}")
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(f"min_replicas ({lo}) is larger than max_replicas ({hi})")

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None or self.max_replicas is not None

    @property
    def most_replicas(self) -> int:
        return max(self.num_replicas, self.max_replicas or 0)

    def deployment_options(self, cfg: Config) -> dict[str, Any]:
        """Keyword arguments of ``serve.deployment`` for these options."""
        opts: dict[str, Any] = {
            "ray_actor_options": {"num_cpus": self.num_cpus_per_replica},
            "max_ongoing_requests": self.max_ongoing_requests,
            "graceful_shutdown_timeout_s": cfg.shutdown_timeout_s,
            # Ziggurat writes its own access log (access_log); Serve's would double it.
            "logging_config": {"log_level": cfg.log_level.upper(), "enable_access_log": False},
        }
        if not self.autoscaling:
            opts["num_replicas"] = self.num_replicas
            return opts
        lo = self.min_replicas if self.min_replicas is not None else 1
        hi = self.max_replicas if self.max_replicas is not None else max(lo, self.num_replicas)
        opts["autoscaling_config"] = {
            "min_replicas": lo,
            "max_replicas": hi,
            "initial_replicas": min(max(self.num_replicas, lo), hi),
            "target_ongoing_requests": self.target_ongoing_requests,
        }
        return opts


SCALE_KEYS = {f.name for f in fields(ScaleOptions)}


def replica_config(cfg: Config, scale: ScaleOptions) -> Config:
    """``cfg`` for one replica: model paths made absolute (a replica's working folder is
    Ray's, not the caller's) and, unless set, BLAS/oneDNN threads following the replica's
    CPUs, so replicas on one node do not each spin a thread per core against each other."""
    changes: dict[str, Any] = {"models": tuple(os.path.abspath(m) for m in cfg.models)}
    if cfg.model_repository:
        changes["model_repository"] = os.path.abspath(cfg.model_repository)
    if cfg.cpu_threads is None:
        changes["cpu_threads"] = max(1, int(scale.num_cpus_per_replica))
    return cfg.with_(**changes)


def _replica_app_class() -> type:
    from ziggurat.server.app import ZigguratApp

    class ReplicaApp(ZigguratApp):
        """The server app whose ASGI startup completes only once the startup models are
        loaded: Ray routes requests to a replica as soon as its startup completes."""

        async def startup(self, wait: bool = False) -> None:
            await super().startup(wait=True)

    return ReplicaApp


def _replica_grpc_on_loopback() -> None:
    """On a node whose Ray address is loopback, bind the replica's inter-deployment gRPC
    server to loopback too: Ray Serve 2.5x binds it to ``[::]`` (every interface) whatever the
    node's address, which would open a port to the network from a cluster that is local by
    design. Runs in the replica before Serve starts that server; a Ray without the hook is
    left as it is."""
    import ipaddress

    import ray
    from ray.serve._private import replica

    if not ipaddress.ip_address(ray.util.get_node_ip_address()).is_loopback:
        return
    original = getattr(replica, "add_port_to_grpc_server", None)
    if original is None or getattr(original, "loopback_only", False):
        return

    def add_port(server: Any, address: str) -> Any:
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address[len("[::]:") :]
        return original(server, address)

    add_port.loopback_only = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = add_port


def application(cfg: Config, scale: ScaleOptions | None = None) -> Any:
    """The Ray Serve application (``serve.run`` it) serving ``cfg`` with ``scale`` replicas."""
    from ray import serve

    scale = scale or ScaleOptions()
    per_replica = replica_config(cfg, scale)

    # serve.ingress takes a builder function (called in each replica) rather than an app
    # instance: a bare ASGI callable would be pickled with its loaded state, or taken for a
    # zero-argument builder. The closure carries the (picklable) Config to the replicas.
    def build_asgi_app() -> Any:
        return _replica_app_class()(per_replica)

    @serve.ingress(build_asgi_app)
    class Ziggurat:
        """One replica of the Ziggurat server."""

        def __init__(self) -> None:
            _replica_grpc_on_loopback()

    deployment = serve.deployment(Ziggurat, name=DEPLOYMENT_NAME)
    return deployment.options(**scale.deployment_options(cfg)).bind()


def split_args(args: dict[str, Any]) -> tuple[Config, ScaleOptions]:
    """(Config, ScaleOptions) from builder arguments; strings are parsed (``serve run k=v``)."""
    scale_kw: dict[str, Any] = {}
    types = {f.name: f.type for f in fields(ScaleOptions)}
    overrides = {}
    for key, value in args.items():
        if key not in SCALE_KEYS:
            overrides[key] = value
            continue
        if isinstance(value, str):
            kind = str(types[key])
            if value.strip().lower() in ("", "none") and "None" in kind:
                value = None
            else:
                try:
                    value = float(value) if kind.startswith("float") else int(value)
                except ValueError:
                    raise ConfigError(f"{key} must be a number, got {value!r}") from None
        scale_kw[key] = value
    return Config.load(overrides=overrides), ScaleOptions(**scale_kw)


def build(args: dict[str, Any]) -> Any:
    """Ray Serve application builder: ``serve run ziggurat.integrations.ray_serve:build
    model_repository=/models num_replicas=2`` or ``import_path`` in a Serve config file.

    Keys are :class:`ScaleOptions` and :class:`ziggurat.config.Config` field names; settings not
    given come from ``ZIGGURAT_*`` environment variables, then the defaults.
    """
    cfg, scale = split_args(dict(args))
    if not cfg.models and not cfg.model_repository:
        raise ConfigError(
            "no model to serve: pass model_repository=/path (or models=a.onnx,b.onnx)"
        )
    return application(cfg, scale)


# -- `ziggurat serve --replicas N` ---------------------------------------------------------------


def scale_from_args(args: argparse.Namespace) -> ScaleOptions:
    kw = {
        "num_replicas": args.replicas,
        "min_replicas": args.min_replicas,
        "max_replicas": args.max_replicas,
        "target_ongoing_requests": args.target_ongoing_requests,
        "num_cpus_per_replica": args.num_cpus_per_replica,
    }
    return ScaleOptions(**{k: v for k, v in kw.items() if v is not None})


def _local_ray_env() -> None:
    """Environment for a local cluster, set before ``ray`` is imported (its constants read it
    at import) and inherited by every Ray process."""
    import secrets

    # On Linux Ray resolves 127.0.0.1 to the outbound interface's address; this makes it keep
    # the loopback address (as it does on macOS), so no Ray port faces the network.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Ray >= 2.5x turns token auth on for new clusters and writes the token to ~/.ray; a
    # one-run random token in the environment keeps auth on without writing to $HOME.
    if "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = "token"
        if not os.environ.get("RAY_AUTH_TOKEN") and not os.environ.get("RAY_AUTH_TOKEN_PATH"):
            os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from a server


def _start_ray(scale: ScaleOptions, address: str | None) -> str | None:
    """Connect to ``address`` or start a local Ray; returns the local session folder."""
    import math
    import shutil
    import tempfile

    if address:
        import ray

        ray.init(address=address, logging_level=logging.WARNING)
        return None
    if "ray" in sys.modules and "RAY_AUTH_MODE" not in os.environ:
        raise ConfigError(
            "Ray was imported before its local cluster's environment was set; "
            "start the server before importing ray, or set RAY_AUTH_MODE"
        )
    _local_ray_env()
    import ray

    need = math.ceil(scale.most_replicas * scale.num_cpus_per_replica)
    cores = os.cpu_count() or 1
    if need > cores:
        log.warning(
            "%d replicas x %g CPUs exceed this machine's %d cores; replicas will share them",
            scale.most_replicas,
            scale.num_cpus_per_replica,
            cores,
        )
    parent = os.environ.get(TEMP_DIR_ENV) or tempfile.gettempdir()
    # Ray puts Unix sockets ~64 bytes below it (session_<date>_<pid>/sockets/plasma_store), and
    # their paths are limited to 107 bytes.
    if len(os.path.abspath(parent)) > 107 - 64 - len("/zgray-12345678"):
        raise ConfigError(
            f"{TEMP_DIR_ENV} / the temp folder {parent!r} is too long for Ray's Unix sockets "
            f"(107-byte paths); set {TEMP_DIR_ENV} to a short folder such as /tmp"
        )
    temp_dir = tempfile.mkdtemp(prefix="zgray-", dir=parent)
    try:
        ray.init(
            address="local",  # never attach to a cluster found on the machine by surprise
            num_cpus=max(cores, need),
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            _temp_dir=temp_dir,
            logging_level=logging.WARNING,
        )
    except BaseException:
        ray.shutdown()  # whatever it started before failing
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return temp_dir


def serve_cluster(cfg: Config, scale: ScaleOptions, address: str | None = None) -> int:
    """Deploy ``cfg`` through Ray Serve and serve until SIGTERM/SIGINT (``ziggurat serve
    --replicas N``). A local cluster started here is stopped here; on ``address`` only this
    application is deleted. Returns the process exit status."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        print(f"error: --replicas/--ray-address need Ray Serve: {INSTALL_HINT}", file=sys.stderr)
        return 2
    logging.basicConfig(level=cfg.log_level.upper(), stream=sys.stderr)
    try:
        if not address:  # checked before starting Ray: its proxy would retry a taken port
            _check_port_free(cfg.host, cfg.server_port)
        temp_dir = _start_ray(scale, address)  # before `import ray`: it sets Ray's environment
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    from ray import serve

    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        quiet = {"log_level": "WARNING" if cfg.log_level != "debug" else "DEBUG"}
        logging.getLogger("ray.serve").setLevel(quiet["log_level"])
        serve.start(
            proxy_location="HeadOnly",
            http_options={"host": cfg.host, "port": cfg.server_port},
            logging_config={**quiet, "enable_access_log": False},
        )
        serve.run(application(cfg, scale), name=APP_NAME, route_prefix="/")
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        print(
            f"ziggurat: {scale.num_replicas} replica(s) through Ray Serve at "
            f"http://{host}:{cfg.server_port}/",
            file=sys.stderr,
            flush=True,
        )
        stop.wait()
        return 0
    finally:
        _stop_ray(address, temp_dir)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn and Ray's proxy
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port "
                "or stop what uses it"
            ) from None


def _stop_ray(address: str | None, temp_dir: str | None) -> None:
    import shutil

    import ray
    from ray import serve

    try:
        if address:
            serve.delete(APP_NAME)  # someone else's cluster: remove only what we deployed
        else:
            serve.shutdown()
    finally:
        ray.shutdown()  # stops the processes of a cluster this driver started
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
