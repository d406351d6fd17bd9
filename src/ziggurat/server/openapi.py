"""The OpenAPI 3.1 description served at /openapi.json and the Swagger UI page at /docs.

The schema is exactly as strict as the server: what it allows the server accepts (names match
the repository's name rule, versions are positive integers, a request has at least one input
tensor with a bounded shape), and every status a route can answer is listed. Two checks keep it
so: tests/server/test_openapi.py compares it with the router, and schemathesis generates
requests from it (no 5xx, responses conform, schema-valid requests are not rejected).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

import ziggurat
from ziggurat.server.codecs import DATATYPES, MAX_DIM, MAX_RANK
from ziggurat.server.http import Request, Response, json_response
from ziggurat.server.repository import NAME_MAX, NAME_PATTERN, VERSION_PATTERN
from ziggurat.server.routing import Route

if TYPE_CHECKING:
    from ziggurat.server.app import ZigguratApp

_REF = "#/components/schemas/"
_NAME = {"type": "string", "pattern": NAME_PATTERN, "maxLength": NAME_MAX}
_VERSION = {"type": "string", "pattern": VERSION_PATTERN}
_ANY_VERSION = {"oneOf": [_VERSION, {"type": "integer", "minimum": 1}]}
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "shape": {
            "type": "array",
            "maxItems": MAX_RANK,
            "items": {"type": "integer", "minimum": 0, "maximum": MAX_DIM},
        },
        "datatype": {"type": "string", "enum": list(DATATYPES)},
        "data": {
            "type": "array",
            "description": "row-major values, flat or nested; as many as the shape holds. "
            "With the binary extension (Inference-Header-Content-Length) the tensor gives "
            "parameters.binary_data_size instead of data.",
        },
        "parameters": {"type": "object"},
    },
}
_OUT_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": list(DATATYPES)},
        "data": {"type": "array"},
        "parameters": {"type": "object"},
    },
}
_OUTPUT_REQ = {
    "oneOf": [
        {"type": "string"},
        {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "parameters": {
                    "type": "object",
                    "properties": {
                        "binary_data": {"type": "boolean"},
                        "classification": {"type": "integer", "minimum": 0},
                    },
                },
            },
        },
    ],
}
_INFER_PROPS = {
    "id": {"type": "string"},
    "inputs": {"type": "array", "minItems": 1, "items": {"$ref": _REF + "Tensor"}},
    "outputs": {"type": "array", "items": {"$ref": _REF + "OutputRequest"}},
    "parameters": {
        "type": "object",
        "properties": {
            "binary_data_output": {"type": "boolean"},
            "timeout": {"type": "integer", "minimum": 0, "description": "microseconds"},
        },
    },
}
_INFER_REQ = {"type": "object", "required": ["inputs"], "properties": _INFER_PROPS}
_INFER_RESP = {
    "type": "object",
    "required": ["model_name", "model_version", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": {"$ref": _REF + "OutputTensor"}},
    },
}
_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_OBJ = {"type": "object"}

# Statuses any route past routing can answer: auth (401/403), max_connections (503) and
# request_timeout_ms (504); a body route adds 400, 413 (max_body_mb), 415 (Content-Encoding).
_COMMON = (401, 403, 500, 503, 504)
_BODY = (400, 413, 415)
_MODEL = (400, 404)  # a name that breaks the rule / a model that does not exist


def _content(schema: dict | str, media: str = "application/json") -> dict[str, Any]:
    sch = {"$ref": _REF + schema} if isinstance(schema, str) else schema
    return {media: {"schema": sch}}


def _dashboard_paths() -> dict[str, Any]:
    """The dashboard (routes_dashboard.py); its event stream is documented there."""
    page = _op(
        "The dashboard page (no auth)", ok={"type": "string"}, ok_media="text/html", public=True
    )
    return {
        "/": {"get": page},
        "/dashboard": {"get": page},
        "/dashboard/{asset}": {
            "get": _op(
                "A file of the dashboard (no auth)",
                ok={"type": "string"},
                ok_media="text/plain",
                params=("asset",),
                codes=(404,),
                public=True,
            )
        },
        "/api/v1/dashboard/models": {"get": _op("The dashboard's models table", ok=_OBJ)},
    }


def _op(
    summary: str,
    *,
    ok: dict | str | None = None,
    ok_media: str = "application/json",
    body: str | None = None,
    body_required: bool = True,
    params: tuple[str, ...] = (),
    codes: tuple[int, ...] = (),
    public: bool = False,
) -> dict[str, Any]:
    """One operation; ``ok``: the 200 schema (None: an empty text/plain body)."""
    ok_content = (
        _content(ok, ok_media) if ok is not None else _content({"type": "string"}, "text/plain")
    )
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": {"description": "OK", "content": ok_content}},
    }
    statuses = set(codes) | ({503} if public else set(_COMMON))
    if body:
        statuses |= set(_BODY)
        op["requestBody"] = {"required": body_required, "content": _content(body)}
    if params:
        statuses |= set(_MODEL)
        op["parameters"] = [
            {
                "name": p,
                "in": "path",
                "required": True,
                "schema": _VERSION if p == "version" else _NAME,
            }
            for p in params
        ]
    for c in sorted(statuses):
        op["responses"][str(c)] = {"description": _DESCRIPTIONS[c], "content": _content("Error")}
    if public:
        op["security"] = [{}]
    return op


_DESCRIPTIONS = {
    400: "bad request: the message says what and how to fix it",
    401: "an API key is required",
    403: "the API key is not valid",
    404: "unknown model, version or route",
    413: "body over max_body_mb (or a batch over the memory budget)",
    415: "unsupported Content-Encoding",
    500: "a server or model fault; the message carries the request id",
    503: "busy (max_connections, queue full) or not ready; see Retry-After",
    504: "timed out (request_timeout_ms or parameters.timeout)",
}


@cache
def spec() -> dict[str, Any]:
    """The OpenAPI document (built once)."""
    m, mv = ("model",), ("model", "version")
    v2_infer = dict(ok="InferResponse", body="InferRequest", params=m)
    paths: dict[str, Any] = {
        "/api/v1/infer": {
            "post": _op(
                "Run one inference", ok="InferResponse", body="V1InferRequest", codes=(404,)
            )
        },
        "/api/v1/batch": {
            "post": _op(
                "Run many inferences; per-item results or errors",
                ok=_OBJ,
                body="V1BatchRequest",
                codes=(404,),
            )
        },
        "/api/v1/models": {"get": _op("Models with metadata, state, memory and stats", ok=_OBJ)},
        "/api/v1/models/load": {
            "post": _op("Load or reload a repository model", ok=_OBJ, body="ModelRef", codes=(404,))
        },
        "/api/v1/models/unload": {
            "post": _op("Unload a model", ok=_OBJ, body="ModelRef", codes=(404,))
        },
        "/api/v1/health": {
            "get": _op("Liveness, readiness, uptime, models (no auth)", ok=_OBJ, public=True)
        },
        "/api/v1/stats": {
            "get": _op("Requests, errors, latency percentiles, batch sizes", ok=_OBJ)
        },
        "/api/v1/stream": {
            "get": _op(
                "WebSocket: streaming inference (see docs/server.md); without an upgrade, "
                "how to use it",
                ok=_OBJ,
            )
        },
        "/metrics": {
            "get": _op("Prometheus metrics", ok={"type": "string"}, ok_media="text/plain")
        },
        "/openapi.json": {"get": _op("This document", ok=_OBJ)},
        "/docs": {"get": _op("Swagger UI", ok={"type": "string"}, ok_media="text/html")},
        **_dashboard_paths(),
        "/v2": {"get": _op("V2 server metadata", ok=_OBJ)},
        "/v2/health/live": {"get": _op("V2 liveness (no auth)", ok=_OBJ, public=True)},
        "/v2/health/ready": {"get": _op("V2 readiness (no auth)", ok=_OBJ, public=True)},
        "/v2/models/stats": {"get": _op("V2 statistics of every model", ok=_OBJ)},
        "/v2/models/{model}": {"get": _op("V2 model metadata", ok=_OBJ, params=m)},
        "/v2/models/{model}/versions/{version}": {
            "get": _op("V2 model metadata of a version", ok=_OBJ, params=mv)
        },
        "/v2/models/{model}/ready": {"get": _op("V2 model readiness", ok=_OBJ, params=m)},
        "/v2/models/{model}/versions/{version}/ready": {
            "get": _op("V2 model readiness of a version", ok=_OBJ, params=mv)
        },
        "/v2/models/{model}/config": {
            "get": _op("Triton-style model configuration", ok=_OBJ, params=m)
        },
        "/v2/models/{model}/versions/{version}/config": {
            "get": _op("Triton-style configuration of a version", ok=_OBJ, params=mv)
        },
        "/v2/models/{model}/infer": {
            "post": _op(
                "V2 inference (JSON, or the binary tensor extension with "
                "Inference-Header-Content-Length)",
                **v2_infer,
            )
        },
        "/v2/models/{model}/versions/{version}/infer": {
            "post": _op("V2 inference of a version", **{**v2_infer, "params": mv})
        },
        "/v2/models/{model}/stats": {"get": _op("V2 statistics of a model", ok=_OBJ, params=m)},
        "/v2/models/{model}/versions/{version}/stats": {
            "get": _op("V2 statistics of a version", ok=_OBJ, params=mv)
        },
        "/v2/repository/index": {
            "post": _op(
                "V2 repository index",
                ok={"type": "array"},
                body="RepositoryIndexRequest",
                body_required=False,
            )
        },
        "/v2/repository/models/{model}/load": {
            "post": _op("V2 load a model", body="RepositoryRequest", body_required=False, params=m)
        },
        "/v2/repository/models/{model}/unload": {
            "post": _op(
                "V2 unload a model", body="RepositoryRequest", body_required=False, params=m
            )
        },
    }
    v1_req = {
        "type": "object",
        "required": ["model", "inputs"],
        "properties": {"model": _NAME, "version": _ANY_VERSION, **_INFER_PROPS},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Ziggurat model server",
            "version": ziggurat.__version__,
            "description": "Ziggurat's /api/v1 API and the KServe V2 inference protocol.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Tensor": _TENSOR,
                "OutputTensor": _OUT_TENSOR,
                "OutputRequest": _OUTPUT_REQ,
                "InferRequest": _INFER_REQ,
                "InferResponse": _INFER_RESP,
                "Error": _ERROR,
                "V1InferRequest": v1_req,
                "V1BatchRequest": {
                    "type": "object",
                    "required": ["model", "requests"],
                    "properties": {
                        "model": _NAME,
                        "version": _ANY_VERSION,
                        "requests": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 4096,
                            "items": _INFER_REQ,
                        },
                    },
                },
                "ModelRef": {
                    "type": "object",
                    "required": ["model"],
                    "properties": {"model": _NAME, "version": _ANY_VERSION},
                },
                "RepositoryIndexRequest": {
                    "type": "object",
                    "properties": {"ready": {"type": "boolean"}},
                },
                "RepositoryRequest": {
                    "type": "object",
                    "properties": {"parameters": {"type": "object"}},
                },
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "security": [{}, {"bearer": []}, {"apiKey": []}],
    }


DOCS_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>Ziggurat API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head><body><div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "openapi.json", dom_id: "#ui"});</script>
<noscript>The API description is at <a href="openapi.json">/openapi.json</a>.</noscript>
</body></html>
"""


async def openapi(app: ZigguratApp, req: Request) -> Response:
    """``GET /openapi.json``: the document above."""
    return json_response(spec())


async def docs(app: ZigguratApp, req: Request) -> Response:
    """``GET /docs``: Swagger UI over /openapi.json."""
    return Response(DOCS_HTML.encode(), 200, "text/html; charset=utf-8")


ROUTES = [
    Route("GET", "/openapi.json", openapi, "docs"),
    Route("GET", "/docs", docs, "docs"),
]
