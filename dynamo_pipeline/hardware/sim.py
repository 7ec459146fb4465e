"""The simulated inference server (DESIGN §6) and the ``sim`` GPU backend built on it.

:class:`SimServer` models one serving instance of a model on ``tp`` GPUs of a node, the way vLLM
runs it: continuous batching, prefill iterations (waiting prompts batched up to a token budget,
decode paused) and decode iterations (one token for every running request). An iteration takes

    max(compute, memory) + TP all-reduce
    compute = FLOPs / (tp * peak * MFU * clock/clock_max)        (scales with 1/clock)
    memory  = (weight shard + KV cache read) / (HBM bandwidth * efficiency)   (clock independent
              down to 1.6 GHz; below it the SMs cannot keep HBM busy and it slows with the clock)
    all-reduce = 2 per layer: latency + 2(tp-1)/tp * activation bytes / NVLink bandwidth

A request is admitted only when its whole KV footprint (input + output tokens) fits in the cache,
so the KV capacity limits the batch and no request is ever pre-empted. Power per GPU rises from
idle with utilisation and with clock: a busy GPU adds a clock-independent part (HBM, L2, NVLink)
and an SM part proportional to clock x voltage^2, where the voltage sits at its floor below a knee
clock and rises to the top clock (the usual DVFS curve); the total is capped at TDP.

The server is an engine: :meth:`SimServer.serve` takes a stream of requests (arrival s, input
tokens, output tokens) and returns per-request TTFT, TBT (the request's mean time between output
tokens) and energy, plus the instance's totals. It is fast because it advances analytically
between events (arrivals, completions): a run of decode iterations with a fixed batch is evaluated
as one vectorised numpy step, not one Python step per iteration. It is deterministic: the same
requests give the same result, and the profiling job seeds its request streams.

:class:`SimBackend` implements :class:`GPUBackend` for a simulated node (clocks, power, energy
counter) so that the agent and the tests run without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dynamo_pipeline.hardware.base import GPUBackend, GPUInfo, GPUNotFoundError, HardwareError
from dynamo_pipeline.hardware.cards import GPUCard, ModelCard, gpu_card, kv_capacity_tokens, model_card


@dataclass(frozen=True)
class EngineParams:
    """Efficiencies of the simulated engine and the power model's shape (calibrated by tests
    against DESIGN §6's anchors)."""

    mfu: float = 0.60  # matmul FLOP efficiency in prefill and decode
    hbm_efficiency: float = 0.80
    #: below this SM clock the SMs cannot keep enough loads in flight to saturate HBM: achievable
    #: bandwidth falls in proportion to the clock (memory-bound decode slows down at low clocks)
    hbm_saturation_mhz: float = 1600.0
    allreduce_latency_s: float = 8e-6  # per all-reduce
    iteration_overhead_s: float = 0.002  # scheduler, sampling, kernel launches per iteration
    max_batched_tokens: int = 8192  # prefill token budget per iteration
    max_batch: int = 256  # running requests
    # power model (per GPU)
    busy_static_w: float = 70.0  # clock-independent draw of a busy GPU (leakage, HBM PHY, L2, NVLink)
    hbm_w: float = 30.0  # at full HBM bandwidth
    sm_max_w: float = 525.0  # SMs fully busy at the top clock (idle + all parts = 700 W TDP)
    sm_stall_activity: float = 0.15  # SM activity while stalled on memory, relative to compute
    voltage_floor: float = 0.50  # V/V_max at and below the knee clock
    knee_mhz: float = 1600.0


@dataclass
class ServeResult:
    """What :meth:`SimServer.serve` returns. Per request (input order): ``ttft_s``, ``tbt_s`` (mean
    time between output tokens; NaN for one-token outputs), ``finish_s`` (absolute), ``energy_j``
    (the instance's energy over the request's life shared among the requests running with it).
    Totals: ``energy_j`` (all GPUs, start of the stream to the last completion), ``span_s``."""

    ttft_s: np.ndarray
    tbt_s: np.ndarray
    finish_s: np.ndarray
    energy_per_request_j: np.ndarray
    energy_j: float
    span_s: float
    busy_s: float
    tp: int
    clock_mhz: int

    @property
    def power_w(self) -> float:
        """Mean power of the instance (all its GPUs) over the span, W."""
        return self.energy_j / self.span_s if self.span_s > 0 else 0.0


