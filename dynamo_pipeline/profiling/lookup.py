"""Profile lookup: read a shipped profile and interpolate its metrics, vectorised.

:func:`load_profile` reads ``profiles/<gpu>/<model>.csv``. :class:`ProfileLookup` indexes such a
frame per (class, tp) as a rectangular grid over (clock, load) and interpolates any metric
bilinearly (piecewise linear in load, and in clock between measured clocks) for whole arrays of
queries at once. A query outside the measured grid (a load below the lowest or above the highest
level, a clock outside the measured range, an unknown class or TP) is refused with
:class:`ProfileRangeError`, never extrapolated.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from dynamo_pipeline.profiling.writer import PROFILE_COLUMNS, profile_path

METRICS = ["throughput_rps", "ttft_p50_s", "ttft_p99_s", "tbt_p50_s", "tbt_p99_s", "power_w", "energy_per_request_j"]


class ProfileError(LookupError):
    """A profile is missing or malformed; the message says how to make one."""


class ProfileRangeError(ProfileError):
    """A lookup fell outside the measured grid."""


def load_profile(gpu: str, model: str, root: str | os.PathLike | None = None) -> pd.DataFrame:
    """The profile of ``model`` on ``gpu`` from ``<root>/<gpu>/<model>.csv`` (root: the repo's
    ``profiles/``), columns exactly the contract's."""
    path = profile_path(gpu, model, root)
    if not path.exists():
        raise ProfileError(
            f"no profile for {model} on {gpu} at {path}; make one with "
            f"`dynamo profile --backend sim --model {model} --gpu {gpu}` (or --backend nvml on a GPU node)")
    df = pd.read_csv(path)
    missing = [c for c in PROFILE_COLUMNS if c not in df.columns]
    if missing:
        raise ProfileError(f"{path} lacks columns {missing}; regenerate it with `dynamo profile`")
    return df[PROFILE_COLUMNS]


class ProfileLookup:
    """Vectorised interpolation over a profile frame (see the module docstring)."""

    def __init__(self, frame: pd.DataFrame):
        if frame.empty:
            raise ProfileError("the profile is empty; run `dynamo profile` to fill it")
        self.gpu = str(frame.gpu.iloc[0])
        self.model = str(frame.model.iloc[0])
        self._grids: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] = {}
        for (c, tp), g in frame.groupby(["class_name", "tp"], sort=True):
            freqs = np.sort(g.freq_mhz.unique()).astype(float)
            loads = np.sort(g.load_rps.unique()).astype(float)
            piv = {m: g.pivot_table(index="freq_mhz", columns="load_rps", values=m, aggfunc="mean", dropna=False)
                   .reindex(index=freqs, columns=loads).to_numpy(float) for m in METRICS}
            if np.isnan(piv["power_w"]).any():
                raise ProfileError(f"profile grid for class {c} TP{tp} is not rectangular over (clock, load); "
                                   "regenerate it with `dynamo profile`")
            self._grids[(str(c), int(tp))] = (freqs, loads, piv)

    def keys(self) -> list[tuple[str, int]]:
        """The (class, tp) pairs the profile covers."""
        return list(self._grids)

    def clocks_mhz(self, class_name: str, tp: int) -> np.ndarray:
        return self._grid(class_name, tp)[0]

    def loads_rps(self, class_name: str, tp: int) -> np.ndarray:
        return self._grid(class_name, tp)[1]

    def _grid(self, class_name: str, tp: int):
        try:
            return self._grids[(class_name, int(tp))]
        except KeyError:
            raise ProfileRangeError(
                f"the {self.gpu} x {self.model} profile has no class {class_name!r} on TP{tp}; it covers "
                f"{sorted(self._grids)}") from None

    @staticmethod
    def _locate(axis: np.ndarray, x: np.ndarray):
        if len(axis) == 1:
            return np.zeros(len(x), dtype=np.int64), np.zeros(len(x))
        i = np.clip(np.searchsorted(axis, x, side="right") - 1, 0, len(axis) - 2)
        w = (x - axis[i]) / (axis[i + 1] - axis[i])
        return i, w

    def _one(self, class_name: str, tp: int, freq: np.ndarray, load: np.ndarray, metric: str) -> np.ndarray:
        freqs, loads, piv = self._grid(class_name, tp)
        bad_f = (freq < freqs[0]) | (freq > freqs[-1])
        bad_l = (load < loads[0]) | (load > loads[-1])
        if bad_f.any() or bad_l.any():
            k = int(np.argmax(bad_f | bad_l))
            raise ProfileRangeError(
                f"{class_name} TP{tp}: clock {freq[k]:g} MHz / load {load[k]:g} rps is outside the measured grid "
                f"(clocks {freqs[0]:g}-{freqs[-1]:g} MHz, loads {loads[0]:g}-{loads[-1]:g} rps); "
                "profile a wider grid with `dynamo profile` rather than extrapolate")
        v = piv[metric]
        fi, fw = self._locate(freqs, freq)
        li, lw = self._locate(loads, load)
        f1 = np.minimum(fi + 1, len(freqs) - 1)
        l1 = np.minimum(li + 1, len(loads) - 1)
        top = v[fi, li] * (1 - lw) + v[fi, l1] * lw
        bot = v[f1, li] * (1 - lw) + v[f1, l1] * lw
        return top * (1 - fw) + bot * fw

    def query(self, class_name, tp, freq_mhz, load_rps, metric: str = "energy_per_request_j") -> np.ndarray:
        """``metric`` at each (class, tp, clock MHz, load rps); arguments broadcast (scalars or
        arrays). Raises :class:`ProfileRangeError` if any query is off the grid."""
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; one of {METRICS}")
        c, t, f, lo = np.broadcast_arrays(np.asarray(class_name), np.asarray(tp), np.asarray(freq_mhz, dtype=float),
                                          np.asarray(load_rps, dtype=float))
        shape = f.shape
        c, t, f, lo = c.ravel(), t.ravel().astype(np.int64), f.ravel(), lo.ravel()
        out = np.empty(len(f))
        if c.size and (c == c[0]).all() and (t == t[0]).all():
            out[:] = self._one(str(c[0]), int(t[0]), f, lo, metric)
        else:
            keys, inv = np.unique(np.char.add(c.astype(str), np.char.add("/", t.astype(str))), return_inverse=True)
            for k, key in enumerate(keys):
                sel = inv == k
                name, tps = key.split("/")
                out[sel] = self._one(name, int(tps), f[sel], lo[sel], metric)
        return out.reshape(shape)

    def max_load_rps(self, class_name: str, tp: int, freq_mhz: float, ttft_slo_s: float, tbt_slo_s: float) -> float:
        """The highest measured load level at which (class, tp, clock) meets both SLOs (0 if none)."""
        freqs, loads, _ = self._grid(class_name, tp)
        f = np.full(len(loads), float(freq_mhz))
        ok = (self._one(class_name, tp, f, loads, "ttft_p99_s") <= ttft_slo_s) & \
             ~(self._one(class_name, tp, f, loads, "tbt_p99_s") > tbt_slo_s)
        return float(loads[ok].max()) if ok.any() else 0.0
