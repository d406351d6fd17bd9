"""Placement: which steps of a ``Plan`` run on a device backend and which on the CPU, and why.

Each step gets one of three places:

- ``device``: the backend has a kernel for the op at the model's opset and its ``supports`` check
  accepts the inputs' shapes and dtypes;
- ``host``: shape arithmetic — every output is determined by the input shapes and constants alone
  (``Plan.static_values``: Shape, Gather on shapes, Concat of dims...). Those small int64 values
  are computed on the host, where device kernels read them anyway (``kernels.HOST_INPUTS``);
  ``Shape``/``Size`` read a device tensor's shape without copying it;
- ``cpu``: a fallback, with its reason (no device kernel, a dtype or limit the kernel refuses, a
  subgraph). Copies are inserted where values cross between device and CPU steps.

Decisions need the inputs' dtypes and shapes, which ONNX files often leave undeclared, so they are
made on a signature's first run from the real tensors and kept per signature (``Placement``).
Provider resolution (``resolve_providers``) lives here too: onnxruntime's names, in order of
preference, falling back with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backends import device as devices
from .plan import Plan, Step

DEVICE, HOST, CPU = "device", "host", "cpu"


@dataclass
class StepPlace:
    """Where one step runs; ``reason`` says why a step is not on the device."""

    index: int
    node: str
    op: str
    where: str
    reason: str = ""
    entry: Any = None  # the backend's KernelEntry for device steps


@dataclass
class Placement:
    """The places of a plan's steps for one input signature, and the copies they imply."""

    provider: str
    steps: list[StepPlace] = field(default_factory=list)
    uploads: int = 0  # host->device copies per run (graph inputs and fallback boundaries)
    downloads: int = 0  # device->host copies per run (graph outputs and fallback boundaries)

    def counts(self) -> dict[str, int]:
        out = {DEVICE: 0, HOST: 0, CPU: 0}
        for s in self.steps:
            out[s.where] += 1
        return out

    def device_fraction(self) -> float:
        """Share of the steps that run on the device, shape arithmetic counted as placed (it is
        host work by design on every device, as in onnxruntime's CUDA provider)."""
        c = self.counts()
        total = sum(c.values())
        return (c[DEVICE] + c[HOST]) / total if total else 1.0

    def report(self) -> list[dict[str, Any]]:
        """Per node: ``{"node", "op", "where", "provider", "reason"}``."""
        return [
            {
                "node": s.node,
                "op": s.op,
                "where": s.where,
                "provider": self.provider if s.where == DEVICE else "CPUExecutionProvider",
                "reason": s.reason,
            }
            for s in self.steps
        ]

    def text(self) -> str:
        """A readable table: counts, copies per run, then each step not on the device."""
        c = self.counts()
        lines = [
            f"placement on {self.provider}: {c[DEVICE]} device, {c[HOST]} host (shape "
            f"arithmetic), {c[CPU]} cpu fallback ({self.device_fraction():.0%} placed); "
            f"{self.uploads} host->device and {self.downloads} device->host copies per run"
        ]
        for s in self.steps:
            mark = {DEVICE: "device", HOST: "host  ", CPU: "CPU   "}[s.where]
            why = f"  ({s.reason})" if s.reason else ""
            lines.append(f"  [{mark}] {s.node} ({s.op}){why}")
        return "\n".join(lines)


def host_steps(plan: Plan) -> set[int]:
    """Steps whose outputs all follow from input shapes and constants: the shape arithmetic."""
    value_static, _ = plan.static_values()
    return {
        s.index
        for s in plan.steps
        if s.outputs and not s.graphs and all(o in value_static for o in s.outputs)
    }


# Value-static steps reading bigger tensors than this (a constant table Gather-ed with indices
# known from shapes alone, e.g. BERT's position embeddings) are real work: they go to the device.
HOST_MAX_ELEMENTS = 4096


