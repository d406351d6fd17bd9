"""/api/v1 routes in-process: infer, batch (per-item results and errors), models, stats."""

from __future__ import annotations

import numpy as np
import pytest

from tests.server import models
from tests.server.conftest import AppClient, make_config
from tests.server.helpers import X, tensor

pytestmark = pytest.mark.anyio


async def test_v1_infer_batch_models_stats(repo_dir):
    async with AppClient(make_config(repo_dir)) as c:
        r = await c.post(
            "/api/v1/infer",
            json={"model": "linear", "inputs": [tensor("x", X)], "outputs": ["label"]},
        )
        assert r.status_code == 200 and r.json()["outputs"][0]["name"] == "label"
        r = await c.post(
            "/api/v1/infer", json={"model": "versioned", "version": 1, "inputs": [tensor("x", X)]}
        )
        assert r.json()["model_version"] == "1"
        items = [{"id": f"i{i}", "inputs": [tensor("x", [[i, 1, 2, 3]])]} for i in range(5)]
        items.insert(2, {"id": "bad", "inputs": [tensor("x", [[1, 2, 3]])]})
        r = await c.post("/api/v1/batch", json={"model": "linear", "requests": items})
        res = r.json()["results"]
        assert r.status_code == 200 and len(res) == 6
        assert (
            res[2]["id"] == "bad"
            and res[2]["status"] == 400
            and "expects dim 1 = 4" in res[2]["error"]
        )
        for item in res[:2] + res[3:]:
            i = int(item["id"][1:])
            y, label = models.linear_reference(np.array([[i, 1, 2, 3]], np.float32))
            assert item["outputs"][1]["data"] == label.tolist()
            np.testing.assert_allclose(item["outputs"][0]["data"], y.ravel(), rtol=1e-6)
        listing = (await c.get("/api/v1/models")).json()["models"]
        lin = next(m for m in listing if m["name"] == "linear")
        assert lin["state"] == "READY" and lin["stats"]["requests"] >= 1
        assert lin["batching"]["batch_axis"] is True
        assert next(m for m in listing if m["name"] == "corrupt")["state"] == "UNAVAILABLE"
        stats = (await c.get("/api/v1/stats")).json()
        assert stats["requests"] >= 3 and stats["memory"]["rss_bytes"] > 0
        lstats = next(m for m in stats["models"] if m["name"] == "linear")
        assert lstats["latency"]["p50_ms"] is not None
        v2stats = (await c.get("/v2/models/linear/stats")).json()["model_stats"][0]
        assert v2stats["inference_stats"]["success"]["count"] >= 1
        assert (await c.get("/v2/models/stats")).status_code == 200
