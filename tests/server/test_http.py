"""Request bodies: the size limit (413), gzip/deflate bodies and bombs, responses gzipped."""

from __future__ import annotations

import json

import pytest

from tests.server.conftest import AppClient, make_config
from tests.server.helpers import X, tensor

pytestmark = pytest.mark.anyio


async def test_body_limit_and_compression(repo_dir):
    import gzip

    async with AppClient(make_config(repo_dir, max_body_mb=0.001)) as c:
        big = b'{"inputs": [' + b" " * 5000 + b"]}"
        r = await c.post("/v2/models/linear/infer", content=big)
        assert r.status_code == 413
        bomb = gzip.compress(b" " * 10_000_000)
        r = await c.post(
            "/v2/models/linear/infer", content=bomb, headers={"content-encoding": "gzip"}
        )
        assert r.status_code == 413
    async with AppClient(make_config(repo_dir)) as c:
        body = json.dumps({"inputs": [tensor("x", X)]}).encode()
        r = await c.post(
            "/v2/models/linear/infer",
            content=gzip.compress(body),
            headers={"content-encoding": "gzip", "accept-encoding": "gzip"},
        )
        assert r.status_code == 200 and r.json()["outputs"][1]["data"] == [2, 2]
        r = await c.post(
            "/v2/models/linear/infer", content=b"garbage", headers={"content-encoding": "gzip"}
        )
        assert r.status_code == 400
