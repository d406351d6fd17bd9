"""The scheduler on its own: stacking, exact splitting, isolation of failures, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ziggurat.server.batching import Scheduler
from ziggurat.server.errors import HTTPError

pytestmark = pytest.mark.anyio


class Recorder:
    """A fake model: y = 2x + row-sum; records each run's batch size; can fail or be slow."""

    def __init__(self, delay=0.0, fail_on=None, mix_rows=False):
        self.sizes, self.delay, self.fail_on, self.mix_rows = [], delay, fail_on, mix_rows
        self.lock = threading.Lock()
        self.started = threading.Event()  # set when the first run begins
        self.threads: list[int] = []  # the thread of each run

    def __call__(self, names, feeds):
        x = feeds["x"]
        with self.lock:
            self.sizes.append(x.shape[0])
            self.threads.append(threading.get_ident())
        self.started.set()
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and np.any(x == self.fail_on):
            raise ValueError("poisoned row")
        if self.mix_rows:
            return [np.full((1, 1), x.sum(), np.float32)]
        return [x * 2 + x.sum(axis=1, keepdims=True)]


def make(run, **kw):
    kw.setdefault("max_batch_size", 16)
    kw.setdefault("batch_axis", True)
    return Scheduler(run, ThreadPoolExecutor(1), **kw)


async def test_stacks_and_splits_exactly():
    run = Recorder(delay=0.02)
    s = make(run)
    xs = [np.full((1 + i % 3, 2), i, np.float32) for i in range(20)]
    outs = await asyncio.gather(*(s.submit({"x": x}, ["y"]) for x in xs))
    for x, (y,) in zip(xs, outs):
        np.testing.assert_array_equal(y, x * 2 + x.sum(axis=1, keepdims=True))
    assert max(run.sizes) > 3 and all(n <= 16 for n in run.sizes)
    assert sum(run.sizes) == sum(len(x) for x in xs)
    await s.drain()


async def test_incompatible_requests_do_not_stack():
    run = Recorder(delay=0.01)
    s = make(run)
    a = [np.ones((1, 2), np.float32) for _ in range(4)]
    b = [np.ones((1, 3), np.float32) for _ in range(4)]
    c = [np.ones((1, 2), np.float64) for _ in range(4)]
    outs = await asyncio.gather(*(s.submit({"x": x}, ["y"]) for x in a + b + c))
    assert [o[0].shape for o in outs] == [(1, 2)] * 4 + [(1, 3)] * 4 + [(1, 2)] * 4
    assert [o[0].dtype for o in outs][-1] == np.float64
    await s.drain()


async def test_failed_batch_is_retried_per_request():
    run = Recorder(delay=0.01, fail_on=13)
    s = make(run)
    xs = [np.full((1, 2), i, np.float32) for i in range(20)]
    res = await asyncio.gather(*(s.submit({"x": x}, ["y"]) for x in xs), return_exceptions=True)
    assert isinstance(res[13], ValueError)
    for i, r in enumerate(res):
        if i != 13:
            np.testing.assert_array_equal(r[0], xs[i] * 2 + xs[i].sum(axis=1, keepdims=True))
    await s.drain()


async def test_row_mixing_model_turns_batching_off():
    run = Recorder(delay=0.01, mix_rows=True)
    s = make(run)
    xs = [np.full((1, 2), i, np.float32) for i in range(10)]
    res = await asyncio.gather(*(s.submit({"x": x}, ["y"]) for x in xs))
    assert [float(r[0].ravel()[0]) for r in res] == [2.0 * i for i in range(10)]
    assert s.batch_axis is False
    await s.drain()


async def test_no_batching_when_off_or_without_batch_axis():
    for kw in ({"max_batch_size": 0}, {"batch_axis": False}):
        run = Recorder(delay=0.005)
        s = make(run, **kw)
        await asyncio.gather(
            *(s.submit({"x": np.ones((2, 2), np.float32)}, ["y"]) for _ in range(6))
        )
        assert run.sizes == [2] * 6
        await s.drain()


async def test_group_stacks_without_dynamic_batching():
    run = Recorder(delay=0.01)
    s = make(run, max_batch_size=0)
    g = object()
    await asyncio.gather(
        *(s.submit({"x": np.ones((1, 2), np.float32)}, ["y"], group=g) for _ in range(6))
    )
    assert sum(run.sizes) == 6 and len(run.sizes) < 6
    await s.drain()


async def test_cancelled_requests_are_dropped_and_queue_is_bounded():
    run = Recorder(delay=0.05)
    s = make(run, max_batch_size=0, max_queue_size=3)
    first = asyncio.ensure_future(s.submit({"x": np.ones((1, 2), np.float32)}, ["y"]))
    # the first request is running (not queued) before the queue is filled
    assert await asyncio.get_running_loop().run_in_executor(None, run.started.wait, 30)
    queued = [
        asyncio.ensure_future(s.submit({"x": np.ones((1, 2), np.float32)}, ["y"])) for _ in range(3)
    ]
    await asyncio.sleep(0)
    with pytest.raises(HTTPError) as e:
        await s.submit({"x": np.ones((1, 2), np.float32)}, ["y"])
    assert e.value.status == 503
    for q in queued:
        q.cancel()
    await first
    await s.drain()  # everything still queued has been run or dropped
    assert len(run.sizes) == 1  # the cancelled ones never ran


async def test_queue_delay_waits_for_fuller_batches():
    """With a queue delay far longer than the test, requests arriving one by one are held until
    the batch is full, then run together at once (not after the delay)."""
    run = Recorder()
    s = make(run, max_batch_size=8, max_queue_delay_us=60_000_000)

    async def late(i):
        for _ in range(i):  # arrive one after another, on later event-loop turns
            await asyncio.sleep(0)
        return await s.submit({"x": np.ones((1, 2), np.float32)}, ["y"])

    await asyncio.gather(*(late(i) for i in range(8)))
    assert run.sizes == [8]
    await s.drain()


async def test_inline_runs_for_fast_models():
    """Once runs are known to be faster than inline_run_us, they run on the event loop's own
    thread instead of the executor's."""
    run = Recorder()
    s = make(run, max_batch_size=0, inline_run_us=60_000_000)
    for _ in range(3):
        await s.submit({"x": np.ones((1, 2), np.float32)}, ["y"])
    assert s.mean_row_s is not None
    loop_thread = threading.get_ident()
    assert run.threads[0] != loop_thread  # the first run measures, in the executor
    assert run.threads[-1] == loop_thread  # later ones run inline
    await s.drain()
