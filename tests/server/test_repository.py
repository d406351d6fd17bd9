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


async def test_500_load_unload_cycles_leak_nothing(tmp_path):
    """Live objects, allocated memory blocks, threads and repository state after 500
    load/unload cycles are what they were after the first 50."""
    import gc
    import sys
    import threading

    repo = tmp_path / "repo"
    models.linear(repo / "m.onnx")
    async with AppClient(make_config(repo, load_on_demand=False)) as c:
        app = c._transport.app
        body = {"inputs": [tensor("x", X)]}

        async def cycle():
            assert (await c.post("/api/v1/models/load", json={"model": "m"})).status_code == 200
            assert (await c.post("/v2/models/m/infer", json=body)).status_code == 200
            assert (await c.post("/api/v1/models/unload", json={"model": "m"})).status_code == 200

        for _ in range(50):  # warm up: caches, metric label sets, first-use imports
            await cycle()
        gc.collect()
        threads = threading.active_count()
        objects, blocks = len(gc.get_objects()), sys.getallocatedblocks()
        for _ in range(450):
            await cycle()
        gc.collect()
        grown_objects = len(gc.get_objects()) - objects
        grown_blocks = sys.getallocatedblocks() - blocks
        # A model version kept alive per cycle is thousands of objects; even one stray dict
        # or list per cycle (450) would exceed these bounds, which leave room for caches.
        assert grown_objects < 300, grown_objects
        assert grown_blocks < 3000, grown_blocks
        assert threading.active_count() <= threads + 2  # pools are shut down, not left behind
        assert app.repo.loaded() == [] and app.repo.entries["m"].versions == {}


async def test_reload_and_unload_under_traffic(tmp_path):
    """Requests keep flowing while the model is reloaded (new weights) and then unloaded: each
    answer is the old model's, the new model's, or a clean 503 — never an error or a hang."""
    import asyncio

    import numpy as np

    repo = tmp_path / "repo"
    models.linear(repo / "m.onnx", scale=1.0)
    x = np.array(X, np.float32)
    old = models.linear_reference(x, scale=1.0)[0].ravel().tolist()
    new = models.linear_reference(x, scale=3.0)[0].ravel().tolist()
    async with AppClient(make_config(repo, load_on_demand=False, inline_run_us=0)) as c:
        body = {"inputs": [tensor("x", X)], "outputs": [{"name": "y"}]}
        seen: list = []
        stop = asyncio.Event()

        async def client():
            while not stop.is_set():
                r = await c.post("/v2/models/m/infer", json=body)
                if r.status_code == 200:
                    seen.append(("ok", r.json()["outputs"][0]["data"]))
                else:
                    seen.append((r.status_code, r.json()["error"]))
                await asyncio.sleep(0)

        clients = [asyncio.ensure_future(client()) for _ in range(8)]
        while len(seen) < 50:
            await asyncio.sleep(0.005)
        models.linear(repo / "m.onnx", scale=3.0)
        assert (await c.post("/api/v1/models/load", json={"model": "m"})).status_code == 200
        mark = len(seen)
        while len(seen) < mark + 50:
            await asyncio.sleep(0.005)
        assert (await c.post("/api/v1/models/unload", json={"model": "m"})).status_code == 200
        mark_unload = len(seen)
        while len(seen) < mark_unload + 50:
            await asyncio.sleep(0.005)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*clients), 30)
    oks = [v for k, v in seen if k == "ok"]
    assert all(np.allclose(v, old) or np.allclose(v, new) for v in oks)
    assert any(np.allclose(v, old) for v in oks) and any(np.allclose(v, new) for v in oks)
    errors = [(k, v) for k, v in seen if k != "ok"]
    assert all(k == 503 for k, _ in errors), errors[:5]
    # after the unload settled, every answer is a 503 naming the fix
    assert all(k == 503 and "load it first" in v for k, v in seen[mark_unload + 20 :])
