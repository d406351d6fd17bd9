"""Load over real sockets (uvicorn on 127.0.0.1), bounded in count and time: 1,000 connections at
once, and a short soak at ~80 % of measured capacity with every request answered and RSS flat.
The ten-minute soak is benchmarks/server/soak.py."""

from __future__ import annotations

import asyncio

import pytest

from tests.server.conftest import ServerProcess, build_repo
from tests.server.loadgen import burst, capacity, infer_request, paced, rss_bytes


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = build_repo(tmp_path_factory.mktemp("loadrepo"))
    srv = ServerProcess(str(repo / "linear.onnx"), "--no-access-log", "--max-connections", "256")
    try:
        srv.wait_ready()
        yield srv
    finally:
        assert srv.stop() == 0


def test_1000_concurrent_connections_all_answered_cleanly(server):
    tally = asyncio.run(burst(server.port, 1000, infer_request(keep_alive=False)))
    assert tally.errors == {}, tally.errors  # no refused, reset or truncated connection
    assert tally.sent == tally.answered == 1000
    assert set(tally.statuses) <= {200, 429, 503}, tally.statuses
    assert tally.statuses[200] >= 1
    # and the server is fine afterwards
    again = asyncio.run(burst(server.port, 10, infer_request(keep_alive=False)))
    assert again.statuses == {200: 10}


def test_short_soak_at_80_percent_of_capacity(server):
    req = infer_request()
    cap = asyncio.run(capacity(server.port, req, seconds=1.0))
    rate = 0.8 * cap
    asyncio.run(paced(server.port, rate, 1.0, req))  # warm-up at the soak's rate
    rss0 = rss_bytes(server.proc.pid)
    tally = asyncio.run(paced(server.port, rate, 4.0, req))
    rss1 = rss_bytes(server.proc.pid)
    assert tally.errors == {}, tally.errors
    assert tally.sent == tally.answered and tally.statuses == {200: tally.sent}
    assert tally.sent >= 0.5 * rate * 4.0  # the rate was really offered
    assert rss1 < rss0 * 1.05, (rss0, rss1)
