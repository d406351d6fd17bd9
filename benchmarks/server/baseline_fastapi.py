"""The baseline: a FastAPI + onnxruntime server, written the way such servers usually are.

One uvicorn worker (uvloop + httptools), V2-style JSON in and out on the same paths as Ziggurat
(``POST /v2/models/{name}/infer``, ``GET /v2/health/ready``), pydantic request validation, the
session run inline in the handler. Used only by benchmarks/server/run_bench.py.

    python benchmarks/server/baseline_fastapi.py MODEL.onnx [--port 8081]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

DTYPES = {
    "FP32": np.float32,
    "FP64": np.float64,
    "INT64": np.int64,
    "INT32": np.int32,
    "BOOL": np.bool_,
    "FP16": np.float16,
    "UINT8": np.uint8,
    "INT8": np.int8,
}
V2_OF = {np.dtype(v): k for k, v in DTYPES.items()}


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[Tensor]


def build_app(model_path: str) -> FastAPI:
    app = FastAPI()
    name = Path(model_path).stem
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    output_names = [o.name for o in session.get_outputs()]

    @app.get("/v2/health/ready")
    async def ready() -> dict:
        return {}

    @app.post("/v2/models/{model}/infer")
    async def infer(model: str, req: InferRequest) -> dict:
        if model != name:
            raise HTTPException(404, f"unknown model {model}")
        try:
            feeds = {
                t.name: np.asarray(t.data, dtype=DTYPES[t.datatype]).reshape(t.shape)
                for t in req.inputs
            }
            outs = session.run(None, feeds)
        except Exception as exc:  # noqa: BLE001 - the baseline answers 400 for any bad input
            raise HTTPException(400, str(exc)) from exc
        return {
            "model_name": name,
            "outputs": [
                {
                    "name": n,
                    "datatype": V2_OF.get(o.dtype, "BYTES"),
                    "shape": list(o.shape),
                    "data": o.ravel().tolist(),
                }
                for n, o in zip(output_names, outs)
            ],
        }

    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--access-log", action="store_true")
    args = ap.parse_args()
    uvicorn.run(
        build_app(args.model),
        host="127.0.0.1",
        port=args.port,
        workers=1,
        loop="uvloop",
        http="httptools",
        access_log=args.access_log,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
