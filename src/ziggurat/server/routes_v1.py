"""Ziggurat's own /api/v1 routes (/metrics is in metrics.py, /openapi.json and /docs in openapi.py).

``POST /api/v1/infer`` takes ``{"model", "version"?, "id"?, "inputs": [V2 tensors],
"outputs"?: [names]}`` (the V2 binary extension works here too) and answers like V2 infer.
``POST /api/v1/batch`` takes ``{"model", "version"?, "requests": [{"id"?, "inputs", "outputs"?}]}``
and answers ``{"results": [...]}`` with a result or an ``error`` + ``status`` per item; items run
stacked through the model's scheduler where shapes allow.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import ziggurat
from ziggurat.server import codecs, inference
from ziggurat.server.errors import bad_request
from ziggurat.server.http import Request, Response, json_response
from ziggurat.server.routing import Route

if TYPE_CHECKING:
    from ziggurat.server.app import ZigguratApp

MAX_BATCH_ITEMS = 4096


async def infer(app: ZigguratApp, req: Request) -> Response:
    body = await req.body()
    obj, binary = inference.parse(body, req.headers.get("inference-header-content-length"))
    if isinstance(obj, dict) and isinstance(obj.get("model"), str):
        req.model = obj["model"]
    return (await inference.infer(app, obj, binary)).http()


async def batch(app: ZigguratApp, req: Request) -> Response:
    obj = await req.json()
    if not isinstance(obj, dict):
        raise bad_request("the request body must be a JSON object")
    name = obj.get("model")
    if not isinstance(name, str) or not name:
        raise bad_request('"model" (the model name) is required')
    req.model = name
    items = obj.get("requests")
    if not isinstance(items, list) or not items:
        raise bad_request('"requests" must be a non-empty list of {"inputs": [...]} objects')
    if len(items) > MAX_BATCH_ITEMS:
        raise bad_request(f"{len(items)} requests in one batch; the maximum is {MAX_BATCH_ITEMS}")
    version = codecs.version_text(obj.get("version"))
    m = await app.repo.get(name, version)  # 404/400 for the whole call, before any item runs
    # Decode and check every item first: the call's memory is known before anything runs.
    prepared = []
    for i, item in enumerate(items):
        try:
            prepared.append(
                await inference.prepare(app, item, model=name, version=version, json_only=True)
            )
        except Exception as exc:
            prepared.append(_failure(app, req.id, i, exc))
    nbytes = sum(p.nbytes for p in prepared if isinstance(p, inference.Prepared))
    inference.check_budget(app, nbytes, f"this batch of {len(items)} requests")
    group = object()  # items of this call may stack together even without dynamic batching
    results = await asyncio.gather(
        *(_one(app, req.id, p, i, group) for i, p in enumerate(prepared))
    )
    for item, r in zip(items, results):
        if isinstance(item, dict) and item.get("id") is not None:
            r["id"] = item["id"]
    nonfinite = any(r.pop("_nf", False) for r in results)
    body = {"model_name": m.name, "model_version": str(m.version), "results": results}
    return Response(codecs.dumps(body, nonfinite=nonfinite), 200, "application/json")


def _failure(app: ZigguratApp, rid: str, i: int, exc: Exception) -> dict[str, Any]:
    """A batch item's own error (status + message); the other items still run."""
    status, message = app.describe_error(exc, f"{rid}/{i}", "batch item")
    return {"error": message, "status": status, "index": i}


async def _one(app: ZigguratApp, rid: str, p: Any, i: int, group: object) -> dict[str, Any]:
    """Run one prepared batch item through the shared path."""
    if not isinstance(p, inference.Prepared):
        return p  # it failed to decode or check
    try:
        enc = await inference.run(p, group=group)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return _failure(app, rid, i, exc)
    return {"outputs": enc.head["outputs"], "_nf": enc.nonfinite, "index": i}


async def list_models(app: ZigguratApp, req: Request) -> Response:
    models = []
    for name in app.repo.names():
        e = app.repo.entries.get(name)
        if e is not None and e.versions:
            models += [m.summary() for _, m in sorted(e.versions.items())]
        else:
            models.append(
                {
                    "name": name,
                    "state": e.state if e else "UNAVAILABLE",
                    "reason": e.reason if e else "",
                }
            )
    return json_response({"models": models})


def _name_version(obj: Any) -> tuple[str, str | None]:
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), str):
        raise bad_request('the body must be {"model": NAME, "version"?: V}')
    return obj["model"], codecs.version_text(obj.get("version"))


async def load(app: ZigguratApp, req: Request) -> Response:
    name, version = _name_version(await req.json())
    req.model = name
    t0 = time.perf_counter()
    m = await app.repo.load(name, version)
    return json_response(
        {
            "model": m.name,
            "version": str(m.version),
            "state": "READY",
            "load_ms": round((time.perf_counter() - t0) * 1e3, 1),
        }
    )


async def unload(app: ZigguratApp, req: Request) -> Response:
    name, version = _name_version(await req.json())
    req.model = name
    await app.repo.unload(name, version)
    return json_response({"model": name, "state": "UNAVAILABLE"})


async def health(app: ZigguratApp, req: Request) -> Response:
    ready = app.is_ready()
    loaded = app.repo.loaded()
    body = {
        "status": (
            "loading"
            if not app.ready_event.is_set()
            else "degraded"
            if app.startup_errors or not ready
            else "ok"
        ),
        "live": True,
        "ready": ready,
        "version": ziggurat.__version__,
        # Which process answered, behind a load balancer or Ray Serve (stats are per process).
        "replica": f"{socket.gethostname()}:{os.getpid()}",
        "uptime_s": round(time.time() - app.started, 3),
        "models_ready": len(loaded),
        "models": {e.name: e.state for e in app.repo.entries.values()},
        "errors": app.startup_errors,
    }
    return json_response(body, 200 if ready else 503)


async def stats(app: ZigguratApp, req: Request) -> Response:
    return json_response(app.metrics.stats(app.repo))


ROUTES: list[Route] = [
    Route("POST", "/api/v1/infer", infer, "v1_infer"),
    Route("POST", "/api/v1/batch", batch, "v1_batch"),
    Route("GET", "/api/v1/models", list_models, "v1_models"),
    Route("POST", "/api/v1/models/load", load, "v1_models"),
    Route("POST", "/api/v1/models/unload", unload, "v1_models"),
    Route("GET", "/api/v1/health", health, "v1_health", public=True, unlimited=True),
    Route("GET", "/api/v1/stats", stats, "v1_stats"),
]
