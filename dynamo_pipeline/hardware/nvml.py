"""The ``nvml`` backend: real NVIDIA GPUs through pynvml (package ``nvidia-ml-py``).

Every NVML call goes through one decorator, :func:`_nvml_call`, that turns ``pynvml.NVMLError``
into the project's :mod:`hardware.base` exceptions, re-raised ``from`` the original, each with a
hint at the fix (install the driver, run as root / grant clock permission, pick a supported
clock). Clocks are only ever locked to values in the device's supported list (checked before the
call). The pynvml module is a constructor argument (default: the real one), so tests replace it at
this boundary and nothing here is a module-level singleton.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

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

# NVML return codes (nvml.h); pynvml exposes them as NVML_ERROR_* with the same values.
_NOT_SUPPORTED, _NO_PERMISSION, _INVALID_ARGUMENT = 3, 4, 2
_UNINITIALIZED, _DRIVER_NOT_LOADED, _LIBRARY_NOT_FOUND, _GPU_IS_LOST = 1, 9, 12, 15


def _translate(err: Exception, what: str) -> HardwareError:
    code = getattr(err, "value", None)
    if code in (_LIBRARY_NOT_FOUND, _DRIVER_NOT_LOADED, _UNINITIALIZED):
        return DriverNotFoundError(
            f"{what}: NVML is not available ({err}). Install the NVIDIA driver (it ships libnvidia-ml.so) "
            "and check `nvidia-smi`; on a machine without a GPU use `--backend sim`.")
    if code == _NO_PERMISSION:
        return PermissionDeniedError(
            f"{what}: permission denied ({err}). Locking clocks needs root: run the agent or profiler as "
            "root, or grant it with `nvidia-smi -acp UNRESTRICTED` on older drivers.")
    if code == _INVALID_ARGUMENT:
        return UnsupportedClockError(
            f"{what}: the driver rejected the value ({err}); list valid clocks with `nvidia-smi -q -d SUPPORTED_CLOCKS`.")
    if code == _NOT_SUPPORTED:
        return NotSupportedError(
            f"{what}: not supported by this GPU or driver ({err}); locked clocks need Volta or newer and driver >= 450.")
    if code == _GPU_IS_LOST:
        return HardwareError(f"{what}: the GPU fell off the bus ({err}); drain the node and check `dmesg` / XID errors.")
    return HardwareError(f"{what}: NVML error {code} ({err}); see `nvidia-smi -q` for the device state.")


def _nvml_call(fn):
    """Map NVML errors raised inside a backend method to the project's exceptions."""

    @functools.wraps(fn)
    def wrapper(self: "NvmlBackend", *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except self._nvml.NVMLError as e:
            raise _translate(e, f"{fn.__name__}{args}") from e

    return wrapper


class NvmlBackend(GPUBackend):
    """Real GPUs of this node through NVML. ``nvml``: the pynvml module (tests pass a fake)."""

    name = "nvml"

    def __init__(self, nvml: ModuleType | Any | None = None):
        if nvml is None:
            import pynvml as nvml  # the package nvidia-ml-py
        self._nvml = nvml
        self._init()
        self._handles: dict[int, Any] = {}

    @_nvml_call
    def _init(self) -> None:
        self._nvml.nvmlInit()

    def _handle(self, index: int):
        if index not in self._handles:
            n = self._nvml.nvmlDeviceGetCount()
            if not 0 <= index < n:
                raise GPUNotFoundError(f"no GPU {index}: this node has {n} (0..{n - 1}); see `nvidia-smi -L`")
            self._handles[index] = self._nvml.nvmlDeviceGetHandleByIndex(index)
        return self._handles[index]

    @staticmethod
    def _str(x) -> str:
        return x.decode() if isinstance(x, bytes) else str(x)

    @_nvml_call
    def driver_version(self) -> str:
        return self._str(self._nvml.nvmlSystemGetDriverVersion())

    @_nvml_call
    def list_gpus(self) -> list[GPUInfo]:
        out = []
        for i in range(self._nvml.nvmlDeviceGetCount()):
            h = self._handle(i)
            out.append(GPUInfo(i, self._str(self._nvml.nvmlDeviceGetName(h)), self._str(self._nvml.nvmlDeviceGetUUID(h)),
                               int(self._nvml.nvmlDeviceGetMemoryInfo(h).total)))
        return out

    @_nvml_call
    def supported_clocks_mhz(self, index: int) -> list[int]:
        h = self._handle(index)
        mem = max(self._nvml.nvmlDeviceGetSupportedMemoryClocks(h))
        return sorted({int(c) for c in self._nvml.nvmlDeviceGetSupportedGraphicsClocks(h, mem)}, reverse=True)

    @_nvml_call
    def set_locked_clocks(self, index: int, clock_mhz: int) -> None:
        clock_mhz = self.check_clock(index, int(clock_mhz))  # never ask for an unsupported clock
        self._nvml.nvmlDeviceSetGpuLockedClocks(self._handle(index), clock_mhz, clock_mhz)

    @_nvml_call
    def reset_locked_clocks(self, index: int) -> None:
        self._nvml.nvmlDeviceResetGpuLockedClocks(self._handle(index))

    @_nvml_call
    def power_w(self, index: int) -> float:
        return self._nvml.nvmlDeviceGetPowerUsage(self._handle(index)) / 1000.0  # mW -> W

    @_nvml_call
    def energy_j(self, index: int) -> float:
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle(index)) / 1000.0  # mJ -> J

    @_nvml_call
    def current_clock_mhz(self, index: int) -> int:
        return int(self._nvml.nvmlDeviceGetClockInfo(self._handle(index), self._nvml.NVML_CLOCK_SM))

    @_nvml_call
    def close(self) -> None:
        self._nvml.nvmlShutdown()
