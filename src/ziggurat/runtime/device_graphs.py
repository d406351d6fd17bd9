"""Device graphs: one signature's device work recorded once and replayed as a whole.

Python's per-kernel launch cost (~5-10 us a step: BERT-base has ~200 steps) exceeds the GPU time
of small models, so a backend that can record its queued work (CUDA graphs: ``stream capture``)
replays it per run instead: copy the new inputs into the recorded input buffers, launch the graph,
copy the outputs back. A signature qualifies once its shape arithmetic is frozen (``_Signature``)
and every step runs on the device (no CPU fallback, whose host round trip cannot be recorded).
The recording keeps its own blocks (its intermediates' addresses are baked into the graph) until
the signature is forgotten or the session closes; a failed recording leaves the signature on the
step-by-step path for good.

A backend opts in with ``capture(fn) -> (graph, result, keepalive)``, ``replay(graph)`` and
``copy_into(tensor, host)``. Off unless ``ZIGGURAT_DEVICE_GRAPHS=1`` (or ``DeviceGraph(...,
graphs=True)``): the CUDA recording has not yet run on a GPU (benchmarks/gpu/run.sh measures both).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from .placement import CPU

log = logging.getLogger("ziggurat.device")
ENABLED = os.environ.get("ZIGGURAT_DEVICE_GRAPHS", "0") == "1"


class Recorded:
    """A signature's recorded graph with its input/output buffers and what keeps them alive."""

    __slots__ = ("graph", "inputs", "outputs", "keep")

    def __init__(self, graph: Any, inputs: list[Any], outputs: list[Any], keep: Any):
        self.graph, self.inputs, self.outputs, self.keep = graph, inputs, outputs, keep

    def release(self, backend: Any) -> None:
        for t in (*self.inputs, *self.outputs):
            backend.release(t)
        self.graph = self.keep = None
        self.inputs, self.outputs = [], []


def capturable(dg: Any, state: Any, inputs: list[Any]) -> bool:
    """Whether this signature can be recorded (see the module docstring)."""
    if not state.warm or state.graph_failed or not hasattr(dg.backend, "capture"):
        return False  # warm: frozen, and their device copies made (no uploads while recording)
    if any(type(x) is not np.ndarray for x in inputs):
        return False
    if any(s.where == CPU for s in state.placement.steps):
        return False
    produced = {o for s in dg.plan.steps for o in s.outputs if s.index not in dg._host_steps}
    return all(name in produced for name in dg.plan.outputs)


def record(dg: Any, state: Any, inputs: list[Any], make_run: Any) -> Recorded | None:
    """Record the signature's device work; None (and never again) if the backend refused."""
    backend = dg.backend
    dev_inputs = [backend.to_device(dg.to_device_dtype(np.asarray(x))) for x in inputs]

    def body() -> list[Any]:
        run = make_run(dg, inputs, state, dev_inputs)
        try:
            return run.execute(device_outputs=True)
        finally:
            run.release_all()

    try:
        graph, outputs, keep = backend.capture(body)
    except Exception as exc:  # e.g. a kernel that synchronises with the host mid-recording
        log.warning("model %s: device graph recording failed, running step by step: %s: %s",
                    dg.model_name, type(exc).__name__, exc)  # fmt: skip
        state.graph_failed = True
        for t in dev_inputs:
            backend.release(t)
        return None
    return Recorded(graph, dev_inputs, outputs, keep)


def replay(dg: Any, rec: Recorded, inputs: list[Any]) -> list[Any]:
    """One run: new inputs into the recorded buffers, the graph, the outputs back to the host."""
    backend = dg.backend
    for t, x in zip(rec.inputs, inputs, strict=True):
        backend.copy_into(t, dg.to_device_dtype(x))
    backend.replay(rec.graph)
    outs = []
    for name, t in zip(dg.plan.outputs, rec.outputs, strict=True):
        a = backend.to_host(t)
        if dg.precision == "fp16" and a.dtype == np.float16 and name in dg._f32_outputs:
            a = a.astype(np.float32)
        outs.append(a)
    return outs
