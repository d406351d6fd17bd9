"""KServe's own V2 client (``kserve.InferenceRESTClient``), unchanged, against the server:
health, readiness, model readiness, inference with JSON and binary tensors, and the metadata
bodies checked against KServe's protocol models (its REST client has no metadata call)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

# A plain import, not importorskip: kserve is a dev dependency (pyproject), and a missing one
# must fail the run rather than silently drop the only test of KServe's client.
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput
from kserve.protocol.rest.v2_datamodels import ModelMetadataResponse, ServerMetadataResponse

from tests.server import models
from tests.server.conftest import AppClient, make_config

pytestmark = pytest.mark.anyio
BASE = "http://test"


def kserve_client(app=None) -> InferenceRESTClient:
    """KServe's V2 client; with ``app``, its httpx transport calls that in-process app."""
    transport = httpx.ASGITransport(app=app) if app is not None else None
    return InferenceRESTClient(RESTConfig(transport=transport, protocol="v2"))


def linear_request(x: np.ndarray, *, binary: bool) -> InferRequest:
    inp = InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outputs = [RequestedOutput(n, {"binary_data": binary}) for n in ("y", "label")]
    return InferRequest("linear", [inp], request_id="k1", request_outputs=outputs)


async def check_kserve_client(client: InferenceRESTClient, base: str) -> None:
    """Every call of KServe's V2 REST client against a Ziggurat server at ``base``."""
    assert await client.is_server_live(base) is True
    assert await client.is_server_ready(base) is True
    assert await client.is_model_ready(base, "linear") is True
    assert await client.is_model_ready(base, "missing") is False
    # Integer-valued inputs and weights: every product and sum is exact in float32.
    x = np.arange(12, dtype=np.float32).reshape(3, 4) - 6
    y, label = models.linear_reference(x)
    for binary in (False, True):
        res = await client.infer(base, linear_request(x, binary=binary), model_name="linear")
        out = {o.name: o.as_numpy() for o in res.outputs}
        np.testing.assert_array_equal(out["y"], y)
        np.testing.assert_array_equal(out["label"], label)
        assert res.id == "k1" and res.model_name == "linear"
    with pytest.raises(httpx.HTTPStatusError, match="404"):
        await client.infer(base, linear_request(x, binary=False), model_name="missing")


async def test_kserve_client_in_process(repo_dir):
    server = AppClient(make_config(repo_dir))
    async with server:
        client = kserve_client(server.app)
        try:
            await check_kserve_client(client, BASE)
        finally:
            await client.close()


async def test_metadata_bodies_match_kserve_models(repo_dir):
    async with AppClient(make_config(repo_dir)) as c:
        meta = ServerMetadataResponse.model_validate((await c.get("/v2")).json(), strict=True)
        assert meta.name == "ziggurat" and "binary_tensor_data" in meta.extensions
        body = (await c.get("/v2/models/linear")).json()
        m = ModelMetadataResponse.model_validate(body, strict=True)
        assert [(t.name, t.datatype, t.shape) for t in m.inputs] == [("x", "FP32", [-1, 4])]
        assert [(t.name, t.datatype) for t in m.outputs] == [("y", "FP32"), ("label", "INT64")]
