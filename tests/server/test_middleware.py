"""API keys, CORS and request ids."""

from __future__ import annotations

import pytest

from tests.server.conftest import AppClient, make_config

pytestmark = pytest.mark.anyio


async def test_api_keys(repo_dir):
    async with AppClient(make_config(repo_dir, api_keys=("k1", "k2"))) as c:
        assert (await c.get("/v2/health/ready")).status_code == 200
        assert (await c.get("/api/v1/health")).status_code == 200
        r = await c.get("/v2/models/linear")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/v2/models/linear", headers={"x-api-key": "bad"})).status_code == 403
        ok = await c.get("/v2/models/linear", headers={"authorization": "Bearer k2"})
        assert ok.status_code == 200
        assert (await c.get("/v2/models/linear", headers={"x-api-key": "k1"})).status_code == 200


async def test_cors_and_request_id(repo_dir):
    cfg = make_config(repo_dir, cors_origins=("https://app.example",), cors_allow_credentials=True)
    async with AppClient(cfg) as c:
        r = await c.options(
            "/v2/models/linear/infer",
            headers={"origin": "https://app.example", "access-control-request-method": "POST"},
        )
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert r.headers["access-control-allow-credentials"] == "true"
        r = await c.get("/v2", headers={"origin": "https://app.example", "x-request-id": "abc-1"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert r.headers["x-request-id"] == "abc-1"
        r = await c.get("/v2", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
        r = await c.options(
            "/v2",
            headers={"origin": "https://evil.example", "access-control-request-method": "GET"},
        )
        assert r.status_code == 403
        r = await c.get("/v2", headers={"x-request-id": "bad id with spaces"})
        assert r.headers["x-request-id"] != "bad id with spaces"


@pytest.mark.parametrize("sink", ["dev-full", "closed"])
async def test_unwritable_access_log_does_not_stop_serving(repo_dir, sink, tmp_path):
    """A full disk (/dev/full: every write is ENOSPC) or a closed log stream: requests are still
    answered, and the log is flushed without raising."""
    import os

    from tests.server.helpers import X, tensor
    from ziggurat.server.middleware import AccessLog

    if sink == "dev-full" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    stream = open("/dev/full", "w") if sink == "dev-full" else open(tmp_path / "log", "w")  # noqa: SIM115
    if sink == "closed":
        stream.close()
    async with AppClient(make_config(repo_dir, access_log=True)) as c:
        app = c._transport.app
        app.access = AccessLog(True, stream)
        for _ in range(200):  # enough lines to overflow any write buffer
            r = await c.post("/v2/models/linear/infer", json={"inputs": [tensor("x", X)]})
            assert r.status_code == 200
        app.access.flush()
    if not stream.closed:
        try:
            stream.close()
        except OSError:
            pass
