"""Kernels, one module per op family, and the versioned registry that finds them."""

from .registry import KernelDef, all_kernels, kernel, lookup

__all__ = ["KernelDef", "all_kernels", "kernel", "lookup"]
