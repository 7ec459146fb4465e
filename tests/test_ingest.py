"""Ingestion: readers, validation with quarantine, idempotency, crash-and-rerun, window loads."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

from dynamo_pipeline.classify import classify
from dynamo_pipeline.ingest import MappingError, ingest_file, load_mapping, window_loads
from dynamo_pipeline.ingest.mapping import ColumnMapping, Columns
from tests.conftest import SAMPLES

CODE = SAMPLES / "AzureLLMInferenceTrace_code.csv.gz"
CONV = SAMPLES / "AzureLLMInferenceTrace_conv.csv.gz"


def count(store, sql: str, **p) -> int:
    with store.engine.connect() as c:
        return int(c.execute(text(sql), p).scalar_one())


def test_azure_sample_loads_completely_and_balances(store, settings):
    s = ingest_file(store, CODE, settings, progress=False)
    assert s.rows_read == 8819 == s.rows_inserted and s.rows_quarantined == 0 and s.balanced
    assert count(store, "SELECT COUNT(*) FROM requests") == 8819
    assert count(store, "SELECT COUNT(*) FROM requests WHERE tenant = 'code'") == 8819
    with store.engine.connect() as c:
        run = c.execute(text("SELECT status, rows_read, rows_inserted FROM ingest_runs")).one()
        # first row of the file: 2023-11-16 18:17:03.9799600, 4808 in, 10 out
        first = c.execute(text("SELECT arrived_at_us, input_tokens, output_tokens FROM requests "
                               "ORDER BY arrived_at_us LIMIT 1")).one()
    assert tuple(run) == ("complete", 8819, 8819)
    assert first[0] == int(pd.Timestamp("2023-11-16 18:17:03.979960", tz="UTC").value // 1000)
    assert first[1:] == (4808, 10)


def test_reingest_and_overlap_add_nothing(store, settings, tmp_path):
    ingest_file(store, CONV, settings, progress=False)
    again = ingest_file(store, CONV, settings, progress=False)
    assert again.rows_inserted == 0 and again.rows_already_present == 19366 and again.balanced
    # an overlapping file: the last 1000 rows of conv plus 10 new rows
    df = pd.read_csv(gzip.open(CONV))
    extra = df.tail(10).copy()
    extra["TIMESTAMP"] = (pd.to_datetime(extra.TIMESTAMP) + pd.Timedelta(hours=1)).dt.strftime("%Y-%m-%d %H:%M:%S.%f")
    overlap = tmp_path / "overlap_conv.csv"
    pd.concat([df.tail(1000), extra]).to_csv(overlap, index=False)
    s = ingest_file(store, overlap, settings, progress=False)
    assert (s.rows_inserted, s.rows_already_present, s.rows_quarantined) == (10, 1000, 0)
    assert count(store, "SELECT COUNT(*) FROM requests") == 19376
    assert count(store, "SELECT COUNT(*) FROM quarantine") == 0


BAD_CSV = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:00:00.1,100,20
2023-11-16 18:00:00.2,,20
2023-11-16 18:00:00.3,-5,20
2023-11-16 18:00:00.4,12.5,20
2023-11-16 18:00:00.5,abc,20
not a time,100,20
1999-01-01 00:00:00,100,20
2999-01-01 00:00:00,100,20
2023-11-16 18:00:00.9,100,99999999
2023-11-16 18:00:00.1,100,20
2023-11-16 18:00:01.0,100,20,extra
2023-11-16 18:00:01.1,100,30
"""