def _size(shape: tuple) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def decide(step: Step, backend: Any, metas: list[Any], is_host: bool, attrs: dict) -> StepPlace:
    """The place of one step given its inputs' ``(shape, dtype)`` (None: omitted or not a
    tensor — e.g. a sequence)."""
    node = step.node
    place = StepPlace(step.index, node.label, step.op, CPU)
    if is_host and all(
        m is None or _size(m[0]) <= HOST_MAX_ELEMENTS or step.op in ("Shape", "Size") for m in metas
    ):
        place.where = HOST
        return place
    if step.graphs:
        place.reason = "has a subgraph (If/Loop/Scan runs on the CPU)"
        return place
    entry = backend.kernel(node.op_type, node.domain, step.opset)
    if entry is None:
        place.reason = f"no {backend.device.kind} kernel for {step.op} (opset {step.opset})"
        return place
    for name, meta in zip(node.inputs, metas, strict=True):
        if name and meta is None:
            place.reason = f"input '{name}' is not a tensor"
            return place
    if entry.supports is not None:
        why = entry.supports(metas, attrs)
        if why:
            place.reason = why
            return place
    place.where, place.entry = DEVICE, entry
    return place


# -- providers -------------------------------------------------------------------------------------
def resolve_providers(providers: Sequence[Any] | None) -> tuple[list[str], str | None]:
    """onnxruntime's provider list, in order of preference -> (providers in use, device kind or
    None for the CPU). The first available device provider wins; each requested one that is not
    available gives a RuntimeWarning saying why; the CPU is always last (it runs fallbacks)."""
    names = [p[0] if isinstance(p, tuple) else p for p in (providers or ["CPUExecutionProvider"])]
    chosen: str | None = None
    for name in names:
        kind = devices.PROVIDERS.get(name)
        if kind is None:
            _warn(f"execution provider {name!r} is unknown to Ziggurat")
            continue
        if kind == "cpu":
            break  # the CPU was preferred over everything after it
        if chosen is not None:
            continue
        if devices.available(kind):
            chosen = name
            break
        _warn(
            f"execution provider {name!r} is not available here ({devices.why_unavailable(kind)})"
        )
    if chosen is None:
        return ["CPUExecutionProvider"], None
    return [chosen, "CPUExecutionProvider"], devices.PROVIDERS[chosen]


def _warn(why: str) -> None:
    # stacklevel: _warn, resolve_providers, _pick_providers, __init__, then the caller
    warnings.warn(f"{why}; falling back to the next provider", RuntimeWarning, stacklevel=5)


def provider_for(kind: str) -> str:
    """onnxruntime's provider name of a device kind ('cuda' -> 'CUDAExecutionProvider')."""
    for name, k in devices.PROVIDERS.items():
        if k == kind:
            return name
    raise ValueError(f"no execution provider for device {kind!r}")


def device_precision(kind: str, value: str) -> str:
    """Validate ``precision`` for a session on device ``kind``: 'fp32', or 'fp16' where the
    device has float16 arithmetic (every CUDA GPU Ziggurat runs on; Vulkan/WebGPU with the
    ``shader-f16`` feature). Raises ConfigError saying what to use instead."""
    from ..errors import ConfigError

    p = str(value).lower()
    if p == "fp32":
        return p
    if p != "fp16":
        raise ConfigError(
            f"precision {value!r} is not available on device {kind!r}: devices run 'fp32' or "
            "'fp16' ('bf16' is a CPU precision: use providers=['CPUExecutionProvider'])"
        )
    backend = devices.select(kind)
    features = backend.device.features
    if kind != "cuda" and not ({"shader-f16", "fp16"} & set(features)):
        raise ConfigError(
            f"precision='fp16' needs float16 arithmetic, which device {backend.device.name!r} "
            "lacks (no 'shader-f16' feature); use precision='fp32'"
        )
    return p


def provider_options(providers: Sequence[Any] | None, name: str) -> dict[str, Any]:
    """The options given with provider ``name`` as a ``(name, options)`` pair (onnxruntime's
    form; ``gpu_mem_limit`` in bytes sets the device pool's limit), or {}."""
    for p in providers or ():
        if isinstance(p, tuple) and len(p) == 2 and p[0] == name and isinstance(p[1], dict):
            return dict(p[1])
    return {}
