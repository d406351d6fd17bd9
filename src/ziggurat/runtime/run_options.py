"""``RunOptions``: per-call settings of ``InferenceSession.run``, as onnxruntime's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError


@dataclass(slots=True)
class RunOptions:
    """Settings for one ``run`` call. Slotted, as onnxruntime's: a misspelt attribute raises.

    ``terminate``: a run started with it set raises ``ExecutionError`` (onnxruntime's ``Fail``)
    instead of running; set it from another thread to refuse the runs that start after that (a run
    already under way finishes — Ziggurat checks the flag as a run starts). ``logid`` and
    ``log_severity_level`` name and filter this run's log lines. ``only_execute_path_to_fetches`` is accepted: Ziggurat's plan
    already skips nodes no requested output needs only when the outputs are fixed at compile
    time, so every node runs either way. Config entries (``add_run_config_entry``) are kept;
    ``memory.enable_memory_arena_shrinkage`` is honoured trivially: Ziggurat keeps no arena."""

    log_severity_level: int = -1  # -1: the session's level
    log_verbosity_level: int = 0
    logid: str = ""
    terminate: bool = False
    only_execute_path_to_fetches: bool = False
    _config: dict[str, str] = field(default_factory=dict, repr=False)
    _adapters: list[Any] = field(default_factory=list, repr=False)

    def add_run_config_entry(self, key: str, value: str) -> None:
        """Set a run configuration entry (string key and value)."""
        if not isinstance(key, str) or not isinstance(value, str):
            raise ConfigError(
                f"add_run_config_entry takes two strings; got {type(key).__name__} and "
                f"{type(value).__name__}"
            )
        self._config[key] = value

    def get_run_config_entry(self, key: str) -> str:
        """The value set by ``add_run_config_entry``; RuntimeError (ConfigError) if unset."""
        try:
            return self._config[key]
        except KeyError:
            raise ConfigError(f"RunOptions does not have configuration with key: {key}") from None

    def add_active_adapter(self, adapter: Any) -> None:
        """Activate a loaded ``LoraAdapter`` for runs with these options: its parameters are fed
        to the model's same-named inputs or overridable initializers."""
        from .lora import LoraAdapter

        if not isinstance(adapter, LoraAdapter):
            raise ConfigError(
                f"add_active_adapter takes a LoraAdapter; got {type(adapter).__name__}"
            )
        self._adapters.append(adapter)
