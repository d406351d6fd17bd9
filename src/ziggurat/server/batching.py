"""Per-model request scheduling: a bounded queue, dynamic batching, execution off the event loop.

Every inference of a model goes through its :class:`Scheduler`. Requests wait in a FIFO queue;
a dispatcher task takes the oldest one and, when the model has a batch axis and batching is on,
stacks the compatible requests queued behind it (same inputs, dtypes and non-batch dims, same
outputs) up to ``max_batch_size`` rows. The stacked run executes in the model's thread pool (at
most ``concurrency`` runs at once) and its outputs are split back along axis 0, so each request
gets exactly its own rows. Batching is opportunistic: with ``max_queue_delay_us = 0`` nothing
waits for a fuller batch, the batch is whatever queued while the previous run was busy.

Safety: if a stacked run fails, or an output's first axis is not the stacked row count (the model
mixes rows), each request of that batch is re-run alone so that errors and results stay per
request; in the second case batching is switched off for the model. Requests whose caller gave
up (timeout, disconnect) are dropped before they run, so abandoned work does not pile up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ziggurat.server.errors import unavailable

log = logging.getLogger("ziggurat.server")

RunFn = Callable[[Sequence[str], dict[str, np.ndarray]], list[np.ndarray]]
GROUP_MAX_ROWS = 256  # /api/v1/batch items of one call stack up to this many rows


@dataclass(eq=False)
class Job:
    feeds: dict[str, np.ndarray]
    names: tuple[str, ...]
    future: asyncio.Future
    rows: int  # size of axis 0 shared by every feed; 0 when the job cannot be stacked
    key: tuple  # jobs with equal keys can be stacked
    group: object | None = None
    enqueued: float = field(default_factory=time.perf_counter)
    started: float = 0.0


@dataclass
class BatchReport:
    """What one executed run did, for metrics."""

    rows: int
    requests: int
    queue_s: list[float]
    compute_s: float
    ok: bool


class Scheduler:
    """Queue, batch and run one model's requests (see the module docstring)."""

    def __init__(
        self,
        run: RunFn,
        executor: Executor,
        *,
        max_batch_size: int = 0,
        max_queue_delay_us: int = 0,
        max_queue_size: int = 1024,
        concurrency: int = 1,
        batch_axis: bool = False,
        on_batch: Callable[[BatchReport], None] | None = None,
        name: str = "model",
        inline_run_us: int = 0,
    ):
        self._run = run
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.delay_s = max_queue_delay_us / 1e6
        self.max_queue_size = max_queue_size
        self.concurrency = concurrency
        self.batch_axis = batch_axis
        self._on_batch = on_batch
        self.name = name
        self._queue: deque[Job] = deque()
        self._wake: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._task: asyncio.Task | None = None
        self._running = 0
        self._closing = False
        self._idle: asyncio.Event | None = None
        # Runs whose recent mean is below this execute on the event loop: for a model that
        # takes tens of microseconds, the hop to a worker thread and back (and the GIL hand-off
        # it forces) costs more than the run itself, and blocks the loop no less.
        self.inline_s = inline_run_us / 1e6
        self.mean_row_s: float | None = None  # recent mean run time per row

    # -- public ------------------------------------------------------------------------------
    @property
    def dynamic(self) -> bool:
        return self.batch_axis and self.max_batch_size > 1

    @property
    def pending(self) -> int:
        """Requests queued or running."""
        return len(self._queue) + self._running

    async def submit(
        self, feeds: dict[str, np.ndarray], names: Sequence[str], group: object | None = None
    ) -> list[np.ndarray]:
        """Run one request (maybe stacked with others); returns its outputs in ``names`` order."""
        if self._closing:
            raise unavailable(f"model {self.name!r} is being unloaded; retry")
        if len(self._queue) >= self.max_queue_size:
            raise unavailable(
                f"model {self.name!r} has {len(self._queue)} requests queued "
                f"(max_queue_size); retry later"
            )
        self._ensure_started()
        loop = asyncio.get_running_loop()
        job = Job(feeds, tuple(names), loop.create_future(), 0, (), group)
        job.rows, job.key = self._stack_key(feeds, job.names, group)
        self._queue.append(job)
        self._wake.set()
        # Cancelling the caller (timeout, disconnect) cancels job.future: the dispatcher skips it.
        return await job.future

    async def drain(self, timeout_s: float | None = None) -> None:
        """Stop taking requests; wait until queued and running ones have finished."""
        self._closing = True
        if self._task is None:
            return
        if self._queue or self._running:
            self._idle = self._idle or asyncio.Event()
            self._wake.set()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout_s)
            except TimeoutError:
                log.warning("model %s: drain timed out with %d pending", self.name, self.pending)
        self._task.cancel()
        for job in self._queue:
            if not job.future.done():
                job.future.set_exception(unavailable(f"model {self.name!r} was unloaded; retry"))
        self._queue.clear()

    # -- internals ---------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._task is None:
            self._wake = asyncio.Event()
            self._slots = asyncio.Semaphore(self.concurrency)
            self._task = asyncio.get_running_loop().create_task(self._dispatch())

    def _stack_key(self, feeds: dict[str, np.ndarray], names: tuple[str, ...], group: object):
        if not self.batch_axis or not (self.max_batch_size > 1 or group is not None):
            return 0, ()
        rows = None
        sig = []
        for k in sorted(feeds):
            a = feeds[k]
            if not isinstance(a, np.ndarray) or a.ndim == 0 or a.dtype == object:
                return 0, ()
            if rows is None:
                rows = a.shape[0]
            elif a.shape[0] != rows:
                return 0, ()
            sig.append((k, a.dtype.str, a.shape[1:]))
        if not rows:
            return 0, ()
        return rows, (tuple(sig), names, None if self.dynamic else group)

    def _limit(self, job: Job) -> int:
        if self.dynamic:
            return self.max_batch_size
        return GROUP_MAX_ROWS

    async def _dispatch(self) -> None:
        while True:
            if not self._queue:
                if self._idle is not None and not self._running:
                    self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._slots.acquire()
            batch = await self._collect()
            if not batch:
                self._slots.release()
                continue
            self._start(batch)

    def _live(self, job: Job) -> bool:
        return not job.future.done()

    async def _collect(self) -> list[Job]:
        """Take the oldest live job and the stackable jobs behind it."""
        while self._queue and not self._live(self._queue[0]):
            self._queue.popleft()
        if not self._queue:
            return []
        head = self._queue[0]
        if not head.rows:
            return [self._queue.popleft()]
        limit = self._limit(head)
        if self.delay_s > 0 and self.dynamic:
            # Wait (bounded by the head's age) for enough rows to fill the batch.
            while self._rows_available(head, limit) < limit:
                left = head.enqueued + self.delay_s - time.perf_counter()
                if left <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except TimeoutError:
                    break
            if not self._live(head):
                return []
        batch, rows, keep = [], 0, deque()
        while self._queue:
            job = self._queue.popleft()
            if not self._live(job):
                continue
            if job.key == head.key and rows + job.rows <= limit or not batch:
                batch.append(job)
                rows += job.rows
            else:
                keep.append(job)
            if rows >= limit:
                break
        keep.extend(self._queue)
        self._queue = keep
        return batch

    def _rows_available(self, head: Job, limit: int) -> int:
        rows = 0
        for job in self._queue:
            if job.key == head.key and self._live(job):
                rows += job.rows
                if rows >= limit:
                    break
        return rows

    def _start(self, batch: list[Job]) -> None:
        self._running += 1
        now = time.perf_counter()
        for job in batch:
            job.started = now
        rows = sum(j.rows for j in batch) or len(batch)
        if (
            self.mean_row_s is not None
            and self.mean_row_s * rows < self.inline_s
            and self._running == 1
        ):
            self._deliver(batch, self._execute(batch))
            return
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._executor, self._execute, batch)
        fut.add_done_callback(lambda f: self._finish(batch, f))

    def _execute(self, batch: list[Job]) -> tuple[list[Any], float, bool]:
        """Worker thread: run the batch; returns (per-job outputs or exception, seconds, ok)."""
        t0 = time.perf_counter()
        if len(batch) == 1:
            job = batch[0]
            try:
                res: list[Any] = [self._run(job.names, job.feeds)]
                ok = True
            except Exception as e:  # delivered to the caller, mapped to a status there
                res, ok = [e], False
            return res, time.perf_counter() - t0, ok
        results = self._execute_stacked(batch)
        if results is None:  # stacked run failed or mixed rows: run each alone
            results = []
            for job in batch:
                try:
                    results.append(self._run(job.names, job.feeds))
                except Exception as e:
                    results.append(e)
        ok = not any(isinstance(r, Exception) for r in results)
        return results, time.perf_counter() - t0, ok

    def _execute_stacked(self, batch: list[Job]) -> list[Any] | None:
        head = batch[0]
        total = sum(j.rows for j in batch)
        feeds = {k: np.concatenate([j.feeds[k] for j in batch]) for k in head.feeds}
        try:
            outs = self._run(head.names, feeds)
        except Exception as e:
            log.info(
                "model %s: stacked run of %d failed (%s); running alone", self.name, len(batch), e
            )
            return None
        for o in outs:
            if not isinstance(o, np.ndarray) or o.ndim == 0 or o.shape[0] != total:
                shape = getattr(o, "shape", None)
                log.warning(
                    "model %s: an output of a %d-row batch has shape %s, not %d rows; "
                    "the model does not batch on axis 0, dynamic batching is now off for it",
                    self.name,
                    total,
                    shape,
                    total,
                )
                self.batch_axis = False
                return None
        cuts = np.cumsum([j.rows for j in batch])[:-1]
        split = [np.split(o, cuts) for o in outs]
        return [[parts[i] for parts in split] for i in range(len(batch))]

    def _finish(self, batch: list[Job], fut: asyncio.Future) -> None:
        if fut.cancelled():
            outcome: tuple[list[Any], float, bool] = ([], 0.0, False)
        elif fut.exception() is not None:
            outcome = ([fut.exception()] * len(batch), 0.0, False)
        else:
            outcome = fut.result()
        self._deliver(batch, outcome)

    def _deliver(self, batch: list[Job], outcome: tuple[list[Any], float, bool]) -> None:
        results, compute, ok = outcome
        self._running -= 1
        self._slots.release()
        if ok:
            per_row = compute / (sum(j.rows for j in batch) or len(batch))
            m = self.mean_row_s
            self.mean_row_s = per_row if m is None else 0.8 * m + 0.2 * per_row
        for job, res in zip(batch, results):
            if job.future.done():
                continue
            if isinstance(res, BaseException):
                job.future.set_exception(res)
            else:
                job.future.set_result(res)
        if self._on_batch is not None:
            self._on_batch(
                BatchReport(
                    rows=sum(j.rows for j in batch) or len(batch),
                    requests=len(batch),
                    queue_s=[j.started - j.enqueued for j in batch],
                    compute_s=compute,
                    ok=ok,
                )
            )
        self._wake.set()
