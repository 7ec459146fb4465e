"""Typed settings for every stage, from a YAML file and ``DYNAMO_*`` environment variables.

One object, :class:`Settings`, carries the request classes (length bins), the latency SLOs, the
hardware, prices, carbon defaults, ingestion limits and the database URL. Sources, lowest priority
first: built-in defaults, the YAML file (``DYNAMO_CONFIG`` or ``./dynamo.yaml`` when present), then
environment variables (``DYNAMO_DATABASE_URL``, nested keys with ``__``:
``DYNAMO_SLO__TTFT_P99_S=0.5``). Invalid values raise :class:`ConfigError`, which names the key and
what is allowed. Nothing here has side effects: reading settings never touches the disk beyond the
YAML file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

#: Input bins first letter, output bins second letter: S(hort), M(edium), L(ong).
BIN_LETTERS = ("S", "M", "L")


class ConfigError(ValueError):
    """A setting is invalid; the message names the key, the value and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassesConfig(_Strict):
    """Length bins: a request with input < input_bins[0] tokens is S, < input_bins[1] is M, else L."""

    input_bins_tokens: tuple[int, int] = (512, 2048)
    output_bins_tokens: tuple[int, int] = (100, 350)

    @field_validator("input_bins_tokens", "output_bins_tokens")
    @classmethod
    def _increasing(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not (0 < v[0] < v[1]):
            raise ValueError(f"must be two increasing positive token counts, got {list(v)}")
        return v

    def names(self) -> list[str]:
        """The nine class names, SS … LL (input letter first)."""
        return [i + o for i in BIN_LETTERS for o in BIN_LETTERS]


class SLOConfig(_Strict):
    """P99 latency objectives. Long-input classes may take ``long_input_ttft_factor`` × their bare
    prefill time on TP8 at the top clock when that is larger than ``ttft_p99_s``."""

    ttft_p99_s: float = Field(0.4, gt=0)
    tbt_p99_s: float = Field(0.1, gt=0)
    long_input_ttft_factor: float = Field(5.0, ge=1)
    per_class: dict[str, dict[str, float]] = Field(default_factory=dict)

    @field_validator("per_class")
    @classmethod
    def _known_classes(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        allowed = {i + o for i in BIN_LETTERS for o in BIN_LETTERS}
        for name, over in v.items():
            if name not in allowed:
                raise ValueError(f"unknown class {name!r}; allowed: {sorted(allowed)}")
            bad = set(over) - {"ttft_p99_s", "tbt_p99_s"}
            if bad:
                raise ValueError(f"class {name}: unknown keys {sorted(bad)}; allowed: ttft_p99_s, tbt_p99_s")
            if any(x <= 0 for x in over.values()):
                raise ValueError(f"class {name}: SLOs must be > 0 seconds")
        return v

    def for_class(self, name: str) -> tuple[float, float]:
        """(TTFT P99 s, TBT P99 s) for a class, with per-class overrides applied."""
        over = self.per_class.get(name, {})
        return over.get("ttft_p99_s", self.ttft_p99_s), over.get("tbt_p99_s", self.tbt_p99_s)


class HardwareConfig(_Strict):
    """The fleet's server type and the model it serves."""

    gpu: str = "H100-SXM"
    model: str = "Llama-2-70B"
    gpus_per_server: int = Field(8, ge=1)
    server_non_gpu_power_w: float = Field(4600.0, ge=0, description="CPUs, memory, NVSwitch, fans, NICs")
    tp_degrees: tuple[int, ...] = (2, 4, 8)
    server_start_s: float = Field(420.0, ge=0, description="time to bring up a new instance (6-8 min for 70B)")

    @field_validator("tp_degrees")
    @classmethod
    def _tp(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(t not in (1, 2, 4, 8) for t in v):
            raise ValueError(f"must be a non-empty subset of 1, 2, 4, 8, got {list(v)}")
        return tuple(sorted(set(v)))


class PricesConfig(_Strict):
    energy_usd_per_kwh: float = Field(0.10, ge=0)
    gpu_usd_per_hour: float = Field(2.50, ge=0)


class CarbonConfig(_Strict):
    default_g_per_kwh: float = Field(400.0, ge=0, description="grid intensity when no hourly table is loaded")


class PlannerConfig(_Strict):
    """The hierarchical planner (DESIGN §4). Objective = w_energy·kWh + w_gpu_cost·USD of GPU time +
    w_carbon·kg CO2, per window, plus reconfiguration costs amortised over ``reconfig_horizon_s``."""

    solver: str = Field("highs", description="highs (default) or cbc; the other one is the fallback")
    time_limit_s: float = Field(1.0, gt=0, description="per solve; at the limit the incumbent is used (flagged)")
    mip_rel_gap: float = Field(1e-3, ge=0, description="relative optimality gap at which the solver stops (0.1%: finer than the power model)")
    weight_energy: float = Field(1.0, ge=0, description="objective weight per kWh")
    weight_gpu_cost: float = Field(0.0, ge=0, description="objective weight per USD of GPU time")
    weight_carbon: float = Field(0.0, ge=0, description="objective weight per kg CO2")
    max_changes_per_window: int = Field(8, ge=0, description="instances started or re-sharded per pool and window; more are staggered")
    pools: int = Field(1, ge=1, le=9, description="server pools at the cluster level: 1 = servers shared by all classes "
                       "(instances still per class or mixed); 9 = a pool per class, as in the paper")
    pool_interval_s: int = Field(300, ge=60)
    cluster_interval_s: int = Field(1800, ge=300)
    reconfig_horizon_s: float = Field(1800.0, gt=0, description="a change must pay for itself within this time")
    reshard_s: float = Field(0.05, ge=0, description="re-shard over NVLink (DESIGN §6)")
    gpu_idle_w: float = Field(75.0, ge=0, description="idle draw of one GPU")
    merge_below_servers: float = Field(1.0, ge=0, description="a pool needing fewer servers than this merges into the next larger")
    cluster_headroom: float = Field(0.3, ge=0, le=5, description="capacity the cluster level keeps above its forecast "
                                    "peak, as a fraction: servers decided a start-up time ahead must absorb forecast error")
    early_scale_in: bool = Field(True, description="between cluster intervals, stop servers the load measured in the "
                                 "window just ended does not need (stopping takes seconds, only starting takes "
                                 "minutes); off: scale-in at cluster boundaries only")
    scale_in_margin: float = Field(0.2, ge=0, le=5, description="early scale-in keeps the servers that the load "
                                   "measured in the window just ended, raised by this fraction and the cluster "
                                   "headroom, needs")
    mixed_instances: bool = Field(True, description="instances may serve all classes of their pool in the forecast mix "
                                  "(no partly used instance per class); off: one class per instance")
    mix_levels: int = Field(8, ge=1, le=32, description="load levels of a mixed instance, as fractions of its SLO capacity")
    peak_quantile: str = Field("upper_rps", description="forecast column used as the load")

    @field_validator("solver")
    @classmethod
    def _solver(cls, v: str) -> str:
        if v not in ("highs", "cbc"):
            raise ValueError(f"unknown solver {v!r}; allowed: highs, cbc")
        return v


class IngestConfig(_Strict):
    """Validation limits for request logs."""

    max_input_tokens: int = Field(1_000_000, gt=0)
    max_output_tokens: int = Field(1_000_000, gt=0)
    earliest: str = "2000-01-01T00:00:00Z"
    latest_ahead_s: float = Field(86_400.0, ge=0, description="rows more than this far in the future are rejected")
    chunk_rows: int = Field(250_000, ge=1_000)


class ForecastConfig(_Strict):
    """Load forecasts (:mod:`dynamo_pipeline.forecast`): which forecaster the planner uses, the upper
    quantile it provisions for, the two horizons, and how short or dirty histories are handled."""

    forecaster: str = Field("ensemble", description="day-ahead forecaster: a name from `dynamo forecast backtest --help`")
    intraday_forecaster: str = Field("last_value", description="forecaster for the intra-day horizon")
    upper_quantile: float = Field(0.9, gt=0.5, lt=1.0)
    day_ahead_s: int = Field(86_400, ge=3_600, description="nightly plan horizon")
    intraday_s: int = Field(1_800, ge=300, description="intra-day horizon, corrected by the latest windows")
    correction_windows: int = Field(3, ge=1, description="latest observed windows that correct intra-day forecasts")
    min_history_s: int = Field(2 * 86_400, ge=0, description="shorter histories fall back to `fallback`")
    fallback: str = "last_value"
    calibration_s: int = Field(3 * 86_400, ge=0, description="held-out span that calibrates the upper quantile; 0: none")
    outlier_mad: float = Field(8.0, ge=0, description="clip training values above median + k·MAD (1-day window); 0: off")
    holidays: tuple[str, ...] = Field((), description="ISO dates given to Prophet as holidays")


class LengthsConfig(_Strict):
    """Output-length predictor (:mod:`dynamo_pipeline.lengths`)."""

    model_dir: str = Field("models", description="where trained predictors are saved, relative to `home`")
    text_hash_features: int = Field(2**18, ge=2**10, description="hashed word/bigram features of prompt text")
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0
class AgentConfig(_Strict):
    """The node agent (``dynamo agent run``): how often it looks, how it moves clocks, its safety
    bounds and where it reports. Secrets (the schedule key, the control token) come from the
    environment only: ``DYNAMO_SCHEDULE_KEY`` and ``token_env``."""

    source: str = Field("store", pattern="^(store|dir|http)$", description="where schedules come from")
    schedule_dir: str = "var/schedules"
    schedule_url: str = ""
    poll_s: float = Field(1.0, gt=0, description="how often the schedule source is read")
    tick_s: float = Field(5.0, gt=0, description="how often the engine's metrics are read and a clock picked")
    fast_tick_s: float = Field(0.05, gt=0, description="how often fast-path signals (queue, latency) are checked")
    metrics_url: str = Field("", description="the serving engine's Prometheus endpoint, e.g. http://127.0.0.1:8000/metrics; "
                             "{instance_id} / {first_gpu} placeholders give each instance its own engine")
    min_clock_change_s: float = Field(30.0, ge=0, description="least time between two load-driven clock changes")
    down_hysteresis: float = Field(0.15, ge=0, lt=1, description="load must fall this fraction below a band before stepping down")
    down_hold_s: float = Field(15.0, ge=0, description="a lower clock must be indicated this long before stepping down")
    fast_waiting_max: int = Field(16, ge=0, description="fast path when more requests than this wait in the queue")
    fast_slo_fraction: float = Field(0.9, gt=0, le=1, description="fast path when observed P99 TTFT or TBT reaches this fraction of its SLO")
    fast_release_s: float = Field(10.0, ge=0, description="fast-path signals must be clear this long before coming down")
    stale_after_s: float = Field(900.0, gt=0, description="past this age without a valid schedule window, fall back to the top clock")
    telemetry_window_s: float = Field(10.0, gt=0, description="power/energy are reported per window of this length")
    flush_s: float = Field(2.0, gt=0, description="telemetry is written to the store in batches this often")
    spool_path: str = Field("", description="local append-only JSONL buffer (default: $home/agent-<node>.spool.jsonl)")
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(9400, ge=0, le=65535, description="Prometheus /metrics and /healthz; 0 picks a free port")
    token_env: str = Field("DYNAMO_AGENT_TOKEN", description="env var holding the bearer token of control endpoints")
    executor: str = Field("sim", pattern="^(sim|command|http)$", description="who carries out instance start/stop/re-shard")
    executor_command: str = Field("", description="for executor=command: run with the change as JSON on stdin")
    executor_url: str = Field("", description="for executor=http: POST the change as JSON here")


class Settings(BaseSettings):
    """All settings. Build with :func:`load_settings` to get :class:`ConfigError` on bad input."""

    model_config = SettingsConfigDict(
        env_prefix="DYNAMO_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    database_url: str = ""
    home: str = "var"
    window_s: int = Field(300, ge=60, le=3600)
    classes: ClassesConfig = ClassesConfig()
    slo: SLOConfig = SLOConfig()
    hardware: HardwareConfig = HardwareConfig()
    prices: PricesConfig = PricesConfig()
    carbon: CarbonConfig = CarbonConfig()
    ingest: IngestConfig = IngestConfig()
    agent: AgentConfig = AgentConfig()
    planner: PlannerConfig = PlannerConfig()
    forecast: ForecastConfig = ForecastConfig()
    lengths: LengthsConfig = LengthsConfig()

    @field_validator("window_s")
    @classmethod
    def _divides_day(cls, v: int) -> int:
        if 86_400 % v:
            raise ValueError(f"must divide a day (86400 s) evenly, got {v}")
        return v

    @model_validator(mode="after")
    def _default_db(self) -> "Settings":
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{Path(self.home).absolute() / 'dynamo.db'}")
        elif not self.database_url.startswith(("sqlite", "postgresql")):
            raise ValueError(
                f"database_url: unsupported scheme in {self.database_url!r}; use sqlite:///PATH or "
                "postgresql+psycopg://USER@HOST:PORT/DB"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init (the YAML file, passed in by load_settings) < environment: env vars win.
        return (env_settings, init_settings)


def _yaml_path(path: str | os.PathLike | None) -> Path | None:
    if path is not None:
        return Path(path)
    if os.environ.get("DYNAMO_CONFIG"):
        return Path(os.environ["DYNAMO_CONFIG"])
    default = Path("dynamo.yaml")
    return default if default.exists() else None


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        got = e.get("input")
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown setting; check the spelling against `dynamo config show`"
        lines.append(f"{key}: {msg} (got {got!r})")
    return "invalid settings:\n  " + "\n  ".join(lines)


def load_settings(path: str | os.PathLike | None = None, **overrides: Any) -> Settings:
    """Read settings from the YAML file (if any) and the environment; ``overrides`` win over both
    (used by tests and the CLI). Raises :class:`ConfigError` naming each bad key."""
    data: dict[str, Any] = {}
    yp = _yaml_path(path)
    if yp is not None:
        if not yp.exists():
            raise ConfigError(f"config file {yp} does not exist; create it or unset DYNAMO_CONFIG")
        try:
            loaded = yaml.safe_load(yp.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {yp} is not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {yp} must hold a mapping of settings, got {type(loaded).__name__}")
        data.update(loaded)
    if "home" not in data and os.environ.get("DYNAMO_HOME") is None:
        data["home"] = "var"
    try:
        s = Settings(**data)
        if overrides:
            merged = s.model_dump()
            merged.update(overrides)
            s = Settings.model_validate(merged)
        return s
    except ValidationError as e:
        raise ConfigError(_describe(e)) from e
