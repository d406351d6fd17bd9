"""Request builders and engine stand-ins shared by the server tests."""

from __future__ import annotations

import json
import struct
import threading

import numpy as np

from ziggurat.server.model import ziggurat_session

X = [[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 2.0, 0.0]]


def tensor(name, data, datatype="FP32", shape=None):
    """A V2 JSON tensor with flat data."""
    arr = np.asarray(data)
    return {
        "name": name,
        "datatype": datatype,
        "shape": list(shape or arr.shape),
        "data": arr.ravel().tolist(),
    }


def binary_body(inputs, outputs=None, binary_output=True):
    """Build a V2 binary-extension body: (body, json length)."""
    head = {"inputs": [], "parameters": {"binary_data_output": binary_output}}
    blobs = []
    for name, arr, datatype in inputs:
        if datatype == "BYTES":
            blob = b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in arr.ravel())
        else:
            blob = arr.tobytes()
        head["inputs"].append(
            {
                "name": name,
                "datatype": datatype,
                "shape": list(arr.shape),
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    if outputs:
        head["outputs"] = outputs
    js = json.dumps(head).encode()
    return js + b"".join(blobs), len(js)


def parse_binary_response(r):
    """(JSON head, {name: (tensor, bytes or None)}) of a binary-extension response."""
    n = int(r.headers["inference-header-content-length"])
    head = json.loads(r.content[:n])
    pos, out = n, {}
    for o in head["outputs"]:
        if "data" in o:
            out[o["name"]] = (o, None)
            continue
        size = o["parameters"]["binary_data_size"]
        out[o["name"]] = (o, r.content[pos : pos + size])
        pos += size
    assert pos == len(r.content)
    return head, out


class Wrapped:
    """A real session whose ``run`` first calls ``before(feeds)`` (block, count, raise)."""

    def __init__(self, inner, before):
        self.inner = inner
        self.before = before

    def get_inputs(self):
        return self.inner.get_inputs()

    def get_outputs(self):
        return self.inner.get_outputs()

    def run(self, names, feeds):
        self.before(feeds)
        return self.inner.run(names, feeds)


class Gate:
    """Runs block until ``open()``; ``started`` counts runs that reached the gate."""

    def __init__(self):
        self.opened = threading.Event()
        self.started = 0
        self.reached = threading.Event()
        self._lock = threading.Lock()

    def _before(self, feeds):
        with self._lock:
            self.started += 1
        self.reached.set()
        if not self.opened.wait(30):
            raise RuntimeError("test gate never opened")

    def open(self):
        self.opened.set()

    def factory(self):
        return lambda path, settings: Wrapped(ziggurat_session(path, settings), self._before)


async def ws_exchange(app, frames, *, path="/api/v1/stream", query=b"", headers=()):
    """Drive ``app``'s WebSocket handler in-process: send ``frames`` (str: text, bytes: binary),
    then wait for one reply per frame or a close. Returns (replies, close code or None)."""
    import asyncio

    inbox: asyncio.Queue = asyncio.Queue()
    inbox.put_nowait({"type": "websocket.connect"})
    for f in frames:
        key = "text" if isinstance(f, str) else "bytes"
        inbox.put_nowait({"type": "websocket.receive", key: f})
    replies, closed = [], []
    done = asyncio.Event()

    async def receive():
        return await inbox.get()

    async def send(m):
        if m["type"] == "websocket.send":
            replies.append(m.get("text") if m.get("text") is not None else m["bytes"])
            if len(replies) >= len(frames):
                done.set()
        elif m["type"] == "websocket.close":
            closed.append(m.get("code"))
            done.set()

    scope = {
        "type": "websocket",
        "path": path,
        "headers": list(headers),
        "query_string": query,
        "client": ("127.0.0.1", 1),
    }
    task = asyncio.ensure_future(app.stream.handle(scope, receive, send))
    try:
        await asyncio.wait_for(done.wait(), 30)
        inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(task, 30)
    finally:
        task.cancel()
    return replies, (closed[0] if closed else None)
