"""Column mappings: how to read the request log of any serving stack.

A mapping names the source columns of each field of the request record (DESIGN §3), the token unit
and the kind of timestamp. It comes from YAML (``dynamo ingest --mapping FILE``) or a preset
(``azure`` for the Azure LLM inference trace CSV). Example::

    format: jsonl                 # csv | jsonl | parquet (gzip is detected from the bytes)
    columns:
      arrived_at: ts              # required
      input_tokens: prompt_tokens # required
      output_tokens: completion_tokens
      request_id: id              # optional: a stable hash of the row otherwise
      model: model                # optional: `default_model` otherwise
      tenant: user
      prompt_text: prompt
    time: epoch_ms                # iso8601 | epoch_s | epoch_ms | offset_s | offset_ms
    start: "2024-05-01T00:00:00Z" # required for offset_*: the time offsets count from
    token_scale: 1                # multiply token columns by this (e.g. 1000 for kilotokens)
    default_model: Llama-2-70B
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

TimeKind = Literal["iso8601", "epoch_s", "epoch_ms", "offset_s", "offset_ms"]
FIELDS = ("request_id", "arrived_at", "input_tokens", "output_tokens", "model", "tenant", "prompt_text")


class MappingError(ValueError):
    """A column mapping is invalid or does not fit the file; the message says what to change."""


class Columns(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    arrived_at: str
    input_tokens: str
    output_tokens: str
    request_id: str | None = None
    model: str | None = None
    tenant: str | None = None
    prompt_text: str | None = None


class ColumnMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom"
    format: Literal["csv", "jsonl", "parquet"] = "csv"
    columns: Columns
    time: TimeKind = "iso8601"
    start: str | None = None
    token_scale: int = Field(1, ge=1)
    default_model: str | None = None
    default_tenant: str | None = None
    #: naive timestamps are read as UTC unless this names another zone (e.g. "America/Los_Angeles")
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _start_for_offsets(self) -> "ColumnMapping":
        if self.time.startswith("offset") and not self.start:
            raise ValueError(f"time: {self.time} needs `start` (the instant offsets count from, ISO 8601)")
        if self.start is not None:
            try:
                pd.Timestamp(self.start)
            except ValueError as e:
                raise ValueError(f"start: {self.start!r} is not an ISO 8601 time") from e
        return self

    def start_us(self) -> int:
        ts = pd.Timestamp(self.start)
        ts = ts.tz_localize(self.timezone) if ts.tzinfo is None else ts
        return int(ts.tz_convert("UTC").value // 1000)

    def source_columns(self) -> dict[str, str]:
        """field → source column, for the fields that are mapped."""
        return {k: v for k, v in self.columns.model_dump().items() if v is not None}


AZURE = ColumnMapping(
    name="azure",
    format="csv",
    columns=Columns(arrived_at="TIMESTAMP", input_tokens="ContextTokens", output_tokens="GeneratedTokens"),
    time="iso8601",
)

PRESETS = {"azure": AZURE}


def load_mapping(path_or_preset: str | Path) -> ColumnMapping:
    """A preset by name (``azure``) or a mapping from a YAML file."""
    if str(path_or_preset) in PRESETS:
        return PRESETS[str(path_or_preset)]
    p = Path(path_or_preset)
    if not p.exists():
        raise MappingError(
            f"mapping {p} not found: give a YAML file (see `dynamo ingest --help`) or a preset: {sorted(PRESETS)}"
        )
    try:
        data = yaml.safe_load(p.read_text())
        return ColumnMapping.model_validate(data)
    except yaml.YAMLError as e:
        raise MappingError(f"mapping {p} is not valid YAML: {e}") from e
    except ValidationError as e:
        errs = "; ".join(
            f"{'.'.join(map(str, x['loc'])) or 'mapping'}: {x['msg'].removeprefix('Value error, ')}" for x in e.errors()
        )
        raise MappingError(f"mapping {p} is invalid: {errs}") from e


def sniff_mapping(path: Path, header: list[str]) -> ColumnMapping:
    """Pick a preset from a CSV header (the Azure trace's three columns), else raise with the fix."""
    if {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} <= set(header):
        return AZURE
    raise MappingError(
        f"{path}: columns {header} match no preset; pass --mapping FILE.yaml naming the columns "
        "(see `dynamo ingest --help`)"
    )
