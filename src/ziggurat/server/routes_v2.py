"""KServe V2 / Open Inference Protocol REST routes, as Triton serves them.

Health, server and model metadata, model config, readiness, inference (JSON and the binary tensor
data extension), the model repository extension and the statistics extension, with the paths,
bodies and status codes stock ``tritonclient.http`` expects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ziggurat
from ziggurat.server import inference
from ziggurat.server.errors import HTTPError, bad_request
from ziggurat.server.http import Request, Response, json_response
from ziggurat.server.routing import Route

if TYPE_CHECKING:
    from ziggurat.server.app import ZigguratApp
    from ziggurat.server.model import LoadedModel

EXTENSIONS = [
    "binary_tensor_data",
    "classification",
    "model_repository",
    "statistics",
    "model_configuration",
]


async def server_metadata(app: ZigguratApp, req: Request) -> Response:
    return json_response(
        {"name": "ziggurat", "version": ziggurat.__version__, "extensions": EXTENSIONS}
    )


# Health answers carry the Open Inference Protocol's JSON bodies (KServe's client parses them);
# the status codes are what Triton's client checks.
async def live(app: ZigguratApp, req: Request) -> Response:
    return json_response({"live": True})


async def ready(app: ZigguratApp, req: Request) -> Response:
    if app.is_ready():
        return json_response({"ready": True})
    error = "server is not ready: models are loading or failed"
    return json_response({"ready": False, "error": error}, 503)


async def _model(app: ZigguratApp, req: Request, name: str, version: str | None) -> LoadedModel:
    req.model = name
    return await app.repo.get(name, version)


async def model_metadata(app: ZigguratApp, req: Request, model: str, version: str | None = None):
    m = await _model(app, req, model, version)
    meta = m.metadata()
    e = app.repo.entries.get(model)
    if version is None and e is not None:
        meta["versions"] = [str(v) for v in sorted(e.versions)]
    return json_response(meta)


async def model_config(app: ZigguratApp, req: Request, model: str, version: str | None = None):
    m = await _model(app, req, model, version)
    return json_response(m.triton_config())


async def model_ready(app: ZigguratApp, req: Request, model: str, version: str | None = None):
    req.model = model
    if app.repo.ready(model, version):
        return json_response({"name": model, "ready": True})
    app.repo.sources(model)  # 404 for unknown names
    error = f"model {model!r} is not ready (not loaded)"
    return json_response({"name": model, "ready": False, "error": error}, 400)


async def infer(app: ZigguratApp, req: Request, model: str, version: str | None = None):
    req.model = model
    body = await req.body()
    obj, binary = inference.parse(body, req.headers.get("inference-header-content-length"))
    return (await inference.infer(app, obj, binary, model=model, version=version)).http()


async def _repository_body(req: Request) -> dict[str, Any]:
    """The optional JSON object of a repository request (an empty body is ``{}``)."""
    body = await req.json()
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object (or empty)")
    params = body.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise bad_request('"parameters" must be a JSON object')
    return body


async def repository_index(app: ZigguratApp, req: Request) -> Response:
    body = await _repository_body(req)
    ready = body.get("ready", False)
    if not isinstance(ready, bool):
        raise bad_request('"ready" must be true or false')
    rows = app.repo.index()
    if ready:
        rows = [r for r in rows if r["state"] == "READY"]
    return json_response(rows)


async def repository_load(app: ZigguratApp, req: Request, model: str) -> Response:
    req.model = model
    params = (await _repository_body(req)).get("parameters")
    if params and any(k == "config" or k.startswith("file:") for k in params):
        raise bad_request(
            "loading with an override config or files is not supported: put the "
            "model and its config.toml in the model repository and load it by name"
        )
    await app.repo.load(model)
    return Response(b"", 200, "text/plain")


async def repository_unload(app: ZigguratApp, req: Request, model: str) -> Response:
    req.model = model
    await _repository_body(req)
    await app.repo.unload(model)
    return Response(b"", 200, "text/plain")


def _duration(count: int, ns: int) -> dict[str, int]:
    return {"count": count, "ns": ns}


def _model_stats(m: LoadedModel) -> dict[str, Any]:
    s = m.stats
    return {
        "name": m.name,
        "version": str(m.version),
        "last_inference": s.last_inference_ms,
        "inference_count": s.inferences,
        "execution_count": s.executions,
        "inference_stats": {
            "success": _duration(s.success, s.success_ns),
            "fail": _duration(s.failure, s.failure_ns),
            "queue": _duration(s.success, s.queue_ns),
            "compute_input": _duration(s.success, 0),
            "compute_infer": _duration(s.success, s.compute_ns),
            "compute_output": _duration(s.success, 0),
            "cache_hit": _duration(0, 0),
            "cache_miss": _duration(0, 0),
        },
        "batch_stats": [
            {
                "batch_size": rows,
                "compute_input": _duration(c, 0),
                "compute_infer": _duration(c, ns),
                "compute_output": _duration(c, 0),
            }
            for rows, (c, ns) in sorted(s.batches.items())
        ],
    }


async def model_stats(
    app: ZigguratApp, req: Request, model: str | None = None, version: str | None = None
) -> Response:
    if model is None:
        models = app.repo.loaded()
    else:
        req.model = model
        models = (
            [await app.repo.get(model, version)]
            if version
            else [m for m in app.repo.loaded() if m.name == model]
        )
        if not models:
            app.repo.sources(model)
            raise HTTPError(400, f"model {model!r} is not loaded")
    return json_response({"model_stats": [_model_stats(m) for m in models]})


def _versioned(pattern: str, method: str, handler: Any, label: str) -> list[Route]:
    base = "/v2/models/{model}"
    return [
        Route(method, base + pattern, handler, label),
        Route(method, base + "/versions/{version}" + pattern, handler, label),
    ]


ROUTES: list[Route] = [
    Route("GET", "/v2", server_metadata, "v2_server"),
    Route("GET", "/v2/health/live", live, "v2_health", public=True, unlimited=True),
    Route("GET", "/v2/health/ready", ready, "v2_health", public=True, unlimited=True),
    Route("GET", "/v2/models/stats", model_stats, "v2_stats"),
    *_versioned("", "GET", model_metadata, "v2_metadata"),
    *_versioned("/config", "GET", model_config, "v2_config"),
    *_versioned("/ready", "GET", model_ready, "v2_ready"),
    *_versioned("/infer", "POST", infer, "v2_infer"),
    *_versioned("/stats", "GET", model_stats, "v2_stats"),
    Route("POST", "/v2/repository/index", repository_index, "v2_repository"),
    Route("POST", "/v2/repository/models/{model}/load", repository_load, "v2_repository"),
    Route("POST", "/v2/repository/models/{model}/unload", repository_unload, "v2_repository"),
]
