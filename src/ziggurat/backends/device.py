"""Devices: what a plan can be placed on.

A ``Device`` names one compute device (the CPU, a CUDA GPU, a Vulkan/WebGPU adapter, the fake
test device) with the facts placement needs: whether it is a software emulation (Mesa's lavapipe
runs Vulkan on the CPU: right for correctness tests, never for timing), its limits as the driver
reports them (never hard-coded: a storage binding's maximum size differs between drivers), and its
optional features (``shader-f16``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Device:
    kind: str  # "cpu" | "cuda" | "vulkan" | "fake"
    index: int = 0
    name: str = ""
    software: bool = False
    limits: Mapping[str, int] = field(default_factory=dict)
    features: frozenset[str] = frozenset()

    def __str__(self) -> str:
        return self.kind if self.kind == "cpu" else f"{self.kind}:{self.index}"


CPU = Device("cpu", 0, "host CPU")