def test_each_bad_row_is_quarantined_with_line_raw_text_and_reason(store, settings, tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text(BAD_CSV)
    settings = settings.model_copy(update={"ingest": settings.ingest.model_copy(update={"max_output_tokens": 100000})})
    s = ingest_file(store, f, settings, progress=False)
    assert s.rows_read == 12 and s.rows_inserted == 2 and s.rows_quarantined == 10 and s.balanced
    with store.engine.connect() as c:
        q = {r.line: (r.reason, r.raw) for r in c.execute(text("SELECT line, reason, raw FROM quarantine"))}
    assert q[3][0] == "missing input_tokens" and q[3][1] == "2023-11-16 18:00:00.2,,20"
    assert q[4][0] == "input_tokens is negative"
    assert q[5][0] == "input_tokens is not an integer"
    assert q[6][0] == "input_tokens is not a number"
    assert q[7][0].startswith("arrived_at is not a iso8601 time")
    assert q[8][0].startswith("arrived_at before 2000-01-01")
    assert q[9][0].startswith("arrived_at in the future")
    assert q[10][0].startswith("output_tokens above the cap of 100000")
    assert q[11][0] == "duplicate request_id within this file"
    assert q[12][0].startswith("expected 3 fields") and q[12][1] == "2023-11-16 18:00:01.0,100,20,extra"
    # a rerun of the same file records no second copy of the quarantined rows
    s2 = ingest_file(store, f, settings, progress=False)
    assert s2.rows_quarantined == 10 and s2.rows_already_present == 2 and s2.balanced
    assert count(store, "SELECT COUNT(*) FROM quarantine") == 10


def test_invalid_utf8_line_is_quarantined_and_the_rest_loads(store, settings, tmp_path):
    f = tmp_path / "enc.csv"
    f.write_bytes(b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00,1,2\n"
                  b"2023-11-16 18:00:01,\xff\xfe,2\n2023-11-16 18:00:02,3,4\n")
    s = ingest_file(store, f, settings, progress=False)
    assert (s.rows_read, s.rows_inserted, s.rows_quarantined) == (3, 2, 1)
    with store.engine.connect() as c:
        line, reason, raw = c.execute(text("SELECT line, reason, raw FROM quarantine")).one()
    assert line == 3 and reason.startswith("not valid UTF-8") and "\\xff" in raw


def test_jsonl_with_mapping_epoch_ms_ids_and_gzip(store, settings, tmp_path):
    recs = [
        {"id": "a1", "ts": 1700000000000, "p": 10, "c": 5, "m": "Llama-3-70B", "user": "t1", "prompt": "hi"},
        {"id": "a2", "ts": 1700000001500, "p": 600, "c": 400, "m": "Llama-3-70B", "user": "t2"},
        {"id": "a1", "ts": 1700000002000, "p": 1, "c": 1},  # duplicate id
        {"id": "a3", "ts": "soon", "p": 1, "c": 1},
    ]
    f = tmp_path / "log.jsonl.gz"
    with gzip.open(f, "wt") as g:
        for r in recs:
            g.write(json.dumps(r) + "\n")
        g.write("{not json\n")
        g.write("[1, 2]\n")
    mp = tmp_path / "m.yaml"
    mp.write_text("format: jsonl\ncolumns: {arrived_at: ts, input_tokens: p, output_tokens: c, request_id: id, "
                  "model: m, tenant: user, prompt_text: prompt}\ntime: epoch_ms\ndefault_model: X\n")
    s = ingest_file(store, f, settings, load_mapping(mp), progress=False)
    assert (s.rows_read, s.rows_inserted, s.rows_quarantined) == (6, 2, 4)
    with store.engine.connect() as c:
        rows = c.execute(text("SELECT request_id, arrived_at_us, model, tenant, prompt_text FROM requests ORDER BY 1")).all()
        reasons = sorted(r[0] for r in c.execute(text("SELECT reason FROM quarantine")))
    assert rows[0] == ("a1", 1700000000000000, "Llama-3-70B", "t1", "hi")
    assert rows[1][:2] == ("a2", 1700000001500000)
    assert reasons[0] == "arrived_at is not a epoch_ms time"
    assert "duplicate request_id within this file" in reasons
    assert any(r.startswith("invalid JSON") for r in reasons) and any(r.startswith("expected a JSON object") for r in reasons)


def test_parquet_with_offset_seconds_and_token_scale(store, settings, tmp_path):
    f = tmp_path / "log.parquet"
    pd.DataFrame({"t": [0.0, 1.5, 2.0], "in_k": [1, 2, None], "out": [10, 20, 30]}).to_parquet(f)
    m = ColumnMapping(format="parquet", columns=Columns(arrived_at="t", input_tokens="in_k", output_tokens="out"),
                      time="offset_s", start="2024-05-01T00:00:00Z", token_scale=1000)
    s = ingest_file(store, f, settings, m, progress=False)
    assert (s.rows_inserted, s.rows_quarantined) == (2, 1)
    with store.engine.connect() as c:
        got = c.execute(text("SELECT arrived_at_us, input_tokens FROM requests ORDER BY 1")).all()
    t0 = int(pd.Timestamp("2024-05-01T00:00:00Z").value // 1000)
    assert got == [(t0, 1000), (t0 + 1_500_000, 2000)]


def test_mapping_errors_say_what_to_fix(tmp_path, store, settings):
    with pytest.raises(MappingError, match="needs `start`"):
        m = tmp_path / "m.yaml"
        m.write_text("columns: {arrived_at: t, input_tokens: i, output_tokens: o}\ntime: offset_s\n")
        load_mapping(m)
    f = tmp_path / "x.csv"
    f.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(MappingError, match="match no preset; pass --mapping"):
        ingest_file(store, f, settings, progress=False)
    m2 = ColumnMapping(columns=Columns(arrived_at="when", input_tokens="a", output_tokens="b"))
    with pytest.raises(MappingError, match=r"mapped column\(s\) \['when'\] not in the file"):
        ingest_file(store, f, settings, m2, progress=False)


def test_killed_ingest_leaves_whole_blocks_and_rerun_completes_exactly(store, settings, tmp_path):
    df = pd.read_csv(gzip.open(CONV))
    df.loc[[5, 7000, 15000], "ContextTokens"] = -1  # three bad rows spread over the blocks
    f = tmp_path / "conv_bad.csv"
    df.to_csv(f, index=False)
    small = settings.model_copy(update={"ingest": settings.ingest.model_copy(update={"chunk_rows": 5000})})
    with pytest.raises(KeyboardInterrupt):
        ingest_file(store, f, small, progress=False, stop_after_blocks=2)
    # whole blocks only: 10,000 rows read, of which 2 quarantined (row indices 5 and 7000)
    assert count(store, "SELECT COUNT(*) FROM requests") == 9998
    assert count(store, "SELECT COUNT(*) FROM quarantine") == 2
    assert count(store, "SELECT rows_read FROM ingest_runs") == 10000
    s = ingest_file(store, f, small, progress=False)
    assert (s.rows_read, s.rows_inserted, s.rows_already_present, s.rows_quarantined) == (19366, 19363 - 9998, 9998, 3)
    assert count(store, "SELECT COUNT(*) FROM requests") == 19363
    assert count(store, "SELECT COUNT(*) FROM quarantine") == 3
    with store.engine.connect() as c:
        assert sorted(r[0] for r in c.execute(text("SELECT status FROM ingest_runs"))) == ["abandoned", "complete"]


def test_window_loads_equal_an_independent_count(store, settings):
    ingest_file(store, CODE, settings, progress=False)
    ingest_file(store, CONV, settings, progress=False)
    got = window_loads(store, 300)
    raw = pd.concat([pd.read_csv(gzip.open(CODE)), pd.read_csv(gzip.open(CONV))])
    t = pd.to_datetime(raw.TIMESTAMP, format="ISO8601").dt.tz_localize("UTC")
    ws = (t.astype("int64") // 10**9 // 300) * 300
    cls = classify(raw.ContextTokens.to_numpy(), raw.GeneratedTokens.to_numpy(), settings.classes)
    exp = pd.DataFrame({"ws": ws.to_numpy(), "c": cls, "i": raw.ContextTokens.to_numpy()}).groupby(["ws", "c"]).agg(
        n=("i", "size"), s=("i", "sum"))
    got_i = got.set_index(["window_start_s", "class_name"])
    assert len(got) == len(exp)
    for (w, c), row in exp.iterrows():
        assert got_i.loc[(w, c), "arrivals"] == row.n and got_i.loc[(w, c), "input_tokens_sum"] == row.s
    assert np.allclose(got.rate_rps, got.arrivals / 300)
    assert got.arrivals.sum() == 28185
