"""The clock decision for one instance: by load from the schedule's clock table, with hysteresis,
and the fast path that goes to the top clock when the SLO is at risk.

Pure logic, no I/O and no clock of its own: :meth:`ClockPolicy.step` takes the time and what the
engine reported and returns the clock to set (or ``None`` to leave it) and the override episodes
that began or ended. Rules:

* **Up** by load: as soon as the table asks for a higher clock, once ``min_clock_change_s`` has
  passed since the last change.
* **Down** by load: only when the load is at least ``down_hysteresis`` (a fraction) below the band
  edge, has stayed so for ``down_hold_s``, and ``min_clock_change_s`` has passed.
* **Fast path**: any of — more than ``fast_waiting_max`` requests waiting, observed P99 TTFT or TBT
  at ``fast_slo_fraction`` of its SLO or above, a request running past its predicted length —
  sets the top clock at once (no minimum interval). It ends only after every signal has been clear
  for ``fast_release_s``; the override is then reported with its reasons and duration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dynamo_pipeline.agent.engine_metrics import EngineSample
from dynamo_pipeline.schedules.schema import Instance


@dataclass(frozen=True)
class PolicyParams:
    min_clock_change_s: float = 30.0
    down_hysteresis: float = 0.15
    down_hold_s: float = 15.0
    fast_waiting_max: int = 16
    fast_slo_fraction: float = 0.9
    fast_release_s: float = 10.0
    ttft_slo_s: float = 0.4
    tbt_slo_s: float = 0.1


@dataclass(frozen=True)
class Override:
    """A fast-path episode: when it began (monotonic s), why, and, once over, how long it lasted."""

    instance_id: str
    started_s: float
    reasons: tuple[str, ...]
    duration_s: float | None = None


@dataclass
class Decision:
    clock_mhz: int | None = None
    started: Override | None = None
    ended: Override | None = None


def fast_reasons(s: EngineSample | None, p: PolicyParams, forced: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Why the SLO is at risk now (empty when it is not)."""
    out = list(forced)
    if s is None:
        return tuple(out)
    if s.waiting > p.fast_waiting_max:
        out.append(f"queue:{int(s.waiting)}>{p.fast_waiting_max}")
    if not math.isnan(s.ttft_p99_s) and s.ttft_p99_s >= p.fast_slo_fraction * p.ttft_slo_s:
        out.append(f"ttft:{s.ttft_p99_s:.3f}s")
    if not math.isnan(s.tbt_p99_s) and s.tbt_p99_s >= p.fast_slo_fraction * p.tbt_slo_s:
        out.append(f"tbt:{s.tbt_p99_s:.3f}s")
    if s.past_predicted > 0:
        out.append(f"past_predicted:{int(s.past_predicted)}")
    return tuple(out)


@dataclass
class ClockPolicy:
    """State of one instance's clock between steps."""

    instance: Instance
    top_clock_mhz: int
    params: PolicyParams
    current_mhz: int | None = None
    last_change_s: float = -math.inf
    lower_since_s: float | None = None
    override: Override | None = None
    clear_since_s: float | None = None
    _reasons: set[str] = field(default_factory=set)

    def initial_clock(self, load_rps: float = math.nan) -> int:
        return self.instance.clock_mhz if math.isnan(load_rps) else self.instance.clock_for_load(load_rps)

    def _set(self, now: float, mhz: int, d: Decision) -> Decision:
        if mhz != self.current_mhz:
            d.clock_mhz = mhz
            self.current_mhz = mhz
            self.last_change_s = now
        return d

    def step(self, now: float, s: EngineSample | None, forced: tuple[str, ...] = ()) -> Decision:
        """Decide at monotonic time ``now`` (s) from the last engine sample and pushed signals."""
        d = Decision()
        reasons = fast_reasons(s, self.params, forced)
        if reasons:
            self.clear_since_s = None
            self.lower_since_s = None
            if self.override is None:
                self.override = Override(self.instance.instance_id, now, reasons)
                d.started = self.override
            self._reasons.update(r.split(":")[0] for r in reasons)
            return self._set(now, self.top_clock_mhz, d)
        if self.override is not None:
            if self.clear_since_s is None:
                self.clear_since_s = now
            if now - self.clear_since_s < self.params.fast_release_s:
                return d
            o = self.override
            d.ended = Override(o.instance_id, o.started_s, tuple(sorted(self._reasons)), now - o.started_s)
            self.override, self.clear_since_s = None, None
            self._reasons.clear()
            # the way down from an override is part of the fast path: no minimum interval
            load = s.load_rps if s is not None else math.nan
            return self._set(now, self.initial_clock(load), d)
        if s is None or math.isnan(s.load_rps):
            return d
        want = self.instance.clock_for_load(s.load_rps)
        cur = self.current_mhz if self.current_mhz is not None else want
        if now - self.last_change_s < self.params.min_clock_change_s and self.current_mhz is not None:
            if want >= cur:
                self.lower_since_s = None
            elif self.lower_since_s is None:
                self.lower_since_s = now
            return d
        if want > cur or self.current_mhz is None:
            self.lower_since_s = None
            return self._set(now, want, d)
        if want < cur:
            # step down only when even a load inflated by the hysteresis margin asks for less
            down = self.instance.clock_for_load(s.load_rps / (1.0 - self.params.down_hysteresis))
            if down >= cur:
                self.lower_since_s = None
                return d
            if self.lower_since_s is None:
                self.lower_since_s = now
            if now - self.lower_since_s >= self.params.down_hold_s:
                self.lower_since_s = None
                return self._set(now, down, d)
            return d
        self.lower_since_s = None
        return d

    def force_top(self, now: float) -> Decision:
        """Top clock regardless of load (stale schedule); not an override episode."""
        return self._set(now, self.top_clock_mhz, Decision())
