"""The model repository: load errors, names that try to leave it, hot reload, LRU eviction."""

from __future__ import annotations

import pytest

from tests.server import models
from tests.server.conftest import AppClient, make_config
from tests.server.helpers import X, tensor

pytestmark = pytest.mark.anyio


async def test_load_errors_and_traversal(repo_dir, tmp_path):
    outside = tmp_path / "outside.onnx"
    models.linear(outside)
    link = repo_dir / "escape.onnx"
    if not link.exists():
        link.symlink_to(outside)
    try:
        async with AppClient(make_config(repo_dir)) as c:
            r = await c.post("/api/v1/models/load", json={"model": "corrupt"})
            assert r.status_code == 400 and "not a valid ONNX model" in r.json()["error"]
            for bad in ("../linear", "a/b", "..", ".hidden", "x" * 200):
                r = await c.post("/api/v1/models/load", json={"model": bad})
                assert r.status_code == 400, bad
            r = await c.post("/api/v1/models/load", json={"model": "escape"})
            assert r.status_code == 400 and "outside" in r.json()["error"]
            r = await c.post("/v2/repository/models/..%2Fetc/load")
            assert r.status_code in (400, 404)
            assert (await c.post("/api/v1/models/load", json={"nope": 1})).status_code == 400
    finally:
        link.unlink()


async def test_hot_reload_keeps_old_until_ready_and_on_failure(tmp_path):
    repo = tmp_path / "repo"
    models.linear(repo / "m.onnx")
    body = {"inputs": [tensor("x", X[:1])]}
    async with AppClient(make_config(repo)) as c:
        before = (await c.post("/v2/models/m/infer", json=body)).json()["outputs"][0]["data"]
        (repo / "m.onnx").write_bytes(b"broken")
        r = await c.post("/api/v1/models/load", json={"model": "m"})
        assert r.status_code == 400
        after = (await c.post("/v2/models/m/infer", json=body)).json()["outputs"][0]["data"]
        assert after == before  # the failed reload kept the old version
        models.linear(repo / "m.onnx", scale=3.0)
        assert (await c.post("/api/v1/models/load", json={"model": "m"})).status_code == 200
        new = (await c.post("/v2/models/m/infer", json=body)).json()["outputs"][0]["data"]
        assert new != before


async def test_lru_eviction_and_size_limit(tmp_path):
    repo = tmp_path / "repo"
    for name in ("a", "b", "c"):
        models.linear(repo / f"{name}.onnx")
    models.linear(repo / "big.onnx", in_dim=300_000, out_dim=1)  # ~1.2 MB of weights
    async with AppClient(make_config(repo, model_cache_size=2, max_model_size_mb=1)) as c:
        for name in ("a", "b", "c"):
            r = await c.post(f"/v2/models/{name}/infer", json={"inputs": [tensor("x", X)]})
            assert r.status_code == 200
        loaded = {
            row["name"]
            for row in (await c.post("/v2/repository/index")).json()
            if row["state"] == "READY"
        }
        assert len(loaded) == 2 and "c" in loaded
        r = await c.post("/api/v1/models/load", json={"model": "big"})
        assert r.status_code == 400 and "max_model_size_mb" in r.json()["error"]
