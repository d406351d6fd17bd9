"""The OpenAPI 3.1 description served at /openapi.json and the Swagger UI page at /docs."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

import ziggurat
from ziggurat.server.http import Request, Response, json_response
from ziggurat.server.routing import Route

if TYPE_CHECKING:
    from ziggurat.server.app import ZigguratApp

_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {
            "type": "string",
            "enum": [
                "BOOL",
                "UINT8",
                "UINT16",
                "UINT32",
                "UINT64",
                "INT8",
                "INT16",
                "INT32",
                "INT64",
                "FP16",
                "FP32",
                "FP64",
                "BF16",
                "BYTES",
            ],
        },
        "data": {"type": "array", "description": "row-major values, flat or nested"},
        "parameters": {
            "type": "object",
            "properties": {
                "binary_data_size": {
                    "type": "integer",
                    "description": "bytes of this tensor in the binary section",
                }
            },
        },
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
                        "classification": {"type": "integer"},
                    },
                },
            },
        },
    ],
}
_INFER_REQ = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
        "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/OutputRequest"}},
        "parameters": {
            "type": "object",
            "properties": {
                "binary_data_output": {"type": "boolean"},
                "timeout": {"type": "integer", "description": "microseconds"},
            },
        },
    },
}
_INFER_RESP = {
    "type": "object",
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
    },
}
_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}}


def _op(
    summary: str,
    *,
    body: str | None = None,
    resp: str | None = None,
    params: tuple[str, ...] = (),
    codes: tuple[int, ...] = (),
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": {
                "description": "OK",
                **(
                    {
                        "content": {
                            "application/json": {"schema": {"$ref": f"#/components/schemas/{resp}"}}
                        }
                    }
                    if resp
                    else {}
                ),
            }
        },
    }
    for c in codes:
        op["responses"][str(c)] = {
            "description": "error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    if body:
        op["requestBody"] = {
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}}
        }
    if params:
        op["parameters"] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in params
        ]
    return op


@cache
def spec() -> dict[str, Any]:
    """The OpenAPI document (built once)."""
    errs = (400, 401, 403, 404, 413, 503, 504)
    m, mv = ("model",), ("model", "version")
    paths: dict[str, Any] = {
        "/api/v1/infer": {
            "post": _op(
                "Run one inference", body="V1InferRequest", resp="InferResponse", codes=errs
            )
        },
        "/api/v1/batch": {
            "post": _op(
                "Run many inferences; per-item results or errors", body="V1BatchRequest", codes=errs
            )
        },
        "/api/v1/models": {"get": _op("Models with metadata, state, memory and stats")},
        "/api/v1/models/load": {
            "post": _op("Load or reload a repository model", body="ModelRef", codes=errs)
        },
        "/api/v1/models/unload": {"post": _op("Unload a model", body="ModelRef", codes=errs)},
        "/api/v1/health": {"get": _op("Liveness, readiness, uptime, models (no auth)")},
        "/api/v1/stats": {"get": _op("Requests, errors, latency percentiles, batch sizes")},
        "/api/v1/stream": {"get": _op("WebSocket: streaming inference (see docs/server.md)")},
        "/metrics": {"get": _op("Prometheus metrics")},
        "/v2": {"get": _op("V2 server metadata")},
        "/v2/health/live": {"get": _op("V2 liveness (no auth)")},
        "/v2/health/ready": {"get": _op("V2 readiness (no auth)", codes=(503,))},
        "/v2/models/{model}": {"get": _op("V2 model metadata", params=m, codes=errs)},
        "/v2/models/{model}/versions/{version}": {"get": _op("V2 model metadata", params=mv)},
        "/v2/models/{model}/ready": {"get": _op("V2 model readiness", params=m)},
        "/v2/models/{model}/versions/{version}/ready": {
            "get": _op("V2 model readiness", params=mv)
        },
        "/v2/models/{model}/config": {"get": _op("Triton-style model configuration", params=m)},
        "/v2/models/{model}/infer": {
            "post": _op(
                "V2 inference (JSON, or binary tensor extension with Inference-Header-Content-Length)",
                body="InferRequest",
                resp="InferResponse",
                params=m,
                codes=errs,
            )
        },
        "/v2/models/{model}/versions/{version}/infer": {
            "post": _op(
                "V2 inference of a version",
                body="InferRequest",
                resp="InferResponse",
                params=mv,
                codes=errs,
            )
        },
        "/v2/models/stats": {"get": _op("V2 statistics of every model")},
        "/v2/models/{model}/stats": {"get": _op("V2 statistics of a model", params=m)},
        "/v2/repository/index": {"post": _op("V2 repository index")},
        "/v2/repository/models/{model}/load": {
            "post": _op("V2 load a model", params=m, codes=errs)
        },
        "/v2/repository/models/{model}/unload": {"post": _op("V2 unload a model", params=m)},
    }
    v1_req = {
        "allOf": [
            {"$ref": "#/components/schemas/InferRequest"},
            {
                "type": "object",
                "required": ["model"],
                "properties": {"model": {"type": "string"}, "version": {"type": "string"}},
            },
        ]
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
                "OutputRequest": _OUTPUT_REQ,
                "InferRequest": _INFER_REQ,
                "InferResponse": _INFER_RESP,
                "Error": _ERROR,
                "V1InferRequest": v1_req,
                "V1BatchRequest": {
                    "type": "object",
                    "required": ["model", "requests"],
                    "properties": {
                        "model": {"type": "string"},
                        "version": {"type": "string"},
                        "requests": {"type": "array", "items": _INFER_REQ},
                    },
                },
                "ModelRef": {
                    "type": "object",
                    "required": ["model"],
                    "properties": {"model": {"type": "string"}, "version": {"type": "string"}},
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
