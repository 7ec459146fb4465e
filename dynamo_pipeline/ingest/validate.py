"""Validation and normalisation of raw rows into request records, vectorised with pandas/numpy.

:func:`normalise` takes one :class:`~dynamo_pipeline.ingest.readers.RawBlock` and returns the good
rows as a request frame (``request_id, arrived_at_us, input_tokens, output_tokens, model, tenant,
prompt_text``) and the bad rows with the first reason each failed. Checks, in order: required
values present; tokens are non-negative integers within the configured caps; the time parses and
lies between ``ingest.earliest`` and now + ``ingest.latest_ahead_s``; no replacement characters
(encoding damage); request ids unique within the file (the caller passes ids seen in earlier blocks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dynamo_pipeline.config import IngestConfig
from dynamo_pipeline.ingest.mapping import ColumnMapping
from dynamo_pipeline.ingest.readers import RawBlock

REQUEST_COLUMNS = ["request_id", "arrived_at_us", "input_tokens", "output_tokens", "model", "tenant", "prompt_text"]
_HEX = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")


def hash_rows(frame: pd.DataFrame) -> np.ndarray:
    """Stable 64-bit content hash of each row (uint64, vectorised)."""
    return pd.util.hash_pandas_object(frame, index=False, categorize=False).to_numpy(np.uint64)


def hex_ids(h: np.ndarray) -> np.ndarray:
    """64-bit hashes as 16 hex characters each (vectorised)."""
    as_bytes = h.astype(">u8").view(np.uint8).reshape(-1, 8)
    return _HEX[as_bytes].view("S16").ravel().astype(str)


def _is_blank(s: pd.Series) -> np.ndarray:
    if s.dtype == object or pd.api.types.is_string_dtype(s):
        return (s.isna() | (s.astype(str) == "")).to_numpy(dtype=bool)
    return s.isna().to_numpy()


def _to_float(s: pd.Series) -> np.ndarray:
    """Numbers as float64 (NaN where not a number). Fast path: a direct integer cast of the whole
    column, which succeeds on clean logs; otherwise pandas' tolerant parse."""
    if pd.api.types.is_integer_dtype(s.dtype) or pd.api.types.is_float_dtype(s.dtype):
        return s.astype("float64").to_numpy()
    try:  # strings: an exact integer parse, which refuses "1.5" rather than truncating it
        return s.astype("int64").to_numpy().astype("float64")
    except (ValueError, TypeError, OverflowError):
        return pd.to_numeric(s, errors="coerce").astype("float64").to_numpy()


def _tokens(s: pd.Series, name: str, cap: int, scale: int) -> tuple[np.ndarray, list[tuple[np.ndarray, str]]]:
    blank = _is_blank(s)
    num = _to_float(s) * scale
    not_num = ~blank & np.isnan(num)
    with np.errstate(invalid="ignore"):
        frac = ~np.isnan(num) & (num != np.floor(num))
        neg = ~np.isnan(num) & (num < 0)
        big = ~np.isnan(num) & (num > cap)
    checks = [
        (blank, f"missing {name}"),
        (not_num, f"{name} is not a number"),
        (frac, f"{name} is not an integer"),
        (neg, f"{name} is negative"),
        (big, f"{name} above the cap of {cap} (ingest.max_{name})"),
    ]
    return num, checks


def _times_us(s: pd.Series, mapping: ColumnMapping) -> np.ndarray:
    """Arrival times as int64 microseconds since the epoch (UTC); NaT/unparsable → INT64 min."""
    if mapping.time == "iso8601":
        ts = pd.to_datetime(s.astype(str).str.strip(), format="ISO8601", errors="coerce", utc=False)
        if getattr(ts.dt, "tz", None) is None:
            ts = ts.dt.tz_localize(mapping.timezone)
        ts = ts.dt.tz_convert("UTC")
        us = ts.astype("datetime64[us, UTC]").astype("int64").to_numpy().copy()
        us[ts.isna().to_numpy()] = np.iinfo(np.int64).min
        return us
    num = pd.to_numeric(s, errors="coerce").astype("float64").to_numpy()
    factor = {"epoch_s": 1e6, "epoch_ms": 1e3, "offset_s": 1e6, "offset_ms": 1e3}[mapping.time]
    base = mapping.start_us() if mapping.time.startswith("offset") else 0
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.where(np.isnan(num) | (np.abs(num) > 1e15), np.nan, num * factor + base)
    res = np.full(len(num), np.iinfo(np.int64).min, dtype=np.int64)
    ok = ~np.isnan(out)
    res[ok] = np.round(out[ok]).astype(np.int64)
    return res


@dataclass
class Normalised:
    good: pd.DataFrame  # REQUEST_COLUMNS
    bad_pos: np.ndarray  # positions in the block frame
    bad_reason: np.ndarray  # object array of reasons


