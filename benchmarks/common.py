"""Shared helpers for the benchmark scripts: seeded inputs, timing, medians."""

from __future__ import annotations

import statistics
import time

import numpy as np


def make_feeds(inputs, batch: int = 1, seq: int = 128, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for a model's NodeArgs (onnxruntime's or Ziggurat's): token ids in [0, 1000),
    attention masks of ones, token types 0, floats from N(0, 1); symbolic dims: batch -> ``batch``,
    else ``seq``."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in inputs:
        shape = []
        for i, d in enumerate(arg.shape):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            else:
                shape.append(batch if i == 0 else seq)
        if "int64" in arg.type:
            if "mask" in arg.name:
                feeds[arg.name] = np.ones(shape, np.int64)
            elif "token_type" in arg.name:  # segment ids: 0 (a single sentence)
                feeds[arg.name] = np.zeros(shape, np.int64)
            else:
                feeds[arg.name] = rng.integers(0, 1000, size=shape, dtype=np.int64)
        else:
            feeds[arg.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def median_ms(fn, warmup: int = 3, runs: int = 20) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3
