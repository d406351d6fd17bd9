"""Request limits across a real socket (uvicorn on 127.0.0.1): a 413 that clients sending the whole
body first can read (requests, http.client), a gzip bomb, a 504 for a stalled body, a 499 for a
client that leaves, and a CORS preflight."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import time

import httpx
import pytest
import requests

from tests.server.conftest import ServerProcess, build_repo
from tests.server.helpers import X, tensor

MB = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = build_repo(tmp_path_factory.mktemp("limitsrepo"))
    srv = ServerProcess(
        str(repo),
        "--no-access-log",
        "--max-body-mb",
        "4",
        "--request-timeout-ms",
        "1500",
        "--cors-origin",
        "https://app.example",
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        assert srv.stop() == 0


class _Zeros:
    """A file-like body of ``n`` zero bytes, streamed: requests sends it with a Content-Length."""

    def __init__(self, n: int):
        self.len = n
        self.sent = 0

    def read(self, size: int = -1) -> bytes:
        size = min(self.len - self.sent, 1 * MB if size is None or size < 0 else size)
        self.sent += size
        return b"\0" * size


def _chunks(n_mb: int):
    for _ in range(n_mb):
        yield b"\0" * MB


def test_300mb_body_gets_a_readable_413(server):
    """requests writes the whole 300 MB before it reads: it must see the 413, not a reset."""
    url = server.url + "/v2/models/linear/infer"
    body = _Zeros(300 * MB)
    r = requests.post(url, data=body, headers={"content-type": "application/json"}, timeout=60)
    assert body.sent == 300 * MB
    assert r.status_code == 413 and "max_body_mb" in r.json()["error"]
    # chunked (no Content-Length): the limit trips while streaming; the rest is drained
    r = requests.post(url, data=_chunks(300), timeout=60)
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]
    # and the server answers the next request normally
    r = requests.post(url, json={"inputs": [tensor("x", X)]}, timeout=10)
    assert r.status_code == 200


def test_http_client_sending_everything_first_reads_its_413(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        size = 50 * MB
        conn.putrequest("POST", "/api/v1/infer")
        conn.putheader("content-length", str(size))
        conn.endheaders()
        for _ in range(size // MB):
            conn.send(b"\0" * MB)
        resp = conn.getresponse()
        assert resp.status == 413 and "max_body_mb" in json.loads(resp.read())["error"]
    finally:
        conn.close()


def test_gzip_bomb_is_413(server):
    bomb = gzip.compress(b"\0" * (64 * MB), 9)  # ~64 KB on the wire, 64 MB inflated
    assert len(bomb) < MB
    r = requests.post(
        server.url + "/v2/models/linear/infer",
        data=bomb,
        headers={"content-encoding": "gzip", "content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]


def _raw(port: int, data: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(data)
    return s


def _read_response(s: socket.socket) -> bytes:
    out = b""
    while b"\r\n\r\n" not in out:
        part = s.recv(65536)
        if not part:
            break
        out += part
    head, _, rest = out.partition(b"\r\n\r\n")
    length = int(
        next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")).split(
            b":"
        )[1]
    )
    while len(rest) < length:
        rest += s.recv(65536)
    return head + b"\r\n\r\n" + rest


def test_stalled_body_is_504_and_connection_closed(server):
    """A client that sends half its body and stops holds nothing past request_timeout_ms."""
    s = _raw(
        server.port,
        b"POST /v2/models/linear/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 1000\r\n\r\n" + b'{"inputs": [',
    )
    try:
        resp = _read_response(s)
        assert resp.startswith(b"HTTP/1.1 504") and b"request_timeout_ms" in resp
        assert b"connection: close" in resp.lower()
    finally:
        s.close()


def test_client_gone_mid_body_is_counted_499(server):
    before = _count_499(server)
    s = _raw(
        server.port,
        b"POST /v2/models/linear/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n"
        + b"{" * 100,
    )
    s.close()
    deadline = time.monotonic() + 20
    while _count_499(server) == before:
        assert time.monotonic() < deadline, "the 499 was never recorded"
        time.sleep(0.05)
    assert httpx.get(server.url + "/v2/health/live", timeout=5).status_code == 200


def _count_499(server) -> int:
    text = httpx.get(server.url + "/metrics", timeout=5).text
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("ziggurat_requests_total") and 'status="499"' in line
    )


def test_cors_preflight_over_a_socket(server):
    r = httpx.options(
        server.url + "/v2/models/linear/infer",
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, authorization",
        },
        timeout=5,
    )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "authorization" in r.headers["access-control-allow-headers"]
    r = httpx.options(
        server.url + "/v2/models/linear/infer",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        timeout=5,
    )
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    r = httpx.post(
        server.url + "/v2/models/linear/infer",
        json={"inputs": [tensor("x", X)]},
        headers={"origin": "https://app.example"},
        timeout=5,
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"


def test_slow_clients_do_not_hold_connections(server):
    """Slowloris: 50 connections that send part of their headers and 50 that send nothing.
    Others are served meanwhile; past the header deadline (request_timeout_ms here) the partial
    ones get a 408 and every one is closed. A WebSocket open as long is left alone."""
    import asyncio

    from websockets.asyncio.client import connect

    async def main():
        ws = await connect(server.url.replace("http", "ws") + "/api/v1/stream")
        slow, idle = [], []
        for _ in range(50):
            r, w = await asyncio.open_connection("127.0.0.1", server.port)
            w.write(b"POST /v2/models/linear/infer HTTP/1.1\r\nhost: x\r\ncontent-le")
            slow.append((r, w))
            idle.append(await asyncio.open_connection("127.0.0.1", server.port))
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
            for _ in range(20):
                r = await c.post("/v2/models/linear/infer", json={"inputs": [tensor("x", X)]})
                assert r.status_code == 200
        answers = await asyncio.wait_for(asyncio.gather(*(r.read() for r, _ in slow)), 20)
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers)
        closed = await asyncio.wait_for(asyncio.gather(*(r.read() for r, _ in idle)), 20)
        assert closed == [b""] * 50  # closed without an answer: they never asked anything
        for _, w in slow + idle:
            w.close()
        msg = {"id": 1, "model": "linear", "inputs": [tensor("x", X)]}
        await ws.send(json.dumps(msg))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        await ws.close()
        return reply

    assert asyncio.run(main())["id"] == 1


def test_urllib_reads_its_413(server):
    """urllib sends the whole body before it reads the answer, like requests."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        server.url + "/api/v1/infer",
        data=b"\0" * (40 * MB),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=60)
    assert err.value.code == 413
    assert "max_body_mb" in json.loads(err.value.read())["error"]