def normalise(block: RawBlock, mapping: ColumnMapping, limits: IngestConfig, now_us: int,
              default_model: str, seen_ids: "IdSet") -> Normalised:
    df = block.frame
    n = len(df)
    cols = mapping.source_columns()
    get = lambda field: df[cols[field]] if field in cols and cols[field] in df.columns else pd.Series([None] * n, dtype=object)  # noqa: E731

    inp, in_checks = _tokens(get("input_tokens"), "input_tokens", limits.max_input_tokens, mapping.token_scale)
    out, out_checks = _tokens(get("output_tokens"), "output_tokens", limits.max_output_tokens, mapping.token_scale)
    t_raw = get("arrived_at")
    t_us = _times_us(t_raw, mapping)
    nat = t_us == np.iinfo(np.int64).min
    earliest = int(pd.Timestamp(limits.earliest).value // 1000)
    latest = now_us + int(limits.latest_ahead_s * 1e6)
    t_blank = _is_blank(t_raw)
    time_checks = [
        (t_blank, "missing arrived_at"),
        (~t_blank & nat, f"arrived_at is not a {mapping.time} time"),
        (~nat & (t_us < earliest), f"arrived_at before {limits.earliest} (ingest.earliest)"),
        (~nat & (t_us > latest), "arrived_at in the future (beyond ingest.latest_ahead_s)"),
    ]

    model = get("model")
    model = model.where(~pd.Series(_is_blank(model)), mapping.default_model or default_model).astype(str)
    tenant = get("tenant")
    if "tenant" not in cols and mapping.default_tenant is not None:
        tenant = pd.Series([mapping.default_tenant] * n, dtype=object)
    prompt = get("prompt_text")

    damaged = np.zeros(n, dtype=bool)
    if block.maybe_damaged:
        for c in df.columns:
            if df[c].dtype == object or pd.api.types.is_string_dtype(df[c]):
                damaged |= df[c].astype(str).str.contains("\ufffd", regex=False).to_numpy(dtype=bool)

    checks = in_checks + out_checks + time_checks + [(damaged, "text holds U+FFFD (damaged encoding)")]

    if "request_id" in cols:
        rid_raw = get("request_id")
        rid_blank = _is_blank(rid_raw)
        rid = rid_raw.astype(str).str.strip().to_numpy(dtype=object)
        rid_hash = pd.util.hash_array(rid, categorize=False)
        checks.append((rid_blank, "missing request_id"))
    else:
        key = pd.DataFrame({"t": t_us, "i": np.nan_to_num(inp), "o": np.nan_to_num(out), "m": model.to_numpy(),
                            "n": tenant.astype(str).to_numpy()})
        rid_hash = hash_rows(key)
        rid = hex_ids(rid_hash).astype(object)
    # first failing check wins
    reason = np.full(n, None, dtype=object)
    for mask, why in checks:
        reason[mask & (reason == None)] = why  # noqa: E711
    ok = reason == None  # noqa: E711
    dup = np.zeros(n, dtype=bool)
    if ok.any():
        ok_idx = np.flatnonzero(ok)
        dup_local = pd.Series(rid_hash[ok_idx]).duplicated().to_numpy()
        dup_prev = seen_ids.contains(rid_hash[ok_idx])
        dup[ok_idx] = dup_local | dup_prev
        reason[dup] = "duplicate request_id within this file"
        ok &= ~dup
        seen_ids.add(rid_hash[ok])

    good = pd.DataFrame({
        "request_id": rid[ok],
        "arrived_at_us": t_us[ok],
        "input_tokens": inp[ok].astype(np.int64),
        "output_tokens": out[ok].astype(np.int64),
        "model": model.to_numpy()[ok],
        "tenant": tenant.to_numpy()[ok],
        "prompt_text": prompt.to_numpy()[ok],
    })
    bad_pos = np.flatnonzero(~ok)
    return Normalised(good, bad_pos, reason[bad_pos])


class IdSet:
    """Request ids already seen in this run, kept as sorted runs of 64-bit hashes (compact, fast).
    A 64-bit hash collision between distinct ids (odds ~1e-8 at 1M ids) would quarantine a row as
    a duplicate — it is kept, never lost."""

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def contains(self, h: np.ndarray) -> np.ndarray:
        found = np.zeros(len(h), dtype=bool)
        for run in self._runs:
            pos = np.searchsorted(run, h).clip(0, len(run) - 1)
            found |= run[pos] == h
        return found

    def add(self, h: np.ndarray) -> None:
        if len(h):
            self._runs.append(np.sort(h))
        if len(self._runs) > 8:  # keep lookups cheap on long files: merge the runs
            self._runs = [np.sort(np.concatenate(self._runs))]
