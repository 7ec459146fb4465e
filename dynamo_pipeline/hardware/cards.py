"""Model cards and GPU cards: the published figures the simulated server and the planner need.

A :class:`ModelCard` gives a model's size and attention shape (parameters, active parameters for
MoE, layers, hidden size, KV heads, head dim, bytes per weight); a :class:`GPUCard` gives a GPU's
peak BF16 FLOP/s, HBM and NVLink bandwidth, memory, TDP, idle power and clock range. Which tensor-
parallel degrees fit a model follows from memory (:func:`fitting_tp`). The reconfiguration times of
DESIGN §6 (clock change, re-shard, reload, new instance) and the DGX H100 server power live here as
constants so the planner, the agent and the simulator share one set of numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9

#: Clock change through NVML locked clocks, seconds (DynamoLLM: 50-80 ms).
CLOCK_CHANGE_S_RANGE = (0.050, 0.080)
CLOCK_CHANGE_S = 0.065
#: Re-shard a 70B model to another TP degree over NVLink (DynamoLLM: about 50 ms).
RESHARD_NVLINK_70B_S = 0.050
#: Re-shard by reloading weights from host/storage instead (DynamoLLM: 1-2 min).
RESHARD_RELOAD_S_RANGE = (60.0, 120.0)
RESHARD_RELOAD_S = 90.0
#: Bring up a new 70B instance (server boot, engine start, weight load; DynamoLLM: 6-8 min).
NEW_INSTANCE_70B_S_RANGE = (360.0, 480.0)
NEW_INSTANCE_70B_S = 420.0


@dataclass(frozen=True)
class ModelCard:
    name: str
    params: float  # total parameters
    active_params: float  # parameters used per token (= params for dense models)
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    bytes_per_weight: int = 2  # BF16

    @property
    def weight_bytes(self) -> float:
        return self.params * self.bytes_per_weight

    @property
    def kv_bytes_per_token(self) -> float:
        """K and V of every layer for one token, bytes."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.bytes_per_weight

    @property
    def flops_per_token(self) -> float:
        """Dense matmul FLOPs per token (2 x active parameters), attention excluded."""
        return 2 * self.active_params


@dataclass(frozen=True)
class GPUCard:
    name: str
    peak_bf16_flops: float  # dense, FLOP/s
    hbm_bytes_per_s: float
    nvlink_bytes_per_s: float  # per direction, per GPU
    memory_bytes: float
    tdp_w: float
    idle_w: float
    clock_min_mhz: int
    clock_max_mhz: int
    clock_step_mhz: int
    #: the profiling grid's clocks (about 200 MHz apart, top clock included)
    profile_clocks_mhz: tuple[int, ...]
    gpus_per_server: int = 8
    server_max_power_w: float = 0.0
    server_non_gpu_power_w: float = 0.0

    def supported_clocks_mhz(self) -> list[int]:
        """Every lockable SM clock, highest first (the device's list on real hardware)."""
        clocks = set(range(self.clock_min_mhz, self.clock_max_mhz + 1, self.clock_step_mhz))
        clocks |= {self.clock_max_mhz, *self.profile_clocks_mhz}
        return sorted(clocks, reverse=True)


MODELS: dict[str, ModelCard] = {
    m.name: m
    for m in (
        ModelCard("Llama-2-13B", 13.0e9, 13.0e9, 40, 5120, 40, 40, 128),
        ModelCard("Llama-2-70B", 68.98e9, 68.98e9, 80, 8192, 64, 8, 128),
        ModelCard("Llama-3-70B", 70.55e9, 70.55e9, 80, 8192, 64, 8, 128),
        ModelCard("Mixtral-8x7B", 46.7e9, 12.9e9, 32, 4096, 32, 8, 128),
    )
}

GPUS: dict[str, GPUCard] = {
    g.name: g
    for g in (
        GPUCard("H100-SXM", 989e12, 3.35e12, 450e9, 80 * GB, 700.0, 75.0, 210, 1980, 15,
                (800, 1000, 1200, 1400, 1600, 1800, 1980), 8, 10_200.0, 4_600.0),
        GPUCard("A100-SXM", 312e12, 2.039e12, 300e9, 80 * GB, 400.0, 50.0, 210, 1410, 15,
                (810, 1005, 1200, 1410), 8, 6_500.0, 3_300.0),
    )
}

#: share of GPU memory the engine may use (vLLM's gpu_memory_utilization) and per-GPU activation
#: reserve; what is left after the weight shard holds the KV cache.
MEMORY_UTILISATION = 0.95
ACTIVATION_RESERVE_BYTES = 1.0 * GB
#: a TP degree "fits" when its KV cache holds at least this many tokens (a few long requests).
MIN_KV_TOKENS = 16_384


def model_card(name: str) -> ModelCard:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {sorted(MODELS)} (add a ModelCard in hardware/cards.py)") from None


def gpu_card(name: str) -> GPUCard:
    try:
        return GPUS[name]
    except KeyError:
        raise KeyError(f"unknown GPU {name!r}; known: {sorted(GPUS)} (add a GPUCard in hardware/cards.py)") from None


def kv_capacity_tokens(model: ModelCard, gpu: GPUCard, tp: int) -> int:
    """Tokens of KV cache an instance of ``tp`` GPUs holds (0 when the weights do not fit)."""
    free = tp * (gpu.memory_bytes * MEMORY_UTILISATION - ACTIVATION_RESERVE_BYTES) - model.weight_bytes
    return max(0, int(free // model.kv_bytes_per_token))


def fitting_tp(model: ModelCard, gpu: GPUCard, degrees: tuple[int, ...] = (2, 4, 8)) -> list[int]:
    """The TP degrees among ``degrees`` whose KV cache holds at least :data:`MIN_KV_TOKENS`."""
    return [t for t in degrees if kv_capacity_tokens(model, gpu, t) >= MIN_KV_TOKENS]


def reshard_nvlink_s(model: ModelCard) -> float:
    """Re-shard time over NVLink, scaled from DynamoLLM's ~50 ms for a 70B model by weight size."""
    return RESHARD_NVLINK_70B_S * model.weight_bytes / MODELS["Llama-2-70B"].weight_bytes


def new_instance_s(model: ModelCard) -> float:
    """Time to bring up a new instance: DynamoLLM's 6-8 min for 70B; smaller models load faster
    but boot and engine start (about 4 min) stay."""
    boot_s = 240.0
    return boot_s + (NEW_INSTANCE_70B_S - boot_s) * model.weight_bytes / MODELS["Llama-2-70B"].weight_bytes
