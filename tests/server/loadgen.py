"""A small HTTP/1.1 load generator on asyncio streams, for the load tests and
benchmarks/server/soak.py: raw sockets, so the client costs little next to the server and every
socket error is seen (nothing is retried or hidden by a client library)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field


def infer_request(model: str = "linear", rows: int = 1, keep_alive: bool = True) -> bytes:
    """A POST /v2/models/{model}/infer for the tests' ``linear`` model (x: FP32 [rows, 4])."""
    body = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [rows, 4], "data": [0.5] * (4 * rows)}
            ]
        }
    ).encode()
    head = (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(status, body) of one response with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)


@dataclass
class Tally:
    """What a run sent and what came back: statuses, socket errors, latencies."""

    sent: int = 0
    answered: int = 0
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def add(self, status: int, seconds: float) -> None:
        self.answered += 1
        self.statuses[status] += 1
        self.latencies.append(seconds)

    def p(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def burst(port: int, n: int, request: bytes, timeout: float = 60.0) -> Tally:
    """``n`` connections opened at once; when all are open, each sends one request."""
    tally = Tally()
    opened = 0
    all_open = asyncio.Event()

    async def one() -> None:
        nonlocal opened
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            tally.errors[type(exc).__name__] += 1
            opened += 1
            if opened == n:
                all_open.set()
            return
        opened += 1
        if opened == n:
            all_open.set()
        try:
            await all_open.wait()
            t0 = time.perf_counter()
            writer.write(request)
            await writer.drain()
            tally.sent += 1
            status, _ = await read_response(reader)
            tally.add(status, time.perf_counter() - t0)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            tally.errors[type(exc).__name__] += 1
        finally:
            writer.close()

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), timeout)
    return tally


async def paced(port: int, rate: float, seconds: float, request: bytes, workers: int = 16) -> Tally:
    """About ``rate`` requests/s for ``seconds`` from ``workers`` keep-alive connections, each
    sending on a fixed schedule (late ones go at once); waits for every answer."""
    tally = Tally()
    start = time.perf_counter() + 0.05

    async def worker(k: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = 0
        try:
            while True:
                due = start + (i * workers + k) / rate
                if due - start >= seconds:
                    break
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                t0 = time.perf_counter()
                writer.write(request)
                await writer.drain()
                tally.sent += 1
                try:
                    status, _ = await read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    tally.errors[type(exc).__name__] += 1
                    return
                tally.add(status, time.perf_counter() - t0)
                i += 1
        finally:
            writer.close()

    await asyncio.wait_for(asyncio.gather(*(worker(k) for k in range(workers))), seconds + 60)
    return tally


async def capacity(port: int, request: bytes, seconds: float = 2.0, workers: int = 16) -> float:
    """Requests/s the server sustains with ``workers`` closed-loop keep-alive connections."""
    done = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < end:
                writer.write(request)
                await writer.drain()
                status, _ = await read_response(reader)
                if status == 200:
                    done += 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return done / (time.perf_counter() - t0)


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