class SimServer:
    """One simulated serving instance of ``model`` on ``gpu`` cards (see the module docstring)."""

    def __init__(self, model: ModelCard | str, gpu: GPUCard | str, params: EngineParams | None = None):
        self.model = model_card(model) if isinstance(model, str) else model
        self.gpu = gpu_card(gpu) if isinstance(gpu, str) else gpu
        self.p = params or EngineParams()

    # ---- latency model -------------------------------------------------------------------
    def _hbm_rate(self, clock_mhz: float) -> float:
        return self.gpu.hbm_bytes_per_s * self.p.hbm_efficiency * min(1.0, clock_mhz / self.p.hbm_saturation_mhz)

    def _compute_rate(self, tp: int, clock_mhz: float) -> float:
        return tp * self.gpu.peak_bf16_flops * self.p.mfu * clock_mhz / self.gpu.clock_max_mhz

    def _allreduce_s(self, tp: int, tokens):
        if tp == 1:
            return 0.0 * tokens
        nbytes = tokens * self.model.hidden * 2
        per = self.p.allreduce_latency_s + 2 * (tp - 1) / tp * nbytes / self.gpu.nvlink_bytes_per_s
        return 2 * self.model.layers * per

    def prefill_s(self, input_tokens, tp: int, clock_mhz: float):
        """Bare prefill time of prompts processed together (no queue, no decode), s; with their
        compute and memory parts. ``input_tokens``: array of prompt lengths."""
        x = np.atleast_1d(np.asarray(input_tokens, dtype=float))
        flops = self.model.flops_per_token * x.sum() + 2 * self.model.layers * self.model.hidden * (x**2).sum()
        comp = flops / self._compute_rate(tp, clock_mhz)
        mem = self.model.weight_bytes / tp / self._hbm_rate(clock_mhz)
        return max(comp, mem) + self._allreduce_s(tp, x.sum()) + self.p.iteration_overhead_s, comp, mem

    # ---- power model ---------------------------------------------------------------------
    def _sm_power_w(self, clock_mhz: float) -> float:
        f = clock_mhz / self.gpu.clock_max_mhz
        knee = self.p.knee_mhz
        if clock_mhz <= knee:
            v = self.p.voltage_floor
        else:
            v = self.p.voltage_floor + (1 - self.p.voltage_floor) * (clock_mhz - knee) / (self.gpu.clock_max_mhz - knee)
        return self.p.sm_max_w * f * v * v

    def gpu_power_w(self, comp_s, mem_s, iter_s, clock_mhz: float):
        """Per-GPU power during an iteration of ``iter_s`` whose compute and memory parts are
        ``comp_s``/``mem_s``; capped at TDP. Vectorised over arrays."""
        comp_s, mem_s, iter_s = np.asarray(comp_s), np.asarray(mem_s), np.asarray(iter_s)
        c = np.minimum(comp_s / iter_s, 1.0)
        m = np.minimum(mem_s / iter_s, 1.0)
        busy = np.minimum(np.maximum(c, m), 1.0)
        sm_activity = c + self.p.sm_stall_activity * np.maximum(m - c, 0.0)
        p = (self.gpu.idle_w + self.p.busy_static_w * busy + self.p.hbm_w * m
             + self._sm_power_w(clock_mhz) * sm_activity)
        return np.minimum(p, self.gpu.tdp_w)

    # ---- the engine ----------------------------------------------------------------------
    def serve(self, arrival_s, input_tokens, output_tokens, clock_mhz: float, tp: int) -> ServeResult:
        """Serve requests (arrays of arrival time s, input and output tokens; any order) on one
        instance of ``tp`` GPUs at SM clock ``clock_mhz``. Returns per-request latencies and energy
        and the instance's totals (see :class:`ServeResult`)."""
        arr = np.asarray(arrival_s, dtype=float)
        inp = np.asarray(input_tokens, dtype=np.int64)
        out = np.maximum(np.asarray(output_tokens, dtype=np.int64), 1)
        n = len(arr)
        if not (len(inp) == len(out) == n):
            raise ValueError("arrival_s, input_tokens and output_tokens must have the same length")
        cap = kv_capacity_tokens(self.model, self.gpu, tp)
        need = inp + out
        if n and need.max() > cap:
            raise ValueError(
                f"a request of {int(need.max())} tokens does not fit the KV cache of {self.model.name} on "
                f"TP{tp} ({cap} tokens); use a larger TP degree or cap request lengths")
        order = np.argsort(arr, kind="stable")
        p, m, g = self.p, self.model, self.gpu
        rate = self._compute_rate(tp, clock_mhz)
        bw = self._hbm_rate(clock_mhz)
        w_mem_s = m.weight_bytes / tp / bw
        kv_s_per_tok = m.kv_bytes_per_token / tp / bw
        attn_flops_per_ctx = 4 * m.layers * m.hidden  # decode attention FLOPs per context token
        idle_w = g.idle_w * tp

        ttft = np.full(n, np.nan)
        first_tok = np.full(n, np.nan)
        finish = np.full(n, np.nan)
        req_energy = np.zeros(n)
        t = float(arr[order[0]]) if n else 0.0
        t0 = t
        energy = 0.0
        busy_s = 0.0
        nxt = 0  # next arrival in `order`
        waiting: list[int] = []
        run_ids = np.empty(0, dtype=np.int64)
        run_ctx = np.empty(0, dtype=np.int64)
        run_left = np.empty(0, dtype=np.int64)
        kv_used = 0

        def admit_arrivals(now: float) -> None:
            nonlocal nxt
            while nxt < n and arr[order[nxt]] <= now:
                waiting.append(int(order[nxt]))
                nxt += 1

        while nxt < n or waiting or len(run_ids):
            admit_arrivals(t)
            if not waiting and not len(run_ids):
                ta = float(arr[order[nxt]])
                energy += idle_w * (ta - t)
                t = ta
                continue
            # prefill: waiting prompts in arrival order, within token budget, batch size and KV
            batch: list[int] = []
            tok = 0
            head_blocked = False
            for r in waiting:
                if tok and tok + inp[r] > p.max_batched_tokens:
                    break
                if len(run_ids) + len(batch) >= p.max_batch or kv_used + need[r] > cap:
                    head_blocked = True
                    break
                batch.append(r)
                tok += int(inp[r])
                kv_used += int(need[r])
            if batch:
                del waiting[: len(batch)]
                b = np.array(batch, dtype=np.int64)
                dt, comp, mem = self.prefill_s(inp[b], tp, clock_mhz)
                pw = float(self.gpu_power_w(comp, mem, dt, clock_mhz)) * tp
                t += dt
                energy += pw * dt
                busy_s += dt
                # prefill energy: the new requests' own; the paused decoders wait for free
                req_energy[b] += pw * dt * inp[b] / inp[b].sum()
                ttft[b] = t - arr[b]
                first_tok[b] = t
                left = out[b] - 1
                done = left == 0
                finish[b[done]] = t
                kv_used -= int(need[b[done]].sum())
                keep = ~done
                run_ids = np.concatenate([run_ids, b[keep]])
                run_ctx = np.concatenate([run_ctx, inp[b[keep]] + 1])
                run_left = np.concatenate([run_left, left[keep]])
                continue
            # decode segment: fixed batch until the first completion or the next admissible arrival
            B = len(run_ids)
            k = int(run_left.min())
            i = np.arange(k)
            ctx = run_ctx.sum() + B * i
            mem = w_mem_s + kv_s_per_tok * ctx
            comp = (m.flops_per_token * B + attn_flops_per_ctx * ctx) / rate
            dts = np.maximum(comp, mem) + self._allreduce_s(tp, B) + p.iteration_overhead_s
            cum = np.cumsum(dts)
            steps = k
            if nxt < n and not head_blocked and not waiting:
                ta = float(arr[order[nxt]])
                j = int(np.searchsorted(cum, ta - t))  # the iteration running when it arrives
                steps = min(k, j + 1)
            pw = self.gpu_power_w(comp[:steps], mem[:steps], dts[:steps], clock_mhz) * tp
            e = float((pw * dts[:steps]).sum())
            t += float(cum[steps - 1])
            energy += e
            busy_s += float(cum[steps - 1])
            req_energy[run_ids] += e / B
            run_left -= steps
            run_ctx += steps
            done = run_left == 0
            if done.any():
                d = run_ids[done]
                finish[d] = t
                kv_used -= int(need[d].sum())
                run_ids, run_ctx, run_left = run_ids[~done], run_ctx[~done], run_left[~done]
        with np.errstate(invalid="ignore", divide="ignore"):
            tbt = np.where(out > 1, (finish - first_tok) / (out - 1), np.nan)
        return ServeResult(ttft, tbt, finish, req_energy, energy, t - t0, busy_s, tp, int(clock_mhz))


