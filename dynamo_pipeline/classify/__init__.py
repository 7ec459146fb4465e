"""Request classes: (input bin, output bin) → SS … LL, and threshold fitting from history.

Bins come from :class:`~dynamo_pipeline.config.ClassesConfig`. ``classify`` is vectorised (numpy)
for the hot paths (window aggregation, simulation); ``class_case_sql`` is the same rule as a SQL
expression so window loads are computed inside the database. ``fit_thresholds`` proposes bins from
history (terciles by default); it returns them and never writes the config.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dynamo_pipeline.config import BIN_LETTERS, ClassesConfig

_LETTERS = np.array(BIN_LETTERS)


def bin_index(tokens: np.ndarray, bins: tuple[int, int]) -> np.ndarray:
    """0 (S) for tokens < bins[0], 1 (M) for < bins[1], 2 (L) otherwise."""
    return np.searchsorted(np.asarray(bins), np.asarray(tokens), side="right")


def classify(input_tokens: np.ndarray, output_tokens: np.ndarray, cfg: ClassesConfig) -> np.ndarray:
    """Class names (``"SM"`` …) for arrays of token counts."""
    i = bin_index(input_tokens, cfg.input_bins_tokens)
    o = bin_index(output_tokens, cfg.output_bins_tokens)
    return np.char.add(_LETTERS[i], _LETTERS[o])


def class_case_sql(cfg: ClassesConfig, input_col: str = "input_tokens", output_col: str = "output_tokens") -> str:
    """The classification rule as a portable SQL CASE expression (SQLite and PostgreSQL)."""
    (i1, i2), (o1, o2) = cfg.input_bins_tokens, cfg.output_bins_tokens
    ib = f"CASE WHEN {input_col} < {int(i1)} THEN 'S' WHEN {input_col} < {int(i2)} THEN 'M' ELSE 'L' END"
    ob = f"CASE WHEN {output_col} < {int(o1)} THEN 'S' WHEN {output_col} < {int(o2)} THEN 'M' ELSE 'L' END"
    return f"({ib} || {ob})"


@dataclass(frozen=True)
class ThresholdProposal:
    input_bins_tokens: tuple[int, int]
    output_bins_tokens: tuple[int, int]
    quantiles: tuple[float, float]
    n_requests: int
    class_shares: dict[str, float]

    def as_yaml(self) -> str:
        return (
            "classes:\n"
            f"  input_bins_tokens: [{self.input_bins_tokens[0]}, {self.input_bins_tokens[1]}]\n"
            f"  output_bins_tokens: [{self.output_bins_tokens[0]}, {self.output_bins_tokens[1]}]\n"
        )


def fit_thresholds(
    input_tokens: np.ndarray, output_tokens: np.ndarray, quantiles: tuple[float, float] = (1 / 3, 2 / 3)
) -> ThresholdProposal:
    """Propose bins at the given quantiles of history (terciles by default)."""
    inp, out = np.asarray(input_tokens), np.asarray(output_tokens)
    if inp.size < 3:
        raise ValueError(f"need at least 3 requests to fit class thresholds, got {inp.size}; ingest logs first")
    if not (0 < quantiles[0] < quantiles[1] < 1):
        raise ValueError(f"quantiles must satisfy 0 < q1 < q2 < 1, got {quantiles}")

    def edges(x: np.ndarray) -> tuple[int, int]:
        a, b = (int(np.ceil(v)) for v in np.quantile(x, quantiles))
        a = max(a, 1)
        return a, max(b, a + 1)

    ib, ob = edges(inp), edges(out)
    names = classify(inp, out, ClassesConfig(input_bins_tokens=ib, output_bins_tokens=ob))
    uniq, counts = np.unique(names, return_counts=True)
    shares = {str(k): float(v) / inp.size for k, v in zip(uniq, counts)}
    return ThresholdProposal(ib, ob, quantiles, int(inp.size), shares)
