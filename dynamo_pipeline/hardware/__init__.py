"""GPU backends behind one interface (:class:`GPUBackend`): ``nvml`` (real GPUs through pynvml)
and ``sim`` (a simulated node over :class:`SimServer`), plus model and GPU cards.

Backends are picked by name from :data:`BACKENDS` (:func:`make_backend`) and passed to whoever
needs one; nothing here keeps a module-level backend.
"""

from __future__ import annotations

from collections.abc import Callable

from dynamo_pipeline.hardware.base import (
    DriverNotFoundError,
    GPUBackend,
    GPUInfo,
    GPUNotFoundError,
    HardwareError,
    NotSupportedError,
    PermissionDeniedError,
    UnsupportedClockError,
)
from dynamo_pipeline.hardware.cards import GPUS, MODELS, GPUCard, ModelCard, fitting_tp, gpu_card, model_card
from dynamo_pipeline.hardware.sim import EngineParams, ServeResult, SimBackend, SimServer


def _nvml(**kw) -> GPUBackend:
    from dynamo_pipeline.hardware.nvml import NvmlBackend

    return NvmlBackend(**kw)


#: backend factories by name (a config value or `--backend` picks one)
BACKENDS: dict[str, Callable[..., GPUBackend]] = {"sim": SimBackend, "nvml": _nvml}


def make_backend(name: str, **kwargs) -> GPUBackend:
    """A backend by registry name (``sim`` or ``nvml``); ``kwargs`` go to its constructor."""
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise HardwareError(f"unknown hardware backend {name!r}; choose one of {sorted(BACKENDS)}") from None
    return factory(**kwargs)


__all__ = [
    "BACKENDS", "make_backend", "GPUBackend", "GPUInfo", "HardwareError", "DriverNotFoundError",
    "PermissionDeniedError", "UnsupportedClockError", "NotSupportedError", "GPUNotFoundError",
    "SimServer", "SimBackend", "EngineParams", "ServeResult", "ModelCard", "GPUCard", "MODELS", "GPUS",
    "model_card", "gpu_card", "fitting_tp",
]
