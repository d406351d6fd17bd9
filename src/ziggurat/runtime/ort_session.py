"""The rest of onnxruntime's ``InferenceSession`` surface, beside ``run``: OrtValue runs,
asynchronous runs, provider (re)selection and options, profiling start time, the C-level
session object (``sess._sess``), and feed conversions onnxruntime accepts (OrtValues, ``np.void``
strings). ``InferenceSession`` (session.py) inherits it; nothing here is on ``run``'s fast path.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, InputError
from .validate import check_names

if TYPE_CHECKING:  # imported on first use at run time (ortvalue.py is not on run's fast path)
    from .ortvalue import OrtValue, OrtValueVector

# onnxruntime's provider names (its get_all_providers): a name outside these and Ziggurat's own
# is an unknown provider type, which set_providers refuses as onnxruntime does.
ORT_PROVIDER_NAMES = (
    "TensorrtExecutionProvider", "CUDAExecutionProvider", "MIGraphXExecutionProvider",
    "OpenVINOExecutionProvider", "DnnlExecutionProvider", "VitisAIExecutionProvider",
    "QNNExecutionProvider", "NnapiExecutionProvider", "VSINPUExecutionProvider",
    "JsExecutionProvider", "CoreMLExecutionProvider", "DmlExecutionProvider",
    "RknpuExecutionProvider", "WebNNExecutionProvider", "WebGpuExecutionProvider",
    "XnnpackExecutionProvider", "CANNExecutionProvider", "AzureExecutionProvider",
    "ROCMExecutionProvider", "CPUExecutionProvider",
)  # fmt: skip


def check_and_normalize_provider_args(
    providers: Sequence[Any] | None,
    provider_options: Sequence[dict] | None,
    available_provider_names: Iterable[str],
) -> tuple[list[str], list[dict[str, str]]]:
    """onnxruntime's normalization of ``providers`` (names or (name, options) pairs) and
    ``provider_options`` (one dict per provider) into (names, options with str keys and values).
    ValueError for malformed arguments; a UserWarning for a repeated provider (the first wins)
    and for one not in ``available_provider_names``."""
    if providers is None:
        return [], []
    if not isinstance(providers, Sequence) or isinstance(providers, str):
        raise ValueError(f"providers must be a sequence of names; got {type(providers).__name__}")
    available = set(available_provider_names)
    pairs: list[tuple[str, dict]] = []
    has_tuples = any(isinstance(p, tuple) for p in providers)
    if provider_options is not None:
        if has_tuples:
            raise ValueError("give provider options either as (name, options) pairs or as "
                             "provider_options, not both")  # fmt: skip
        if not isinstance(provider_options, Sequence) or len(provider_options) != len(providers):
            raise ValueError("provider_options must be a sequence as long as providers")
        if not all(isinstance(o, dict) for o in provider_options):
            raise ValueError("each provider_options entry must be a dict")
        pairs = [(p, o) for p, o in zip(providers, provider_options)]
    else:
        for p in providers:
            if isinstance(p, tuple) and len(p) == 2 and isinstance(p[1], dict):
                pairs.append(p)
            else:
                pairs.append((p, {}))
    names: list[str] = []
    options: list[dict[str, str]] = []
    for name, opts in pairs:
        if not isinstance(name, str):
            raise ValueError(f"a provider must be a name or a (name, options dict) pair: {name!r}")
        if name in names:
            warnings.warn(f"duplicate provider {name!r}: the first one is kept", UserWarning, 2)
            continue
        if name not in available:
            warnings.warn(
                f"specified provider {name!r} is not in available provider names: "
                f"{', '.join(sorted(available))}", UserWarning, 2,
            )  # fmt: skip
        names.append(name)
        options.append({str(k): str(v) for k, v in opts.items()})
    return names, options


class Overridden(Exception):
    """Raised by feed preparation when a feed names an overridable initializer (caught by
    ``run``, which then runs the session variant that takes those as inputs)."""

    def __init__(self, feed: dict):
        super().__init__("a feed overrides an initializer")
        self.feed = feed


class _CSession:
    """What onnxruntime's ``InferenceSession._sess`` is: the engine-level session, whose
    ``run_with_ort_values`` takes (feeds of OrtValues, output names, RunOptions)."""

    def __init__(self, session: Any):
        self._session = session

    def run_with_ort_values(
        self, feeds: Mapping[str, OrtValue], output_names: Sequence[str], run_options: Any = None
    ) -> OrtValueVector:
        from .ortvalue import OrtValueVector

        return OrtValueVector(self._session.run_with_ort_values(output_names, feeds, run_options))


class OrtSessionMixin:
    """onnxruntime methods of ``InferenceSession`` beyond ``run``."""

    def get_provider_options(self) -> dict[str, dict[str, str]]:
        """Each provider in use with its options as strings (the CPU provider has none)."""
        given = dict(zip(*self._requested_providers)) if self._requested_providers else {}
        return {p: ({} if p == "CPUExecutionProvider" else dict(given.get(p, {})))
                for p in self._providers}  # fmt: skip

    def set_providers(
        self, providers: Sequence[Any] | None = None, provider_options: Sequence[dict] | None = None
    ) -> None:
        """Rebuild the session for ``providers`` (onnxruntime re-creates its session the same
        way). A name that is no execution provider at all raises RuntimeError (ConfigError)."""
        from ..backends import device

        names, opts = check_and_normalize_provider_args(
            providers, provider_options, self._known_providers()
        )
        for name in names:
            if name not in ORT_PROVIDER_NAMES and name not in device.PROVIDERS:
                raise ConfigError(
                    f"Unknown Provider Type: {name}; known: {', '.join(self._known_providers())}"
                )
        self.close()  # the old compiled graph's device memory goes back before the new one
        if self._variant is not None:
            self._variant[0].close()
        self.__init__(  # type: ignore[misc]
            self._source, self._options, list(zip(names, opts)) or None,
            max_size_bytes=self._max_size_bytes,
        )  # fmt: skip

    @staticmethod
    def _known_providers() -> list[str]:
        from .. import get_available_providers

        return get_available_providers()

    def io_binding(self) -> Any:
        """A new ``IOBinding`` for ``run_with_iobinding``."""
        from .io_binding import IOBinding

        return IOBinding(self)

    def run_with_iobinding(self, iobinding: Any, run_options: Any = None) -> None:
        """Run with the binding's inputs; its outputs are then in ``iobinding.get_outputs()``
        (and in the buffers bound to them)."""
        iobinding._run(run_options)

    def get_tuning_results(self) -> list[dict]:
        """onnxruntime's TunableOp results per provider: none, as Ziggurat's kernels choose
        their algorithms when the plan is built, not by timing candidates at run time."""
        return []

    def set_tuning_results(
        self, tuning_results: list[dict], error_on_invalid: bool = False
    ) -> None:
        """Load TunableOp results: no provider of a Ziggurat session takes them, so each entry
        is invalid — a warning, or RuntimeError (ConfigError) with ``error_on_invalid``."""
        import logging

        for i, entry in enumerate(tuning_results):
            ep = entry.get("ep") if isinstance(entry, dict) else None
            why = (
                f"Invalid TuningResults (index={i}). {ep} does not support TunableOp."
                if ep in self._providers
                else f"Cannot find execution provider {ep}"
            )
            if error_on_invalid:
                raise ConfigError(f"set_tuning_results: {why}")
            logging.getLogger(__name__).warning("set_tuning_results: %s", why)

    def get_input_memory_infos(self) -> list[Any]:
        """Where each input is expected: CPU memory for a CPU session (a device session copies
        feeds to its device itself)."""
        return [self._cpu_memory_info() for _ in self._inputs]

    def get_output_memory_infos(self) -> list[Any]:
        """Where each output is returned: CPU memory (outputs come back as numpy arrays)."""
        return [self._cpu_memory_info() for _ in self._outputs]

    def get_input_epdevices(self) -> list[Any]:
        """The execution-provider device of each input; None where none is assigned (Ziggurat has
        no plugin-EP devices)."""
        return [None for _ in self._inputs]

    @staticmethod
    def _cpu_memory_info() -> Any:
        from .allocators import OrtAllocatorType, OrtMemoryInfo, OrtMemType

        return OrtMemoryInfo("Cpu", OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, OrtMemType.DEFAULT)

    def get_profiling_start_time_ns(self) -> int:
        """When profiling started, in nanoseconds since the epoch (0 without profiling)."""
        return self._profiling_start_ns

    @property
    def _sess(self) -> _CSession:
        return _CSession(self)

    def run_with_ort_values(
        self,
        output_names: Sequence[str] | None,
        input_dict_ort_values: Mapping[str, OrtValue],
        run_options: Any = None,
    ) -> list[OrtValue]:
        """``run`` with OrtValue feeds; returns OrtValues."""
        from .ortvalue import OrtValue

        outs = self.run(output_names, input_dict_ort_values, run_options)
        return [o if isinstance(o, OrtValue) else OrtValue(o) for o in outs]

    def run_with_ortvaluevector(
        self, run_options: Any, feed_names: Sequence[str], feeds: Sequence[OrtValue],
        fetch_names: Sequence[str], fetches: OrtValueVector, fetch_devices: Any = None,
    ) -> None:  # fmt: skip
        """onnxruntime's list-based run: inputs as parallel name/OrtValue lists; ``fetches`` (an
        OrtValueVector) receives the outputs named in ``fetch_names``, in that order. Outputs are
        returned in CPU memory whatever ``fetch_devices`` says."""
        if len(feed_names) != len(feeds):
            raise InputError(f"{len(feed_names)} feed names but {len(feeds)} feeds")
        outs = self.run_with_ort_values(fetch_names, dict(zip(feed_names, feeds)), run_options)
        fetches.clear()
        fetches.extend(outs)

    def run_async(
        self,
        output_names: Sequence[str] | None,
        input_feed: Mapping[str, Any],
        callback: Any,
        user_data: Any,
        run_options: Any = None,
    ) -> None:
        """Run on another thread and call ``callback(results, user_data, error)`` when done:
        ``results`` the outputs and ``error`` "" on success; ``[]`` and the error text if the
        run raised."""

        def work() -> None:
            try:
                outs = self.run(output_names, input_feed, run_options)
            except Exception as e:  # the callback gets the error, as onnxruntime's does
                callback([], user_data, str(e))
                return
            callback(outs, user_data, "")

        threading.Thread(target=work, name="ziggurat-run-async", daemon=True).start()

    # -- feeds onnxruntime accepts beyond arrays of the declared type ---------------------------
    def _normalize_feed(self, feed: Mapping[str, Any]) -> Mapping[str, Any]:
        """OrtValues unwrapped; ``np.void`` arrays for string inputs decoded to str (onnxruntime
        reads each element's bytes as UTF-8); a missing input named as onnxruntime names it."""
        if not isinstance(feed, Mapping):
            return feed
        from .ortvalue import OrtValue, unwrap

        out = dict(feed)
        for k, v in out.items():
            if isinstance(v, OrtValue):
                out[k] = v = unwrap(v)
            if isinstance(v, np.ndarray) and v.dtype.type is np.void:  # not ml_dtypes ("V" too)
                flat = [bytes(x).rstrip(b"\0").decode("utf-8") for x in v.reshape(-1)]
                out[k] = np.array(flat, dtype=object).reshape(v.shape)
        over = self._model.initializer_inputs
        if over and any(v.name in out for v in over):
            raise Overridden(out)
        missing = [s.name for s in self._input_specs if s.name not in out and not s.optional]
        if missing:  # onnxruntime's words first, then the shared check's (dtype, shape)
            try:
                check_names(self.model_name, self._input_specs, out)
            except InputError as e:
                raise InputError(
                    f"Required inputs ({missing}) are missing from input feed ({list(out)}): {e}"
                ) from None
        return out

    # -- overridable initializers and LoRA adapters -------------------------------------------
    @staticmethod
    def _with_adapters(feed: Mapping[str, Any], adapters: list) -> dict:
        out = dict(feed)
        for adapter in adapters:
            for name, value in adapter.parameters.items():
                if name in out:
                    raise InputError(
                        f"LoRA adapter {adapter.path!r} sets {name!r}, which the feed or another "
                        "active adapter already gives; activate one source per parameter"
                    )
                out[name] = value
        return out

    def _run_overridden(self, output_names: Any, feed: dict, run_options: Any) -> list[Any]:
        """Run with some overridable initializers fed: on a variant of this session compiled with
        them as inputs (built on first use, so that plain runs keep them constant-folded and
        fused); the others get their initializer values."""
        with self._variant_lock:
            if self._variant is None:
                self._variant = self._build_variant()
        session, defaults = self._variant
        full = dict(defaults)
        full.update(feed)
        return session.run(output_names, full)

    def _build_variant(self) -> tuple[Any, dict]:
        import copy
        import dataclasses

        from .. import ir
        from ..formats.onnx import load_model
        from .session_setup import apply_free_dims

        opts = self._options
        if isinstance(self._source, ir.Model):
            model = copy.deepcopy(self._source)
        else:
            model = load_model(
                self._source, max_size_bytes=self._max_size_bytes,
                external_initializers=opts._external_initializers,
                external_files=opts._external_files,
            )  # fmt: skip
        apply_free_dims(model, opts, self._source)
        defaults = {}
        for v in model.initializer_inputs:
            given = model.graph.initializers.pop(v.name)
            defaults[v.name] = opts._initializers.get(v.name, given)
            model.graph.inputs.append(v)
        model.initializer_inputs = []
        variant_opts = dataclasses.replace(
            opts, optimized_model_filepath="", enable_profiling=False,
            _initializers={k: a for k, a in opts._initializers.items() if k not in defaults},
            _dims_by_name={}, _dims_by_denotation={},
        )  # fmt: skip
        return type(self)(model, variant_opts, self._providers), defaults
