"""Grid points on a real serving engine: requests through its OpenAI-compatible endpoint, clocks
locked and energy read through a GPU backend (``nvml`` on a GPU node).

For each point, :class:`HttpRunner` locks the SM clock of the instance's GPUs (only supported
values: the backend checks), waits for the clock change to settle, reads the GPUs' energy
counters, replays the Poisson stream against ``POST {url}/v1/completions`` with ``stream: true``
(one asyncio task per request, started at its arrival offset, httpx as the client), reads the
counters again and resets the clocks. TTFT is the time to the first streamed chunk with text; TBT
is the request's mean gap between chunks after the first (its TPOT), matching the simulated
server's definition. Prompts are ``input_tokens`` repetitions of a one-token word; ``max_tokens``
with ``min_tokens``/``ignore_eos`` (vLLM's extensions) make the engine emit the drawn output length.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np

from dynamo_pipeline.hardware.base import GPUBackend, HardwareError
from dynamo_pipeline.hardware.cards import CLOCK_CHANGE_S_RANGE
from dynamo_pipeline.hardware.sim import SimServer
from dynamo_pipeline.profiling.job import package_versions, summarise


class EngineError(RuntimeError):
    """The serving engine failed a request or cannot be reached; the message says what to check."""


class HttpRunner:
    source = "nvml"

    def __init__(self, backend: GPUBackend, url: str, served_model: str, gpu_indices: list[int], *,
                 model_card: str, gpu_card: str, timeout_s: float = 600.0, settle_s: float | None = None,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.backend = backend
        self.url = url.rstrip("/")
        self.served_model = served_model
        self.gpus = list(gpu_indices)
        self.timeout_s = timeout_s
        self.settle_s = CLOCK_CHANGE_S_RANGE[1] if settle_s is None else settle_s
        self.transport = transport
        self._estimator = SimServer(model_card, gpu_card)

    def versions(self) -> str:
        driver = getattr(self.backend, "driver_version", lambda: "unknown")()
        return package_versions("nvidia-ml-py", "httpx") + f" driver={driver} engine={self.url} served={self.served_model}"

    def bare_prefill_s(self, input_tokens: float) -> float:
        """Estimated from the cards (the engine here runs one TP degree only, not necessarily TP8)."""
        return float(self._estimator.prefill_s([input_tokens], 8, self._estimator.gpu.clock_max_mhz)[0])

    async def _one(self, client: httpx.AsyncClient, start: float, delay_s: float, n_in: int, n_out: int):
        await asyncio.sleep(max(0.0, start + delay_s - time.perf_counter()))
        sent = time.perf_counter()
        body = {"model": self.served_model, "prompt": "hi " * int(n_in), "max_tokens": int(n_out),
                "min_tokens": int(n_out), "ignore_eos": True, "stream": True, "temperature": 0.0}
        stamps: list[float] = []
        async with client.stream("POST", f"{self.url}/v1/completions", json=body) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")[:300]
                raise EngineError(f"the engine at {self.url} answered {resp.status_code}: {text}; check the served "
                                  f"model name ({self.served_model!r}) and its max context length")
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if any(c.get("text") for c in chunk.get("choices", [])):
                    stamps.append(time.perf_counter())
        if not stamps:
            raise EngineError(f"the engine at {self.url} streamed no text for a request; is it a completions model?")
        ttft = stamps[0] - sent
        tbt = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else float("nan")
        return ttft, tbt

    async def _replay(self, arrival_s, inp, out):
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits, transport=self.transport) as client:
            start = time.perf_counter()
            res = await asyncio.gather(*(self._one(client, start, float(a), int(i), int(o))
                                         for a, i, o in zip(arrival_s, inp, out)))
        return res

    def measure(self, tp, clock_mhz, arrival_s, input_tokens, output_tokens) -> dict:
        if tp != len(self.gpus):
            raise HardwareError(f"the engine runs on {len(self.gpus)} GPUs {self.gpus} but the grid point asks for "
                                f"TP{tp}; profile one TP per engine deployment (`--tp {len(self.gpus)}`)")
        try:
            for g in self.gpus:
                self.backend.set_locked_clocks(g, int(clock_mhz))
            time.sleep(self.settle_s)
            e0 = [self.backend.energy_j(g) for g in self.gpus]
            t0 = time.perf_counter()
            try:
                res = asyncio.run(self._replay(arrival_s, input_tokens, output_tokens))
            except httpx.TransportError as e:
                raise EngineError(f"cannot reach the serving engine at {self.url} ({e}); start it (e.g. `vllm serve "
                                  f"MODEL --tensor-parallel-size {tp}`) or fix --url") from e
            span = time.perf_counter() - t0
            energy = sum(self.backend.energy_j(g) - e for g, e in zip(self.gpus, e0))
        finally:
            for g in self.gpus:
                self.backend.reset_locked_clocks(g)
        ttft, tbt = (np.array(x, dtype=float) for x in zip(*res))
        return summarise(len(res), ttft, tbt, energy, span)
