"""The agent's guard around a hardware backend: no GPU error ever stops the daemon.

The agent uses a handful of calls of :class:`dynamo_pipeline.hardware.GPUBackend` (listed in
:class:`ClockBackend`). :class:`GuardedBackend` wraps each: a failure — the project's
``HardwareError`` family, or anything a driver binding raises (``pynvml.NVMLError``) — is counted,
handed to ``on_error`` and turned into a ``None``/``False`` result, so the control loop carries on
and tries again at its next step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from dynamo_pipeline.hardware.base import GPUNotFoundError


class HardwareUnavailable(RuntimeError):
    """The backend could not answer now (a driver error); the caller should try again later."""


class ClockBackend(Protocol):
    """The part of ``GPUBackend`` the agent calls."""

    def list_gpus(self) -> list: ...
    def supported_clocks_mhz(self, index: int) -> list[int]: ...
    def set_locked_clocks(self, index: int, clock_mhz: int) -> None: ...
    def reset_locked_clocks(self, index: int) -> None: ...
    def power_w(self, index: int) -> float: ...
    def energy_j(self, index: int) -> float: ...
    def current_clock_mhz(self, index: int) -> int: ...


class GuardedBackend:
    """``backend`` with every call made safe; ``errors`` counts failures."""

    def __init__(self, backend: ClockBackend, on_error: Callable[[str, BaseException], None]):
        self.backend = backend
        self.on_error = on_error
        self.errors = 0
        self._clocks: dict[int, list[int]] = {}

    def _call(self, what: str, fn, *args):
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - the daemon must outlive any driver error
            self.errors += 1
            self.on_error(what, e)
            return None

    def supported_clocks_mhz(self, index: int) -> list[int] | None:
        """Supported clocks, highest first, cached per GPU once read (the list does not change while
        the node runs); ``None`` when the node has no such GPU; :class:`HardwareUnavailable` when
        the driver failed to answer (so a schedule is checked again later, not rejected)."""
        if index not in self._clocks:
            try:
                got = self.backend.supported_clocks_mhz(index)
            except GPUNotFoundError:
                return None
            except Exception as e:  # noqa: BLE001 - the daemon must outlive any driver error
                self.errors += 1
                self.on_error(f"supported_clocks_mhz({index})", e)
                raise HardwareUnavailable(str(e)) from e
            self._clocks[index] = sorted(got, reverse=True)
        return self._clocks[index]

    def _do(self, what: str, fn, *args) -> bool:
        try:
            fn(*args)
            return True
        except Exception as e:  # noqa: BLE001 - the daemon must outlive any driver error
            self.errors += 1
            self.on_error(what, e)
            return False

    def set_clock(self, index: int, clock_mhz: int) -> bool:
        return self._do(f"set_locked_clocks({index}, {clock_mhz})", self.backend.set_locked_clocks, index, clock_mhz)

    def reset(self, index: int) -> bool:
        return self._do(f"reset_locked_clocks({index})", self.backend.reset_locked_clocks, index)

    def power_w(self, index: int) -> float | None:
        return self._call(f"power_w({index})", self.backend.power_w, index)

    def energy_j(self, index: int) -> float | None:
        return self._call(f"energy_j({index})", self.backend.energy_j, index)

    def current_clock_mhz(self, index: int) -> int | None:
        return self._call(f"current_clock_mhz({index})", self.backend.current_clock_mhz, index)
