"""The dashboard: a static page at ``/`` and ``/dashboard`` plus the JSON it reads.

* ``GET /``, ``GET /dashboard``: ``dashboard/index.html`` (no key needed: the page holds no data;
  the data calls below need the API key when keys are set, which the page asks for).
* ``GET /dashboard/{asset}``: the page's CSS, JavaScript and sample inputs, from the package's
  ``server/dashboard/`` folder, read once. The page links them as ``NAME?v=HASH``: such a URL is
  cached for a year (``immutable``); the page itself is revalidated (ETag, 304) on every visit.
* ``GET /api/v1/dashboard/models``: every model and version with state, device, precision,
  memory, inputs/outputs, load time, per-model counters, latency percentiles and batch sizes.
* ``GET /api/v1/dashboard/events``: the live metrics as server-sent events (dashboard_events.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ziggurat.server.errors import HTTPError
from ziggurat.server.http import Request, Response, json_response
from ziggurat.server.routing import Route

if TYPE_CHECKING:
    from ziggurat.server.app import ZigguratApp
    from ziggurat.server.model import LoadedModel

STATIC_DIR = Path(__file__).resolve().parent / "dashboard"
EVENTS_PATH = "/api/v1/dashboard/events"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
# The page runs only its own files: no inline script, no third-party origin, no framing.
PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
_ASSET_RE = re.compile(r"^[a-z0-9_\-]+\.[a-z]+$")
_LABEL_KEYS = ("labels", "classes", "class_labels")
# Routes whose requests are inferences: the dashboard's request and error counts.
INFER_ROUTES = frozenset({"v1_infer", "v1_batch", "v2_infer", "v1_stream"})


class _Asset:
    __slots__ = ("body", "content_type", "etag")

    def __init__(self, body: bytes, content_type: str):
        self.body = body
        self.content_type = content_type
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


_assets: dict[str, _Asset] | None = None


def assets() -> dict[str, _Asset]:
    """Every file of ``dashboard/`` by name, read once; index.html links the others by hash."""
    global _assets
    if _assets is None:
        found: dict[str, _Asset] = {}
        for p in sorted(STATIC_DIR.iterdir()):
            if p.is_file() and p.suffix in CONTENT_TYPES and _ASSET_RE.match(p.name):
                found[p.name] = _Asset(p.read_bytes(), CONTENT_TYPES[p.suffix])
        index = found.get("index.html")
        if index is None:
            raise RuntimeError(f"the dashboard's index.html is missing from {STATIC_DIR}")
        html = index.body.decode()
        for name, a in found.items():  # NAME?v=HASH: a changed file is a new URL
            html = html.replace(f'"/dashboard/{name}"', f'"/dashboard/{name}?v={a.etag[1:9]}"')
        found["index.html"] = _Asset(html.encode(), index.content_type)
        _assets = found
    return _assets


def _serve(req: Request, a: _Asset, cache: str) -> Response:
    headers = {"etag": a.etag, "cache-control": cache, **PAGE_HEADERS}
    if req.headers.get("if-none-match") == a.etag:
        return Response(b"", 304, a.content_type, headers)
    return Response(a.body, 200, a.content_type, headers)


async def page(app: ZigguratApp, req: Request) -> Response:
    """``GET /`` and ``GET /dashboard``: the dashboard page."""
    return _serve(req, assets()["index.html"], "no-cache")


async def asset(app: ZigguratApp, req: Request, asset: str) -> Response:
    """``GET /dashboard/{asset}``: one of the page's files."""
    a = assets().get(asset) if asset != "index.html" else None
    if a is None:
        raise HTTPError(404, f"no dashboard file {asset!r}")
    versioned = req.query().get("v") == a.etag[1:9]
    return _serve(req, a, "public, max-age=31536000, immutable" if versioned else "no-cache")


def labels_of(session: Any) -> list[str] | None:
    """Class labels from the model's metadata (``labels``: a JSON list or comma-separated)."""
    try:
        meta = session.get_modelmeta().custom_metadata_map
    except Exception:  # a session without metadata (test factories): no labels
        return None
    for key in _LABEL_KEYS:
        text = meta.get(key)
        if not text:
            continue
        try:
            val = json.loads(text)
        except ValueError:
            val = [s.strip() for s in text.split(",")]
        if isinstance(val, list):
            return [str(v) for v in val]
    return None


def _description(session: Any) -> str:
    try:
        m = session.get_modelmeta()
        return m.graph_description or m.description or ""
    except Exception:
        return ""


def _device(m: LoadedModel) -> str:
    try:
        provider = m.session.get_providers()[0]
    except Exception:
        return "cpu"
    return {"CUDAExecutionProvider": "cuda", "WebGpuExecutionProvider": "webgpu"}.get(
        provider, "cpu"
    )


def model_row(m: LoadedModel, http: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """One loaded version as the dashboard's models table shows it; ``http``: the inference
    requests and errors answered for its name (all versions, rejected requests included)."""
    s = m.stats
    pct = s.percentiles()
    return {
        "name": m.name,
        "version": str(m.version),
        "state": "READY",
        "device": _device(m),
        "precision": m.settings.get("precision", "fp32"),
        "memory_bytes": m.size_bytes,
        "inputs": [sp.v2() for sp in m.inputs],
        "outputs": [sp.v2() for sp in m.outputs],
        "loaded_at": m.loaded_at,
        "load_s": getattr(m, "load_s", None),
        "requests": http[0],
        "errors": http[1],
        "runs": s.executions,
        "in_flight": m.in_flight,
        "pending": m.scheduler.pending,
        "p50_ms": pct["p50_ms"],
        "p99_ms": pct["p99_ms"],
        "batch_sizes": {str(k): v[0] for k, v in sorted(s.batches.items())},
        "max_batch_size": m.max_batch_size,
        "labels": labels_of(m.session),
        "description": _description(m.session),
    }


def overview(app: ZigguratApp) -> list[dict[str, Any]]:
    """Every model the server can serve: a row per loaded version, one per unloaded model."""
    rows = []
    http: dict[str, tuple[int, int]] = {}
    for (route, model, status), n in list(app.metrics.requests.items()):
        if route in INFER_ROUTES and model:
            req, err = http.get(model, (0, 0))
            http[model] = (req + n, err + (n if status >= 400 else 0))
    for name in app.repo.names():
        e = app.repo.entries.get(name)
        if e is not None and e.versions:
            rows += [model_row(m, http.get(name, (0, 0))) for _, m in sorted(e.versions.items())]
        else:
            rows.append(
                {
                    "name": name,
                    "state": e.state if e else "UNAVAILABLE",
                    "reason": e.reason if e else "not loaded",
                }
            )
    return rows


async def models(app: ZigguratApp, req: Request) -> Response:
    """``GET /api/v1/dashboard/models``: the models table's data."""
    return json_response({"models": overview(app), "auth": app.auth.enabled})


ROUTES: list[Route] = [
    Route("GET", "/", page, "dashboard", public=True),
    Route("GET", "/dashboard", page, "dashboard", public=True),
    Route("GET", "/dashboard/{asset}", asset, "dashboard", public=True),
    Route("GET", "/api/v1/dashboard/models", models, "dashboard"),
]
