"""Every Ziggurat setting in one place: file (TOML) < environment (``ZIGGURAT_*``) < CLI flags.

``Config`` holds the server, model-repository, engine, batching, auth and CORS settings. Build one
with :meth:`Config.load`, which reads an optional TOML file, then ``ZIGGURAT_<FIELD>`` environment
variables, then explicit overrides (the CLI flags), validating every value on the way::

    cfg = Config.load("ziggurat.toml", overrides={"server_port": 9000})

A TOML file may set fields at its top level or inside any table (``[server]``, ``[batching]`` ...):
tables only group keys, every key must be a field name. ``ModelConfig`` is the per-model
``config.toml`` that lives next to a model in the repository; its unset fields fall back to the
server-wide ``Config``.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ziggurat.errors import ConfigError

ENV_PREFIX = "ZIGGURAT_"
OPT_LEVELS = ("disable", "basic", "extended", "all")
# auto: CUDA when enable_gpu and a CUDA GPU is present; gpu: CUDA, else Vulkan; cuda; vulkan; cpu
DEVICES = ("auto", "cpu", "gpu", "cuda", "vulkan")
PRECISIONS = ("fp32", "bf16", "fp16")  # runtime.options.PRECISIONS (a test keeps them equal)


@dataclass(frozen=True)
class Config:
    """Server-wide settings. Each field is also ``ZIGGURAT_<NAME>`` and a ``serve`` flag."""

    # --- server
    host: str = "127.0.0.1"
    server_port: int = 8080
    max_connections: int = 1000  # concurrent requests + streams; beyond it: 503 + Retry-After
    request_timeout_ms: int = 30000  # whole request, queueing included; beyond it: 504
    max_body_mb: float = 64.0  # request bodies and stream messages; beyond it: 413
    max_request_memory_mb: float = 2048.0  # input + output tensors of a request or batch call; 413
    shutdown_timeout_s: float = 30.0  # bounded drain of in-flight work on SIGTERM/SIGINT
    access_log: bool = True  # one JSON line per request on stdout
    log_level: str = "info"
    # --- model repository
    model_repository: str | None = None
    models: tuple[str, ...] = ()  # model files or folders to serve (CLI positional arguments)
    max_model_size_mb: int = 1024  # checked before a model file is read
    model_cache_size: int = 5  # loaded models kept; the least recently used idle one is evicted
    load_on_demand: bool = True  # an infer for a repository model that is not loaded loads it
    # --- engine
    enable_gpu: bool = True  # used when a GPU is present
    gpu_memory_mb: int = 2048
    device: str = "auto"  # where models run by default (DEVICES); a model's config.toml overrides
    cpu_threads: int | None = None  # intra-op threads per model; None = all cores
    inter_op_threads: int | None = None
    graph_optimization_level: str = "all"
    enable_fusion: bool = True
    enable_quantization: bool = False
    precision: str = "fp32"  # fp32 | bf16 (bf16 weights and GEMMs; CPUs with AVX512-BF16/AMX)
    model_concurrency: int = 1  # runs of one model in parallel
    inline_run_us: int = 250  # runs averaging less than this skip the worker thread; 0: never
    # --- dynamic batching (defaults for every model; a model's config.toml overrides)
    max_batch_size: int = 0  # 0 or 1: off; > 1: stack concurrent requests up to this many rows
    max_queue_delay_us: int = 0  # extra wait for a fuller batch; 0 = batch what is already queued
    max_queue_size: int = 1024  # requests waiting per model; beyond it: 503
    # --- auth, CORS, streaming
    api_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    cors_allow_credentials: bool = False
    stream_max_in_flight: int = 64  # requests in flight per WebSocket before reading pauses

    @classmethod
    def load(
        cls,
        path: str | os.PathLike | None = None,
        *,
        env: dict[str, str] | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> Config:
        """Build a Config from ``path`` (TOML) < ``env`` (default ``os.environ``) < ``overrides``.

        ``overrides`` entries that are None are ignored, so unset CLI flags can be passed as is.
        """
        values: dict[str, Any] = {}
        if path is not None:
            values.update(_read_toml(Path(path), _field_types(cls)))
        values.update(_from_env(os.environ if env is None else env, _field_types(cls)))
        for key, value in (overrides or {}).items():
            if value is None:
                continue
            values[key] = _coerce(key, value, _field_types(cls), "command line")
        return cls.from_dict(values, source="settings")

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "settings") -> Config:
        """A Config from field values (already parsed), validated."""
        types = _field_types(cls)
        clean = {k: _coerce(k, v, types, source) for k, v in values.items()}
        cfg = cls(**clean)
        cfg.validate()
        return cfg

    def with_(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied and validated."""
        cfg = replace(self, **changes)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ConfigError for values no server can run with."""
        _positive(self, "server_port", "max_connections", "request_timeout_ms", "max_body_mb")
        _positive(self, "max_request_memory_mb")
        _positive(self, "max_model_size_mb", "model_cache_size", "model_concurrency")
        _positive(self, "max_queue_size", "stream_max_in_flight", "gpu_memory_mb")
        if self.device not in DEVICES and not _test_device(self.device):
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if not 0 < self.server_port < 65536:
            raise ConfigError(f"server_port must be 1..65535, got {self.server_port}")
        for name in ("max_batch_size", "max_queue_delay_us", "shutdown_timeout_s", "inline_run_us"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("cpu_threads", "inter_op_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 or unset (all cores), got {value}")
        if self.graph_optimization_level not in OPT_LEVELS:
            raise ConfigError(
                f"graph_optimization_level must be one of {', '.join(OPT_LEVELS)}, "
                f"got {self.graph_optimization_level!r}"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if "*" in self.cors_origins and self.cors_allow_credentials:
            raise ConfigError(
                "cors_origins '*' cannot be combined with cors_allow_credentials: browsers "
                "refuse it and it would expose credentials to every site; list the origins"
            )
        if any(not k for k in self.api_keys):
            raise ConfigError("api_keys contains an empty key; remove it")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


@dataclass(frozen=True)
class ModelConfig:
    """Per-model settings from ``<repo>/<name>/config.toml``; None falls back to ``Config``."""

    max_batch_size: int | None = None
    max_queue_delay_us: int | None = None
    max_queue_size: int | None = None
    cpu_threads: int | None = None
    inter_op_threads: int | None = None
    graph_optimization_level: str | None = None
    concurrency: int | None = None
    device: str = "auto"  # auto: GPU when enable_gpu and one is present; cpu; gpu
    precision: str | None = None  # fp32 | bf16; None: the server's
    enable_quantization: bool | None = None  # int8 MatMul/Gemm weights at load; None: the server's
    default_version: int | None = None  # the version served when a request names none
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> ModelConfig:
        """Parse a model's config.toml; ConfigError names the file and the bad key."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{path}: not a readable TOML file ({e})") from e
        data = _flatten(data, path)
        types = _field_types(cls)
        types.pop("extra")
        values = {k: _coerce(k, v, types, str(path)) for k, v in data.items()}
        cfg = cls(**values)
        if cfg.device not in DEVICES and not _test_device(cfg.device):
            raise ConfigError(f"{path}: device must be one of {', '.join(DEVICES)}")
        if cfg.graph_optimization_level not in (None, *OPT_LEVELS):
            raise ConfigError(f"{path}: graph_optimization_level must be one of {OPT_LEVELS}")
        if cfg.precision not in (None, *PRECISIONS):
            raise ConfigError(f"{path}: precision must be one of {', '.join(PRECISIONS)}")
        for name in ("max_batch_size", "max_queue_delay_us"):
            if (getattr(cfg, name) or 0) < 0:
                raise ConfigError(f"{path}: {name} must be >= 0")
        for name in ("max_queue_size", "cpu_threads", "inter_op_threads", "concurrency"):
            if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
                raise ConfigError(f"{path}: {name} must be >= 1")
        return cfg

    def resolve(self, base: Config) -> dict[str, Any]:
        """The effective settings for one model: this file's values over the server's."""

        def pick(mine: Any, theirs: Any) -> Any:
            return theirs if mine is None else mine

        return {
            "max_batch_size": pick(self.max_batch_size, base.max_batch_size),
            "max_queue_delay_us": pick(self.max_queue_delay_us, base.max_queue_delay_us),
            "max_queue_size": pick(self.max_queue_size, base.max_queue_size),
            "cpu_threads": pick(self.cpu_threads, base.cpu_threads),
            "inter_op_threads": pick(self.inter_op_threads, base.inter_op_threads),
            "graph_optimization_level": pick(
                self.graph_optimization_level, base.graph_optimization_level
            ),
            "concurrency": pick(self.concurrency, base.model_concurrency),
            "inline_run_us": base.inline_run_us,
            "device": base.device if self.device == "auto" else self.device,
            "enable_gpu": base.enable_gpu,
            "enable_fusion": base.enable_fusion,
            "enable_quantization": pick(self.enable_quantization, base.enable_quantization),
            "precision": pick(self.precision, base.precision),
            "gpu_memory_mb": base.gpu_memory_mb,
        }


