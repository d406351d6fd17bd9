"""GET /metrics: the Prometheus exposition carries request, latency, queue, batch and memory series."""

from __future__ import annotations

import pytest

from tests.server.conftest import AppClient, make_config
from tests.server.helpers import X, tensor

pytestmark = pytest.mark.anyio


async def test_metrics_after_an_inference(repo_dir):
    async with AppClient(make_config(repo_dir)) as c:
        await c.post("/v2/models/linear/infer", json={"inputs": [tensor("x", X)]})
        r = await c.get("/metrics")
        assert r.headers["content-type"].startswith("text/plain")
        text = r.text
        for name in (
            "ziggurat_requests_total",
            "ziggurat_request_duration_seconds_bucket",
            "ziggurat_queue_duration_seconds",
            "ziggurat_batch_size_bucket",
            "ziggurat_models_loaded",
            "process_resident_memory_bytes",
        ):
            assert name in text
        assert 'route="v2_infer",model="linear",status="200"' in text


async def test_client_chosen_model_names_do_not_grow_metrics(repo_dir):
    async with AppClient(make_config(repo_dir)) as c:
        for i in range(20):
            await c.post(f"/v2/models/ghost{i}/infer", json={"inputs": [tensor("x", X)]})
        text = (await c.get("/metrics")).text
        assert "ghost" not in text
