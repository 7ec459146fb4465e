"""Readers: turn a log file (CSV, JSONL or Parquet; gzip detected from its bytes) into blocks of
raw rows, each row with its source line and its raw text, ready for validation.

A block is a :class:`RawBlock`: a DataFrame of the mapped source columns as read (strings for CSV,
JSON values for JSONL, typed values for Parquet), the line number of every row (for Parquet, the
row number), and the rows that could not even be parsed (wrong field count, invalid JSON, bad
UTF-8), already with their reason. Nothing is dropped here: every input line is either a row of the
frame or a rejected row.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd

from dynamo_pipeline.ingest.mapping import ColumnMapping, MappingError


@dataclass
class RawBlock:
    frame: pd.DataFrame  # one row per parsed record, columns = mapped source columns
    lines: np.ndarray  # int64 line (or row) number of each frame row, 1-based
    raw: Callable[[np.ndarray], list[str]]  # raw text of the frame rows at the given positions
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (line, raw text, reason)
    bytes_read: int = 0
    maybe_damaged: bool = True  # False when the reader saw no U+FFFD in the block's text


def open_bytes(path: Path):
    """A binary file object, gunzipped when the file starts with the gzip magic bytes."""
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _decode_lines(chunk: list[bytes], first_line: int) -> tuple[list[str], list[tuple[int, str, str]], list[int]]:
    """Decode lines as UTF-8; lines that are not valid UTF-8 are rejected (kept, with the bytes shown)."""
    try:
        return b"".join(chunk).decode("utf-8").splitlines(keepends=True), [], []
    except UnicodeDecodeError:
        out, bad, bad_idx = [], [], []
        for k, b in enumerate(chunk):
            try:
                out.append(b.decode("utf-8"))
            except UnicodeDecodeError as e:
                bad.append((first_line + k, b.decode("utf-8", "backslashreplace").rstrip("\r\n"), f"not valid UTF-8 ({e.reason} at byte {e.start})"))
                bad_idx.append(k)
        return out, bad, bad_idx


def read_csv_blocks(path: Path, mapping: ColumnMapping | None, block_rows: int) -> Iterator[tuple[list[str], RawBlock]]:
    """Yield (header, block). The header is returned so a caller can sniff a preset mapping."""
    str_cols = {c for f, c in (mapping.source_columns().items() if mapping else [])
                if f in ("request_id", "model", "tenant", "prompt_text", "arrived_at")}
    with open_bytes(path) as f:
        header_bytes = f.readline()
        if not header_bytes:
            return
        header = next(csv.reader([header_bytes.decode("utf-8", "replace")]))
        header = [h.strip().lstrip("\ufeff") for h in header]
        line_no = 2  # line of the next data row
        while True:
            chunk = list(islice(f, block_rows))
            if not chunk:
                break
            nbytes = sum(len(b) for b in chunk)
            texts, rejected, bad_idx = _decode_lines(chunk, line_no)
            good_lines = np.arange(line_no, line_no + len(chunk), dtype=np.int64)
            if bad_idx:
                good_lines = np.delete(good_lines, bad_idx)
            block = _parse_csv_text(texts, header, good_lines, str_cols)
            block.rejected[:0] = rejected
            block.bytes_read = nbytes
            line_no += len(chunk)
            yield header, block


def _parse_csv_text(texts: list[str], header: list[str], lines: np.ndarray, str_cols: set[str]) -> RawBlock:
    """Fast path: pandas' C parser on the whole block. If a line has the wrong number of fields or a
    quoted field spans lines, fall back to the csv module line by line for this block only."""
    joined = "".join(texts)
    try:
        # Let the C parser infer numbers (fast on clean logs); identifiers and text stay strings.
        # Its "loss of data" warning (a line with extra fields) sends the block to the slow path.
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(
                io.StringIO(joined), header=None, names=header, dtype={c: str for c in str_cols if c in header},
                keep_default_na=False, skip_blank_lines=False, engine="c", index_col=False,
            )
        if len(df) == len(texts):
            return RawBlock(df, lines, lambda pos: [texts[i].rstrip("\r\n") for i in pos],
                            maybe_damaged="\ufffd" in joined)
    except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError):
        pass
    rows, keep_lines, keep_text, rejected = [], [], [], []
    n = len(header)
    for text, ln in zip(texts, lines):
        stripped = text.rstrip("\r\n")
        try:
            fields = next(csv.reader([stripped])) if stripped else [""] * n
        except csv.Error as e:
            rejected.append((int(ln), stripped, f"unparsable CSV line: {e}"))
            continue
        if len(fields) != n:
            rejected.append((int(ln), stripped, f"expected {n} fields ({','.join(header)}), found {len(fields)}"))
            continue
        rows.append(fields)
        keep_lines.append(ln)
        keep_text.append(stripped)
    df = pd.DataFrame(rows, columns=header, dtype=str) if rows else pd.DataFrame(columns=header, dtype=str)
    return RawBlock(df, np.asarray(keep_lines, dtype=np.int64), lambda pos: [keep_text[i] for i in pos], rejected)


def read_jsonl_blocks(path: Path, block_rows: int) -> Iterator[RawBlock]:
    with open_bytes(path) as f:
        line_no = 1
        while True:
            chunk = list(islice(f, block_rows))
            if not chunk:
                break
            texts, rejected, bad_idx = _decode_lines(chunk, line_no)
            all_lines = np.arange(line_no, line_no + len(chunk), dtype=np.int64)
            if bad_idx:
                all_lines = np.delete(all_lines, bad_idx)
            recs, keep_lines, keep_text = [], [], []
            for text, ln in zip(texts, all_lines):
                s = text.strip()
                if not s:
                    rejected.append((int(ln), "", "empty line"))
                    continue
                try:
                    rec = json.loads(s)
                except json.JSONDecodeError as e:
                    rejected.append((int(ln), s, f"invalid JSON: {e.msg} at column {e.colno}"))
                    continue
                if not isinstance(rec, dict):
                    rejected.append((int(ln), s, f"expected a JSON object, found {type(rec).__name__}"))
                    continue
                recs.append(rec)
                keep_lines.append(ln)
                keep_text.append(s)
            df = pd.DataFrame.from_records(recs) if recs else pd.DataFrame()
            yield RawBlock(df, np.asarray(keep_lines, dtype=np.int64), lambda pos, t=keep_text: [t[i] for i in pos],
                           rejected, sum(len(b) for b in chunk))
            line_no += len(chunk)


def read_parquet_blocks(path: Path, block_rows: int) -> Iterator[RawBlock]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise MappingError(f"{path} is not a readable Parquet file: {e}") from e
    row0 = 1
    for batch in pf.iter_batches(batch_size=block_rows):
        df = batch.to_pandas()
        n = len(df)

        def raw(pos: np.ndarray, df=df) -> list[str]:
            return [json.dumps(r, default=str) for r in df.iloc[pos].to_dict("records")]

        yield RawBlock(df, np.arange(row0, row0 + n, dtype=np.int64), raw, [], batch.nbytes)
        row0 += n


def check_columns(path: Path, present: list[str], mapping: ColumnMapping) -> None:
    """Raise :class:`MappingError` when a mapped column is absent from the file."""
    missing = [c for c in mapping.source_columns().values() if c not in present]
    if missing:
        raise MappingError(
            f"{path}: mapped column(s) {missing} not in the file, which has {present}; fix the mapping's `columns`"
        )
