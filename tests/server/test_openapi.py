"""GET /openapi.json and /docs: the API described, every route in the router documented."""

from __future__ import annotations

import re

import pytest

from tests.server.conftest import AppClient, make_config


@pytest.mark.anyio
async def test_openapi_and_docs(repo_dir):
    async with AppClient(make_config(repo_dir)) as c:
        spec = (await c.get("/openapi.json")).json()
        assert spec["openapi"].startswith("3.") and "/v2/models/{model}/infer" in spec["paths"]
        r = await c.get("/docs")
        assert "swagger" in r.text.lower() and r.headers["content-type"].startswith("text/html")


@pytest.mark.anyio
async def test_every_route_is_documented_with_its_method(repo_dir):
    async with AppClient(make_config(repo_dir)) as c:
        spec = (await c.get("/openapi.json")).json()
        app = c._transport.app
        routes = [r for by in app.router.static.values() for r in by.values()]
        routes += [r for _, by in app.router.dynamic for r in by.values()]
        for r in routes:
            assert r.pattern in spec["paths"], r.pattern
            assert r.method.lower() in spec["paths"][r.pattern], (r.method, r.pattern)
            params = set(re.findall(r"\{(\w+)\}", r.pattern))
            op = spec["paths"][r.pattern][r.method.lower()]
            assert {p["name"] for p in op.get("parameters", []) if p["in"] == "path"} == params


# -- schemathesis: requests generated from /openapi.json against a real server on 127.0.0.1 ----
# `make test` runs a few examples per operation; ZIGGURAT_SCHEMATHESIS_EXAMPLES=200 runs longer.
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import schemathesis  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import checks as st_core  # noqa: E402
from schemathesis.specs.openapi import checks as st_checks  # noqa: E402

from tests.server.conftest import ServerProcess, build_repo  # noqa: E402

EXAMPLES = int(os.environ.get("ZIGGURAT_SCHEMATHESIS_EXAMPLES", "4"))


@pytest.fixture(scope="module")
def live_url(tmp_path_factory):
    repo = build_repo(tmp_path_factory.mktemp("strepo"))
    srv = ServerProcess(str(repo), "--no-access-log", "--model-cache-size", "20")
    try:
        srv.wait_ready()
        yield srv.url
    finally:
        assert srv.stop() == 0


@pytest.fixture(scope="module")
def live_schema(live_url):
    return schemathesis.openapi.from_url(live_url + "/openapi.json")


_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)
REAL_MODEL_CHECKS = [
    st_core.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
]


def _operations(schema):
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= 25  # every documented operation, not a silently empty run
    return ops


def _run(op, check):
    @given(case=op.as_strategy())
    @_SETTINGS
    def one(case):
        check(case)

    one()


def test_schema_holds_for_generated_requests(live_schema, live_url, tmp_path):
    """`st run --checks all` as a user would run it, every phase (coverage, fuzzing, stateful,
    undeclared methods): no 5xx; statuses, content types and bodies as documented; schema-valid
    requests accepted (unknown models are a documented 404), schema-invalid ones rejected."""
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        live_url + "/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--generation-deterministic",
        "--no-color",
    ]
    # cwd: the CLI keeps its example database in ./.schemathesis, which must not land in the tree
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert re.search(r"\d+ generated, \d+ passed", out.stdout), out.stdout[-2000:]
    assert len(_operations(live_schema)) >= 25


def _on_real_model(case):
    if "model" in (case.path_parameters or {}):
        case.path_parameters["model"] = "linear"
    if isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = "linear"
    case.call_and_validate(checks=REAL_MODEL_CHECKS)


def test_generated_requests_on_real_models(live_schema):
    """The same requests aimed at a model that exists: they reach decoding, validation and the
    engine. Random tensors rarely fit the model, so 400s are expected; 5xx and bodies that
    contradict the schema are not."""
    for op in _operations(live_schema):
        if "unload" not in op.path:  # an unloaded model is a 503 by design, for every later op
            _run(op, _on_real_model)