class SimBackend(GPUBackend):
    """A simulated node of ``gpu`` cards for the agent and tests: clocks can be locked (only to
    supported values), power follows the power model at a settable utilisation, and the energy
    counter integrates power over a clock the caller advances (:meth:`advance`), so tests are
    deterministic and never sleep."""

    name = "sim"

    def __init__(self, gpu: str = "H100-SXM", n_gpus: int = 8, model: str = "Llama-2-70B",
                 params: EngineParams | None = None):
        self.card = gpu_card(gpu)
        self.server = SimServer(model, self.card, params)
        self.n = n_gpus
        self._locked: dict[int, int] = {}
        self._util = [0.0] * n_gpus  # memory-bound decode activity in [0, 1]
        self._energy = [0.0] * n_gpus
        self.clock_changes = 0

    def _idx(self, index: int) -> int:
        if not 0 <= index < self.n:
            raise GPUNotFoundError(f"no GPU {index} on this simulated node (it has {self.n}: 0..{self.n - 1})")
        return index

    def list_gpus(self) -> list[GPUInfo]:
        return [GPUInfo(i, f"{self.card.name} (simulated)", f"SIM-{self.card.name}-{i}", int(self.card.memory_bytes))
                for i in range(self.n)]

    def supported_clocks_mhz(self, index: int) -> list[int]:
        self._idx(index)
        return self.card.supported_clocks_mhz()

    def set_locked_clocks(self, index: int, clock_mhz: int) -> None:
        self._locked[self._idx(index)] = self.check_clock(index, clock_mhz)
        self.clock_changes += 1

    def reset_locked_clocks(self, index: int) -> None:
        self._locked.pop(self._idx(index), None)

    def current_clock_mhz(self, index: int) -> int:
        return self._locked.get(self._idx(index), self.card.clock_max_mhz)

    def set_utilisation(self, index: int, util: float) -> None:
        """Fraction of time GPU ``index`` runs (memory-bound decode) iterations, 0..1."""
        if not 0 <= util <= 1:
            raise HardwareError(f"utilisation must be within 0..1, got {util}")
        self._util[self._idx(index)] = util

    def power_w(self, index: int) -> float:
        u = self._util[self._idx(index)]
        if u == 0:
            return self.card.idle_w
        busy = float(self.server.gpu_power_w(0.2, 1.0, 1.0, self.current_clock_mhz(index)))
        return self.card.idle_w + u * (busy - self.card.idle_w)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass (integrates the energy counters)."""
        if seconds < 0:
            raise HardwareError("simulated time only moves forward")
        for i in range(self.n):
            self._energy[i] += self.power_w(i) * seconds

    def energy_j(self, index: int) -> float:
        return self._energy[self._idx(index)]
