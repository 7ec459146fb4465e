"""The hardware interface every GPU backend implements, and the project's hardware errors.

A backend is one node's GPUs: list them, read their supported and current SM clocks, lock and
reset clocks, read power (W) and the energy counter (J). The profiling job, the node agent and the
tests receive a backend object (never a module global); :mod:`dynamo_pipeline.hardware` keeps a
registry of backend classes by name (``nvml``, ``sim``) so a config value picks one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


class HardwareError(RuntimeError):
    """A GPU operation failed; the message says what happened and how to fix it."""


class DriverNotFoundError(HardwareError):
    """No NVIDIA driver / NVML library on this machine."""


class PermissionDeniedError(HardwareError):
    """The caller may not change this setting (locking clocks needs root or admin rights)."""


class UnsupportedClockError(HardwareError):
    """A clock outside the device's supported list was asked for."""


class NotSupportedError(HardwareError):
    """The device or driver does not support this operation."""


class GPUNotFoundError(HardwareError):
    """No GPU with that index."""


@dataclass(frozen=True)
class GPUInfo:
    """One GPU of a node as a backend reports it."""

    index: int
    name: str
    uuid: str
    memory_bytes: int


class GPUBackend(ABC):
    """One node's GPUs. Indices are the backend's own (0..n-1). Clock values are SM clocks in MHz."""

    name: str = "abstract"

    @abstractmethod
    def list_gpus(self) -> list[GPUInfo]:
        """The node's GPUs."""

    @abstractmethod
    def supported_clocks_mhz(self, index: int) -> list[int]:
        """SM clocks (MHz) the device accepts for locking, highest first."""

    @abstractmethod
    def set_locked_clocks(self, index: int, clock_mhz: int) -> None:
        """Lock the SM clock of GPU ``index`` at ``clock_mhz`` (must be a supported clock)."""

    @abstractmethod
    def reset_locked_clocks(self, index: int) -> None:
        """Give the SM clock back to the driver's default policy."""

    @abstractmethod
    def power_w(self, index: int) -> float:
        """Current power draw of GPU ``index`` in W."""

    @abstractmethod
    def energy_j(self, index: int) -> float:
        """Energy counter of GPU ``index`` in J since an arbitrary origin (monotonic)."""

    @abstractmethod
    def current_clock_mhz(self, index: int) -> int:
        """Current SM clock of GPU ``index`` in MHz."""

    def check_clock(self, index: int, clock_mhz: int) -> int:
        """``clock_mhz`` if the device supports it, else :class:`UnsupportedClockError` naming the
        nearest supported clocks."""
        supported = self.supported_clocks_mhz(index)
        if clock_mhz in supported:
            return clock_mhz
        near = sorted(supported, key=lambda c: abs(c - clock_mhz))[:3]
        raise UnsupportedClockError(
            f"GPU {index} does not support an SM clock of {clock_mhz} MHz; nearest supported: "
            f"{sorted(near)} MHz ({len(supported)} supported, {min(supported)}-{max(supported)} MHz)"
        )

    def close(self) -> None:
        """Release the backend (no-op by default)."""
