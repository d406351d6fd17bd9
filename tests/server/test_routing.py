"""Router: static and parametrised paths, 404 and 405 (with Allow), no segment crosses a '/'."""

from __future__ import annotations

import pytest

from tests.server.conftest import AppClient, make_config
from ziggurat.server.routing import Route, Router

pytestmark = pytest.mark.anyio


async def _h(app, req, **kw):
    return kw


def test_router_matches_static_dynamic_and_trailing_slash():
    r = Router(
        [
            Route("GET", "/a", _h, "a"),
            Route("GET", "/m/{model}", _h, "m"),
            Route("POST", "/m/{model}/infer", _h, "i"),
        ]
    )
    assert r.match("/a")[0]["GET"].label == "a"
    assert r.match("/a/")[0]["GET"].label == "a"
    by_method, params = r.match("/m/lin")
    assert by_method["GET"].label == "m" and params == {"model": "lin"}
    assert r.match("/m/lin/infer")[1] == {"model": "lin"}
    assert r.match("/m/a/b")[0] is None  # a parameter never spans two segments
    assert r.match("/nope") == (None, {})
    params = r.match("/m/lin")[1]
    params["model"] = "changed"  # callers get copies: the cache stays intact
    assert r.match("/m/lin")[1] == {"model": "lin"}


async def test_routes_404_405_and_trace(repo_dir):
    async with AppClient(make_config(repo_dir)) as c:
        r = await c.get("/nope")
        assert r.status_code == 404 and "/docs" in r.json()["error"]
        r = await c.get("/v2/models/linear/infer")
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        for method in ("TRACE", "PUT", "DELETE", "PATCH"):
            r = await c.request(method, "/v2/models/linear")
            assert r.status_code == 405 and r.headers["allow"] == "GET", method