def _test_device(kind: str) -> bool:
    """A device kind registered at run time (the fake test device), never a user setting."""
    from .backends import device

    return kind in device.PROVIDERS.values() and kind not in ("cpu", "cuda", "vulkan")


# ----------------------------------------------------------------------------- parsing helpers


def _field_types(cls: type) -> dict[str, str]:
    return {f.name: str(f.type) for f in fields(cls)}


def _unknown(key: str, types: dict[str, str], source: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(types), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(types))}"
    return ConfigError(f"{source}: unknown setting {key!r}{hint}")


def _coerce(key: str, value: Any, types: dict[str, str], source: str) -> Any:
    """Convert ``value`` (TOML value, env string or flag value) to the field's type."""
    if key not in types:
        raise _unknown(key, types, source)
    kind = types[key]
    optional = "None" in kind
    try:
        if isinstance(value, str) and optional and value.strip().lower() in ("", "none", "auto"):
            return None
        if value is None:
            if optional:
                return None
            raise ValueError("a value is required")
        if kind.startswith("tuple"):
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",")]
            if not isinstance(value, list | tuple):
                raise ValueError("expected a list")
            return tuple(str(v) for v in value if str(v) != "")
        if kind.startswith("bool"):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if kind.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected an integer")
            return int(value)
        if kind.startswith("float"):
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if kind.startswith("str"):
            if not isinstance(value, str | int | float):
                raise ValueError("expected a string")
            return str(value)
        if kind.startswith("dict"):
            return dict(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: {key} = {value!r} is invalid ({e}; type {kind})") from e
    return value


def _flatten(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """Tables only group keys: ``[server] port = 1`` is ``port = 1``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        items = value.items() if isinstance(value, dict) else [(key, value)]
        for k, v in items:
            if isinstance(v, dict):
                raise ConfigError(f"{path}: table nesting is one level deep at most ({key}.{k})")
            if k in flat:
                raise ConfigError(f"{path}: {k} is set twice")
            flat[k] = v
    return flat


def _read_toml(path: Path, types: dict[str, str]) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"config file {path} does not exist") from e
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"config file {path} is not readable TOML: {e}") from e
    flat = _flatten(data, path)
    return {k: _coerce(k, v, types, str(path)) for k, v in flat.items()}


def _from_env(env: dict[str, str], types: dict[str, str]) -> dict[str, Any]:
    out = {}
    for name in types:
        key = ENV_PREFIX + name.upper()
        if key in env:
            out[name] = _coerce(name, env[key], types, f"environment {key}")
    return out


def _positive(cfg: Config, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{name} must be > 0, got {getattr(cfg, name)}")


def env_name(field_name: str) -> str:
    """The environment variable that sets ``field_name``."""
    return ENV_PREFIX + field_name.upper()


def describe_fields() -> list[tuple[str, str, Any]]:
    """(name, type, default) of every Config field, for ``--help`` and docs."""
    return [(f.name, str(f.type), f.default) for f in fields(Config)]
