"""The model repository: find, load, reload, unload and evict models by name.

Layout of a repository folder::

    <repo>/<name>.onnx                      one version (1); optional <repo>/<name>.toml
    <repo>/<name>/<version>/model.onnx      versions are positive integers; the highest is default
    <repo>/<name>/model.onnx                one version (1)
    <repo>/<name>/config.toml               optional ModelConfig (batching, threads, device ...)

Models named on the command line (files or model folders) are served under their stem or folder
name. Requests name models, never paths: a name must match ``NAME_RE`` and whatever it resolves
to (symlinks included) must lie inside the repository. A model file is size-checked against
``max_model_size_mb`` before it is read.

Reloading builds the new version beside the old one, which keeps serving until the new one is
ready; a failed reload keeps the old one. At most ``model_cache_size`` versions stay loaded: the
least recently used idle one is evicted when another is loaded.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ziggurat.config import Config, ModelConfig
from ziggurat.errors import ConfigError, ZigguratError
from ziggurat.server.errors import HTTPError, Redactor, bad_request, not_found
from ziggurat.server.model import LoadedModel, SessionFactory, ziggurat_session

log = logging.getLogger("ziggurat.server")

# A model name: letters, digits, '_', '-' and single dots, starting with a letter or digit, so a
# name is never a path ("..", "/", a leading dot). The OpenAPI schema states the same rule.
NAME_PATTERN = r"^[A-Za-z0-9](\.?[A-Za-z0-9_\-])*\.?$"
NAME_MAX = 128
NAME_RE = re.compile(NAME_PATTERN)
VERSION_PATTERN = r"^[1-9][0-9]{0,17}$"


def valid_name(name: object) -> bool:
    """``name`` is a model name (never a path)."""
    return isinstance(name, str) and len(name) <= NAME_MAX and NAME_RE.fullmatch(name) is not None


@dataclass
class Entry:
    """Everything the server knows about one model name."""

    name: str
    versions: dict[int, LoadedModel] = field(default_factory=dict)
    state: str = "UNAVAILABLE"  # READY | LOADING | UNAVAILABLE | UNLOADING
    reason: str = ""
    unloaded_by_user: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ModelRepository:
    """Owns every loaded model; all methods run on the event loop."""

    def __init__(
        self,
        config: Config,
        session_factory: SessionFactory | None = None,
        *,
        on_batch: Callable | None = None,
    ):
        self.config = config
        self.factory = session_factory or ziggurat_session
        self.root = Path(config.model_repository).resolve() if config.model_repository else None
        self.explicit: dict[str, Path] = {}  # name -> model file or model folder (CLI)
        self.entries: dict[str, Entry] = {}
        self._on_batch = on_batch
        self._loader = ThreadPoolExecutor(2, thread_name_prefix="zg-load")
        for item in config.models:
            self._add_explicit(Path(item))
        # Load errors name files; clients see them relative to the repository (errors.py).
        self.redact = Redactor([self.root or "", *(p.parent for p in self.explicit.values())])

    def _add_explicit(self, path: Path) -> None:
        path = path.resolve()
        if path.is_file():
            name = path.stem
        elif path.is_dir() and _versions_in(path):
            name = path.name
        elif path.is_dir():
            if self.root is not None and self.root != path:
                raise ConfigError(
                    f"{path} is a folder without versions and a model repository "
                    f"({self.root}) is already set; give one repository"
                )
            self.root = path
            return
        else:
            raise ConfigError(f"model {path} does not exist")
        if not valid_name(name):
            raise ConfigError(f"model name {name!r} (from {path}) must match {NAME_RE.pattern}")
        if name in self.explicit:
            raise ConfigError(f"two models are named {name!r}: {self.explicit[name]} and {path}")
        self.explicit[name] = path

    # -- discovery -----------------------------------------------------------------------------
    def _check_name(self, name: str) -> None:
        if not valid_name(name):
            raise bad_request(
                f"invalid model name {name!r}: use letters, digits, '_', '-', '.' "
                "(a name, not a path)"
            )

    def _inside(self, path: Path) -> bool:
        try:
            return self.root is not None and path.resolve().is_relative_to(self.root)
        except (OSError, RuntimeError):
            return False

    def sources(self, name: str) -> tuple[dict[int, Path], ModelConfig]:
        """Versions on disk for ``name`` and its ModelConfig; 404 when nothing matches."""
        self._check_name(name)
        base: Path | None = self.explicit.get(name)
        trusted = base is not None  # the operator named it on the command line
        if base is None and self.root is not None:
            for cand in (self.root / f"{name}.onnx", self.root / name):
                if cand.exists():
                    base = cand
                    break
        if base is None:
            raise not_found(f"unknown model {name!r}; GET /v2/repository/index lists models")
        if not trusted and not self._inside(base):
            raise bad_request(f"model {name!r} resolves outside the model repository; refused")
        cfg_path = base / "config.toml" if base.is_dir() else base.with_suffix(".toml")
        cfg = ModelConfig.read(cfg_path) if cfg_path.is_file() else ModelConfig()
        if base.is_file():
            return {1: base}, cfg
        versions = _versions_in(base)
        if not trusted:
            versions = {v: p for v, p in versions.items() if self._inside(p)}
        if not versions:
            raise not_found(f"model {name!r} has no model.onnx nor numbered version folders")
        return versions, cfg

    def names(self) -> list[str]:
        """Every model name the server can serve (loaded or on disk)."""
        found = set(self.explicit) | set(self.entries)
        if self.root is not None and self.root.is_dir():
            for p in self.root.iterdir():
                if not self._inside(p):  # a link out of the repository is not a model of it
                    continue
                if p.suffix == ".onnx" and p.is_file() and valid_name(p.stem):
                    found.add(p.stem)
                elif p.is_dir() and valid_name(p.name):
                    if any(self._inside(v) for v in _versions_in(p).values()):
                        found.add(p.name)
        return sorted(found)

    def index(self) -> list[dict[str, Any]]:
        """The V2 repository index: one row per loaded version, one per unloaded model."""
        rows = []
        for name in self.names():
            e = self.entries.get(name)
            if e is not None and e.versions:
                for v in sorted(e.versions):
                    rows.append({"name": name, "version": str(v), "state": "READY", "reason": ""})
            else:
                state = e.state if e is not None else "UNAVAILABLE"
                rows.append({"name": name, "state": state, "reason": e.reason if e else ""})
        return rows

    def loaded(self) -> list[LoadedModel]:
        return [m for e in self.entries.values() for m in e.versions.values()]

    # -- lookup ----------------------------------------------------------------------------------
    def _pick(self, e: Entry, version: str | None, cfg_default: int | None) -> LoadedModel | None:
        if version is None:
            if cfg_default is not None and cfg_default in e.versions:
                return e.versions[cfg_default]
            return e.versions[max(e.versions)] if e.versions else None
        return e.versions.get(_version(version))

    async def get(self, name: str, version: str | None = None) -> LoadedModel:
        """A ready model version; loads it on demand (if allowed); 404/503 otherwise."""
        e = self.entries.get(name)
        if e is not None and e.versions:
            m = self._pick(e, version, None)
            if m is not None:
                m.last_used = time.monotonic()
                return m
        self._check_name(name)
        if version is not None:
            _version(version)
        if e is not None and e.unloaded_by_user:
            raise HTTPError(  # a state of the server, not a fault of the request: 503
                503,
                f"model {name!r} is unloaded; load it first (POST /v2/repository/models/"
                f"{name}/load)",
            )
        if not self.config.load_on_demand:
            self.sources(name)  # 404 for unknown names
            raise HTTPError(
                503,
                f"model {name!r} is not loaded (load_on_demand is off); load it first "
                f"(POST /v2/repository/models/{name}/load)",
            )
        return await self.load(name, version, reload=False)

    def ready(self, name: str, version: str | None = None) -> bool:
        e = self.entries.get(name)
        if e is None or not e.versions:
            return False
        return self._pick(e, version, None) is not None

    # -- load / unload ---------------------------------------------------------------------------
    async def load(
        self, name: str, version: str | None = None, *, reload: bool = True
    ) -> LoadedModel:
        """Load (or with ``reload`` re-load) a version; the old one serves until this is ready."""
        versions, mcfg = self.sources(name)
        v = (
            _version(version)
            if version is not None
            else (mcfg.default_version if mcfg.default_version in versions else max(versions))
        )
        if v not in versions:
            raise not_found(
                f"model {name!r} has no version {v}; versions: {', '.join(map(str, sorted(versions)))}"
            )
        e = self.entries.setdefault(name, Entry(name))
        async with e.lock:
            if not reload and v in e.versions:  # a concurrent on-demand load finished first
                return e.versions[v]
            e.unloaded_by_user = False
            if not e.versions:
                e.state = "LOADING"
            try:
                model = await self._build(name, v, versions[v], mcfg)
            except HTTPError as exc:
                if not e.versions:
                    e.state, e.reason = "UNAVAILABLE", exc.message
                raise
            old = e.versions.get(v)
            e.versions[v] = model
            e.state, e.reason = "READY", ""
            log.info("model %s version %d ready (%s)", name, v, "reloaded" if old else "loaded")
        if old is not None:
            asyncio.get_running_loop().create_task(old.close(self.config.shutdown_timeout_s))
        await self._evict(keep=model)
        return model

    async def _build(self, name: str, version: int, path: Path, mcfg: ModelConfig) -> LoadedModel:
        size = _model_size(path)
        limit = self.config.max_model_size_mb * 1024 * 1024
        if size > limit:
            raise HTTPError(
                400,
                f"model {name!r} is {size / 2**20:.1f} MiB, over max_model_size_mb "
                f"({self.config.max_model_size_mb}); raise the limit to serve it",
            )
        settings = mcfg.resolve(self.config)
        settings["max_size_bytes"] = limit
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        try:
            session = await loop.run_in_executor(self._loader, self.factory, str(path), settings)
        except (ZigguratError, OSError, ValueError) as exc:
            log.warning("model %s version %d failed to load: %s", name, version, exc)
            raise HTTPError(
                400, f"model {name!r} version {version} failed to load: {self.redact(str(exc))}"
            ) from exc
        model = LoadedModel(
            name, version, path, session, settings, size_bytes=size, on_batch=self._on_batch
        )
        model.load_s = time.perf_counter() - t0  # shown by the dashboard
        log.info("model %s v%d built in %.3f s", name, version, model.load_s)
        return model

    async def unload(self, name: str, version: str | None = None) -> None:
        """Unload every version of ``name`` (or one); in-flight requests finish first."""
        self._check_name(name)
        e = self.entries.get(name)
        if e is None or not e.versions:
            if e is None:
                self.sources(name)  # 404 for names that do not exist at all
                e = self.entries.setdefault(name, Entry(name))
            e.unloaded_by_user = True
            return
        async with e.lock:
            if version is None:
                gone = list(e.versions.values())
                e.versions.clear()
            else:
                m = e.versions.pop(_version(version), None)
                if m is None:
                    raise not_found(f"model {name!r} version {version} is not loaded")
                gone = [m]
            if not e.versions:
                e.state, e.unloaded_by_user = "UNAVAILABLE", True
                e.reason = "unloaded"
        for m in gone:
            await m.close(self.config.shutdown_timeout_s)

    async def _evict(self, keep: LoadedModel) -> None:
        loaded = self.loaded()
        excess = len(loaded) - self.config.model_cache_size
        if excess <= 0:
            return
        idle = sorted(
            (m for m in loaded if m is not keep and not m.in_flight), key=lambda m: m.last_used
        )
        for m in idle[:excess]:
            e = self.entries[m.name]
            if e.versions.get(m.version) is m:
                del e.versions[m.version]
                if not e.versions:
                    e.state, e.reason = "UNAVAILABLE", "evicted (model_cache_size)"
                log.info("evicted model %s version %d (least recently used)", m.name, m.version)
                await m.close(self.config.shutdown_timeout_s)

    async def load_startup(self) -> list[str]:
        """Load the command-line models and repository models up to model_cache_size.

        Returns the errors (one line per model that failed); the server stays up regardless.
        """
        names = list(self.explicit)
        if self.root is not None:
            room = max(self.config.model_cache_size - len(names), 0)
            names += [n for n in self.names() if n not in self.explicit][:room]
        errors = []
        for name in names:
            try:
                await self.load(name, reload=False)
            except (HTTPError, ConfigError) as exc:
                msg = getattr(exc, "message", str(exc))
                errors.append(msg)
                self.entries.setdefault(name, Entry(name)).reason = msg
                log.error("model %s failed to load: %s", name, msg)
        return errors

    async def close(self) -> None:
        for m in self.loaded():
            await m.close(self.config.shutdown_timeout_s)
        self.entries.clear()
        self._loader.shutdown(wait=False, cancel_futures=True)


def _version(text: str | int) -> int:
    try:
        v = int(text)
    except (TypeError, ValueError):
        v = -1
    if v < 1 or str(text).strip() != str(v):
        raise bad_request(f"model version must be a positive integer, got {text!r}")
    return v


def _versions_in(folder: Path) -> dict[int, Path]:
    out = {}
    try:
        children = list(folder.iterdir())
    except OSError:
        return {}
    for p in children:
        if p.is_dir() and p.name.isdigit() and int(p.name) > 0 and (p / "model.onnx").is_file():
            out[int(p.name)] = p / "model.onnx"
    if not out and (folder / "model.onnx").is_file():
        out[1] = folder / "model.onnx"
    return out


def _model_size(path: Path) -> int:
    """The model file's size plus, for a file in its own folder, the folder's external data."""
    try:
        size = path.stat().st_size
        if path.name == "model.onnx":
            size = sum(p.stat().st_size for p in path.parent.iterdir() if p.is_file())
        return size
    except OSError as exc:
        raise HTTPError(400, f"model file {path.name} cannot be read: {exc.strerror}") from exc
