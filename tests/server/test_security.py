"""Security: API keys on every route but health (constant-time compare), model names that try to
leave the repository, no tracebacks or server paths in any answer, models are data never code."""

from __future__ import annotations

import hmac
import re
from pathlib import Path

import pytest
from onnx import TensorProto, helper

from tests.server import models
from tests.server.conftest import AppClient, make_config
from tests.server.helpers import X, tensor, ws_exchange
from ziggurat.server.middleware import Auth

pytestmark = pytest.mark.anyio

KEY = "s3cret-key"


def _all_routes(app):
    routes = [r for by in app.router.static.values() for r in by.values()]
    return routes + [r for _, by in app.router.dynamic for r in by.values()]


def _path(pattern: str) -> str:
    return pattern.replace("{model}", "linear").replace("{version}", "1")


async def test_every_route_but_health_refuses_missing_and_wrong_keys(repo_dir):
    async with AppClient(make_config(repo_dir, api_keys=(KEY, "other-key"))) as c:
        routes = _all_routes(c._transport.app)
        assert len(routes) >= 28  # every route of the router, not a sample
        public = set()
        for r in routes:
            path = _path(r.pattern)
            none = await c.request(r.method, path)
            wrong = await c.request(r.method, path, headers={"x-api-key": KEY + "x"})
            short = await c.request(r.method, path, headers={"authorization": "Bearer s"})
            right = await c.request(r.method, path, headers={"authorization": f"Bearer {KEY}"})
            if r.public:
                public.add(r.pattern)
                assert none.status_code == right.status_code, r.pattern
                assert none.status_code not in (401, 403), r.pattern
                continue
            assert none.status_code == 401, (r.method, r.pattern, none.text)
            assert none.headers["www-authenticate"] == "Bearer"
            assert wrong.status_code == 403 and short.status_code == 403, r.pattern
            assert right.status_code not in (401, 403), (r.method, r.pattern, right.text)
        # health, and the dashboard's page and static files (its data needs a key)
        assert public == {
            "/api/v1/health",
            "/v2/health/live",
            "/v2/health/ready",
            "/",
            "/dashboard",
            "/dashboard/{asset}",
        }


async def test_websocket_refuses_missing_and_wrong_keys(repo_dir):
    frame = '{"id": 1, "model": "linear", "inputs": []}'
    async with AppClient(make_config(repo_dir, api_keys=(KEY,))) as c:
        app = c._transport.app
        for query in (b"", b"api_key=wrong"):
            replies, code = await ws_exchange(app, [frame], query=query)
            assert code == 1008 and replies == []
        replies, code = await ws_exchange(app, [frame], query=f"api_key={KEY}".encode())
        assert code is None and '"status":400' in replies[0]


def test_keys_are_compared_in_constant_time(monkeypatch):
    """Every key is compared (no early exit), as fixed-length digests (no length leak)."""
    seen = []
    real = hmac.compare_digest

    def spy(a, b):
        seen.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    auth = Auth(("k1", "a-much-longer-second-key"))
    assert auth.check({"x-api-key": "k1"}) == 0
    assert auth.check({"x-api-key": "nope"}) == 403
    assert auth.check({}) == 401
    assert len(seen) == 4 and len(set(seen)) == 1  # 2 keys x 2 checks, all the same length


@pytest.fixture
def escape_repo(tmp_path):
    repo = tmp_path / "repo"
    models.linear(repo / "linear.onnx")
    outside = tmp_path / "outside"
    models.linear(outside / "secret.onnx")
    models.linear(outside / "dir" / "1" / "model.onnx")
    (repo / "filelink.onnx").symlink_to(outside / "secret.onnx")
    (repo / "dirlink").symlink_to(outside / "dir")
    (repo / "vlinked" / "1").mkdir(parents=True)
    (repo / "vlinked" / "1" / "model.onnx").symlink_to(outside / "secret.onnx")
    return repo


BAD_NAMES = [
    "..",
    "../outside/secret",
    "..%2Foutside%2Fsecret",
    "%2e%2e",
    "/etc/passwd",
    "/tmp",
    "a/../linear",
    "linear\n",
    ".hidden",
    "a..b",
    "C:\\windows",
    "x" * 200,
    "",
]


