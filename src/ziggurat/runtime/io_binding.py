"""``IOBinding``: onnxruntime's bound inputs and outputs for ``InferenceSession.run_with_iobinding``.

On the CPU, binding saves the feed dict and lets outputs land in buffers the caller owns: an
output bound to an OrtValue (or to a pointer with a shape) is written into that memory after
each run, as onnxruntime does. Inputs and outputs live in CPU memory; ``synchronize_*`` have
nothing to wait for (a CPU run returns when its results are written).
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from .. import ir
from ..errors import ConfigError, InputError
from .ortvalue import OrtValue, OrtValueVector


def _cpu(device_type: str, what: str) -> None:
    if str(device_type).lower() != "cpu":
        raise ConfigError(
            f"{what}: device {device_type!r} — IOBinding binds CPU memory in this build; bind "
            "'cpu' buffers (a device session copies them to its device)"
        )


def _from_pointer(element_type: Any, shape: Any, buffer_ptr: int) -> np.ndarray:
    """A numpy view of ``shape`` elements at ``buffer_ptr`` (memory the caller keeps alive)."""
    if isinstance(element_type, (int, np.integer)):
        dt = ir.dtypes.to_numpy(int(element_type))
    else:
        dt = np.dtype(element_type)
    shape = tuple(int(d) for d in shape)
    nbytes = int(np.prod(shape)) * dt.itemsize
    raw = (ctypes.c_char * nbytes).from_address(int(buffer_ptr))
    return np.frombuffer(raw, dtype=dt).reshape(shape)


class IOBinding:
    """Inputs and outputs bound for ``session.run_with_iobinding(binding)``."""

    def __init__(self, session: Any):
        self._session = session
        self._inputs: dict[str, Any] = {}
        self._outputs: dict[str, OrtValue | None] = {}  # None: allocated by the run
        self._results: list[OrtValue] = []

    # -- inputs ----------------------------------------------------------------------------------
    def bind_cpu_input(self, name: str, arr_on_cpu: np.ndarray) -> None:
        self._inputs[name] = arr_on_cpu

    def bind_input(
        self, name: str, device_type: str, device_id: int, element_type: Any, shape: Any,
        buffer_ptr: int,
    ) -> None:  # fmt: skip
        """Bind ``shape`` elements of ``element_type`` at address ``buffer_ptr``."""
        _cpu(device_type, f"bind_input({name!r})")
        self._inputs[name] = _from_pointer(element_type, shape, buffer_ptr)

    def bind_ortvalue_input(self, name: str, ortvalue: OrtValue) -> None:
        self._inputs[name] = ortvalue

    def clear_binding_inputs(self) -> None:
        self._inputs.clear()

    # -- outputs ---------------------------------------------------------------------------------
    def bind_output(
        self, name: str, device_type: str = "cpu", device_id: int = 0, element_type: Any = None,
        shape: Any = None, buffer_ptr: int | None = None,
    ) -> None:  # fmt: skip
        """Request output ``name``; with ``element_type``, ``shape`` and ``buffer_ptr`` it is
        written into that memory, else into a new array."""
        _cpu(device_type, f"bind_output({name!r})")
        if buffer_ptr is not None:
            if element_type is None or shape is None:
                raise ConfigError(f"bind_output({name!r}): a buffer needs element_type and shape")
            self._outputs[name] = OrtValue(_from_pointer(element_type, shape, buffer_ptr))
        else:
            self._outputs[name] = None

    def bind_ortvalue_output(self, name: str, ortvalue: OrtValue) -> None:
        """Write output ``name`` into ``ortvalue``'s memory (its shape and type must match)."""
        self._outputs[name] = ortvalue

    def clear_binding_outputs(self) -> None:
        self._outputs.clear()

    # -- running and results ---------------------------------------------------------------------
    def _run(self, run_options: Any) -> None:
        if not self._outputs:
            raise InputError(
                f"model '{self._session.model_name}': At least one output should be requested; "
                "bind_output() the outputs to compute"
            )
        names = list(self._outputs)
        values = self._session.run(names, self._inputs, run_options)
        results = []
        for name, value in zip(names, values):
            target = self._outputs[name]
            if target is None:
                results.append(value if isinstance(value, OrtValue) else OrtValue(value))
                continue
            dest = target.numpy()
            if (
                not isinstance(value, np.ndarray)
                or dest.shape != value.shape
                or dest.dtype != value.dtype
            ):
                got = f"{getattr(value, 'dtype', type(value).__name__)} {list(np.shape(value))}"
                raise InputError(
                    f"output '{name}' is {got} but its bound buffer is {dest.dtype} "
                    f"{list(dest.shape)}; bind a buffer of the output's type and shape"
                )
            np.copyto(dest, value)
            results.append(target)
        self._results = results

    def synchronize_inputs(self) -> None:
        """Nothing to wait for: inputs are read from CPU memory when the run starts."""

    def synchronize_outputs(self) -> None:
        """Nothing to wait for: a CPU run has written its outputs when it returns."""

    def get_outputs(self) -> list[OrtValue]:
        return list(self._results)

    def get_outputs_as_ortvaluevector(self) -> OrtValueVector:
        return OrtValueVector(self._results)

    def copy_outputs_to_cpu(self) -> list[Any]:
        return [v.numpy().copy() if v.is_tensor() else v.numpy() for v in self._results]
