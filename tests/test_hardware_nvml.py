"""The nvml backend: pynvml replaced at the module boundary by a fake that records calls and can
fail like the real library, every error path mapped to the project's exceptions; plus `gpu` tests
that read a real device (skipped without NVML) and a clock-setting test behind
DYNAMO_ALLOW_CLOCK_CHANGES=1."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from dynamo_pipeline.hardware import (
    DriverNotFoundError,
    GPUNotFoundError,
    HardwareError,
    NotSupportedError,
    PermissionDeniedError,
    UnsupportedClockError,
    make_backend,
)
from dynamo_pipeline.hardware.nvml import NvmlBackend


class FakeNVMLError(Exception):
    def __init__(self, value: int):
        super().__init__(f"NVML error {value}")
        self.value = value


class FakeNVML:
    """Enough of pynvml for the backend: 2 GPUs, clocks 1980..210 in 15 MHz steps, counters."""

    NVMLError = FakeNVMLError
    NVML_CLOCK_SM = 1

    def __init__(self, fail: dict[str, int] | None = None):
        self.fail = fail or {}
        self.calls: list[tuple] = []
        self.locked: dict[int, tuple[int, int]] = {}
        self.energy_mj = [1_000_000, 2_000_000]

    def _maybe_fail(self, name: str) -> None:
        self.calls.append((name,))
        if name in self.fail:
            raise FakeNVMLError(self.fail[name])

    def nvmlInit(self):
        self._maybe_fail("nvmlInit")

    def nvmlShutdown(self):
        self._maybe_fail("nvmlShutdown")

    def nvmlSystemGetDriverVersion(self):
        return b"550.54.15"

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        return SimpleNamespace(i=i)

    def nvmlDeviceGetName(self, h):
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, h):
        return f"GPU-{h.i}"

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(total=85_520_809_984)

    def nvmlDeviceGetSupportedMemoryClocks(self, h):
        return [2619]

    def nvmlDeviceGetSupportedGraphicsClocks(self, h, mem):
        return list(range(1980, 209, -15))

    def nvmlDeviceSetGpuLockedClocks(self, h, lo, hi):
        self._maybe_fail("nvmlDeviceSetGpuLockedClocks")
        self.locked[h.i] = (lo, hi)

    def nvmlDeviceResetGpuLockedClocks(self, h):
        self._maybe_fail("nvmlDeviceResetGpuLockedClocks")
        self.locked.pop(h.i, None)

    def nvmlDeviceGetPowerUsage(self, h):
        self._maybe_fail("nvmlDeviceGetPowerUsage")
        return 312_500  # mW

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self._maybe_fail("nvmlDeviceGetTotalEnergyConsumption")
        return self.energy_mj[h.i]

    def nvmlDeviceGetClockInfo(self, h, kind):
        assert kind == self.NVML_CLOCK_SM
        return self.locked.get(h.i, (1980, 1980))[0]


def test_reads_gpus_power_energy_and_clocks_in_project_units():
    nv = FakeNVML()
    b = NvmlBackend(nvml=nv)
    gpus = b.list_gpus()
    assert [g.uuid for g in gpus] == ["GPU-0", "GPU-1"] and gpus[0].memory_bytes == 85_520_809_984
    assert b.power_w(0) == pytest.approx(312.5)  # mW -> W
    assert b.energy_j(1) == pytest.approx(2000.0)  # mJ -> J
    assert b.supported_clocks_mhz(0)[0] == 1980 and b.supported_clocks_mhz(0)[-1] == 210
    assert b.driver_version() == "550.54.15"


def test_locks_and_resets_a_supported_clock():
    nv = FakeNVML()
    b = NvmlBackend(nvml=nv)
    b.set_locked_clocks(1, 1605)
    assert nv.locked[1] == (1605, 1605) and b.current_clock_mhz(1) == 1605
    b.reset_locked_clocks(1)
    assert 1 not in nv.locked and b.current_clock_mhz(1) == 1980


def test_never_sends_an_unsupported_clock_to_the_driver():
    nv = FakeNVML()
    b = NvmlBackend(nvml=nv)
    with pytest.raises(UnsupportedClockError, match="1600 MHz.*nearest supported: \\[1590, 1605, 1620\\]"):
        b.set_locked_clocks(0, 1600)  # 1600 is not on the 15 MHz ladder from 1980
    assert ("nvmlDeviceSetGpuLockedClocks",) not in nv.calls and nv.locked == {}


def test_no_driver_maps_library_not_found_to_driver_error_with_hint():
    with pytest.raises(DriverNotFoundError, match="Install the NVIDIA driver.*--backend sim") as e:
        NvmlBackend(nvml=FakeNVML(fail={"nvmlInit": 12}))
    assert isinstance(e.value.__cause__, FakeNVMLError)


def test_real_pynvml_without_a_gpu_raises_driver_not_found():
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        pytest.skip("NVML is present on this machine")
    except pynvml.NVMLError_LibraryNotFound:
        pass
    with pytest.raises(DriverNotFoundError) as e:
        make_backend("nvml")
    assert isinstance(e.value.__cause__, pynvml.NVMLError_LibraryNotFound)


@pytest.mark.parametrize("code,exc,hint", [
    (4, PermissionDeniedError, "needs root"),
    (3, NotSupportedError, "not supported"),
    (2, UnsupportedClockError, "SUPPORTED_CLOCKS"),
    (15, HardwareError, "fell off the bus"),
    (999, HardwareError, "NVML error 999"),
])
def test_set_clock_errors_become_project_errors_with_a_fix(code, exc, hint):
    b = NvmlBackend(nvml=FakeNVML(fail={"nvmlDeviceSetGpuLockedClocks": code}))
    with pytest.raises(exc, match=hint) as e:
        b.set_locked_clocks(0, 1980)
    assert isinstance(e.value.__cause__, FakeNVMLError)


@pytest.mark.parametrize("method,nvml_name,code,exc", [
    ("reset_locked_clocks", "nvmlDeviceResetGpuLockedClocks", 4, PermissionDeniedError),
    ("power_w", "nvmlDeviceGetPowerUsage", 3, NotSupportedError),
    ("energy_j", "nvmlDeviceGetTotalEnergyConsumption", 3, NotSupportedError),
    ("energy_j", "nvmlDeviceGetTotalEnergyConsumption", 9, DriverNotFoundError),
])
def test_read_and_reset_errors_are_mapped(method, nvml_name, code, exc):
    b = NvmlBackend(nvml=FakeNVML(fail={nvml_name: code}))
    with pytest.raises(exc):
        getattr(b, method)(0)


def test_unknown_gpu_index_names_the_valid_range():
    with pytest.raises(GPUNotFoundError, match="0..1"):
        NvmlBackend(nvml=FakeNVML()).power_w(5)


def _real_backend():
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pytest.skip("no NVML on this machine")
    return NvmlBackend()


@pytest.mark.gpu
def test_real_gpu_reads_power_energy_and_clock():
    b = _real_backend()
    g = b.list_gpus()[0]
    p, e, c = b.power_w(g.index), b.energy_j(g.index), b.current_clock_mhz(g.index)
    print(f"\nreal GPU {g.name}: power {p:.1f} W, energy counter {e:.1f} J, SM clock {c} MHz")
    assert 20 < p < 1200 and e > 0 and 0 < c <= max(b.supported_clocks_mhz(g.index))


@pytest.mark.gpu
@pytest.mark.skipif(os.environ.get("DYNAMO_ALLOW_CLOCK_CHANGES") != "1",
                    reason="changes GPU clocks: set DYNAMO_ALLOW_CLOCK_CHANGES=1 on a GPU you own")
def test_real_gpu_locks_and_resets_clock():
    b = _real_backend()
    clocks = b.supported_clocks_mhz(0)
    target = clocks[len(clocks) // 3]
    try:
        b.set_locked_clocks(0, target)
        assert abs(b.current_clock_mhz(0) - target) <= 30 or b.current_clock_mhz(0) < target
    finally:
        b.reset_locked_clocks(0)