async def test_model_names_cannot_leave_the_repository(escape_repo):
    async with AppClient(make_config(escape_repo)) as c:
        app = c._transport.app
        for name in BAD_NAMES:
            for r in (
                await c.post("/api/v1/models/load", json={"model": name}),
                await c.post("/api/v1/infer", json={"model": name, "inputs": [tensor("x", X)]}),
            ):
                assert r.status_code == 400, (name, r.status_code, r.text)
        for raw in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "..", "%2E%2E"):
            for url in (f"/v2/models/{raw}/infer", f"/v2/repository/models/{raw}/load"):
                r = await c.post(url, json={"inputs": [tensor("x", X)]})
                assert r.status_code in (400, 404), (url, r.status_code)
        for name in ("filelink", "dirlink", "vlinked"):  # symlinks pointing outside
            r = await c.post("/api/v1/models/load", json={"model": name})
            assert r.status_code in (400, 404), (name, r.text)
            r = await c.post(f"/v2/models/{name}/infer", json={"inputs": [tensor("x", X)]})
            assert r.status_code in (400, 404), (name, r.text)
        listed = {row["name"] for row in (await c.post("/v2/repository/index")).json()}
        assert listed == {"linear"}  # links that leave the repository are not even listed
        assert set(app.repo.entries) <= {"linear"}
        r = await c.post("/v2/models/linear/infer", json={"inputs": [tensor("x", X)]})
        assert r.status_code == 200


def _leaks(text: str, *paths: Path) -> list[str]:
    found = [str(p) for p in paths if str(p) in text]
    if "Traceback" in text or re.search(r'File "[^"]+", line \d+', text):
        found.append("a traceback")
    return found


async def test_no_server_paths_or_tracebacks_in_answers(repo_dir):
    async with AppClient(make_config(repo_dir)) as c:
        answers = [
            await c.post("/api/v1/models/load", json={"model": "corrupt"}),
            await c.get("/api/v1/health"),
            await c.get("/api/v1/models"),
            await c.post("/v2/repository/index"),
            await c.post("/v2/models/corrupt/infer", json={"inputs": [tensor("x", X)]}),
            await c.get("/v2/models/corrupt"),
        ]
        assert answers[0].status_code == 400
        assert "corrupt.onnx is not a valid ONNX model" in answers[0].json()["error"]
        for r in answers:
            assert _leaks(r.text, repo_dir, repo_dir.resolve(), Path.cwd()) == [], r.text


def _hostile_names_model(path: Path, marker: Path) -> None:
    """Identity with names that are Python code: generated code must quote, never splice them."""
    payload = f"x'); open({str(marker)!r}, 'w').write('pwned'); ('"
    out = f'y"""; import os; os.system("touch {marker}"); """'
    graph = helper.make_graph(
        [
            helper.make_node("Relu", [payload], ["mid\\n__import__('os')"], name=payload),
            helper.make_node("Identity", ["mid\\n__import__('os')"], [out], name="n}{1"),
        ],
        "g'); exec('1')#",
        [helper.make_tensor_value_info(payload, TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [2])],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    import onnx

    onnx.save(m, str(path))


async def test_models_are_data_never_code(tmp_path):
    marker = tmp_path / "pwned"
    repo = tmp_path / "repo"
    repo.mkdir()
    _hostile_names_model(repo / "evil.onnx", marker)
    async with AppClient(make_config(repo)) as c:
        meta = (await c.get("/v2/models/evil")).json()
        name = meta["inputs"][0]["name"]
        r = await c.post(
            "/v2/models/evil/infer", json={"inputs": [tensor(name, [-1.0, 2.0], shape=[2])]}
        )
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == [0.0, 2.0]
    assert not marker.exists()
    src = Path(__file__).resolve().parents[2] / "src" / "ziggurat"
    for folder in ("server", "formats"):
        for f in (src / folder).rglob("*.py"):
            text = f.read_text()
            for bad in (
                "import pickle",
                "pickle.load",
                "marshal.load",
                "eval(",
                "allow_pickle=True",
            ):
                assert bad not in text, (f, bad)
