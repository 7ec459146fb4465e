"""Property: random mixes of good and bad rows always balance, and no good row is lost or changed."""

from __future__ import annotations

import pandas as pd
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from sqlalchemy import text

from dynamo_pipeline.config import load_settings
from dynamo_pipeline.ingest import ingest_file
from dynamo_pipeline.store import open_store, upgrade

T0 = pd.Timestamp("2024-03-01T00:00:00Z")

good_row = st.builds(
    lambda sec, i, o: ("good", f"{(T0 + pd.Timedelta(microseconds=sec)).strftime('%Y-%m-%d %H:%M:%S.%f')}", str(i), str(o)),
    st.integers(0, 86_400_000_000), st.integers(0, 200_000), st.integers(0, 50_000),
)
bad_row = st.one_of(
    st.just(("bad", "2024-03-01 00:00:00", "", "5")),
    st.just(("bad", "2024-03-01 00:00:00", "-3", "5")),
    st.just(("bad", "2024-03-01 00:00:00", "7", "x")),
    st.just(("bad", "2024-03-01 00:00:00", "1.5", "5")),
    st.just(("bad", "yesterday", "1", "5")),
    st.just(("bad", "1970-01-02 00:00:00", "1", "5")),
    st.just(("bad", "2024-03-01 00:00:00", "1", "5000000")),
    st.just(("bad", "2024-03-01 00:00:00,1,2,3", None, None)),
)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.one_of(good_row, bad_row), min_size=1, max_size=60))
def test_counts_balance_and_good_rows_arrive_unchanged(tmp_path_factory, rows):
    tmp = tmp_path_factory.mktemp("prop")
    s = load_settings(None, database_url=f"sqlite:///{tmp / 'p.db'}", home=str(tmp))
    upgrade(s.database_url)
    store = open_store(s.database_url)
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for kind, t, i, o in rows:
        lines.append(t if i is None else f"{t},{i},{o}")
    f = tmp / "log.csv"
    f.write_text("\n".join(lines) + "\n")
    r = ingest_file(store, f, s, progress=False)

    goods = [(t, int(i), int(o)) for kind, t, i, o in rows if kind == "good"]
    distinct = list(dict.fromkeys(goods))  # an exact repeat of a good row is a duplicate id
    assert r.rows_read == len(rows)
    assert r.rows_read == r.rows_stored + r.rows_quarantined
    assert r.rows_inserted == len(distinct)
    assert r.rows_quarantined == len(rows) - len(distinct)
    with store.engine.connect() as c:
        stored = sorted(c.execute(text("SELECT arrived_at_us, input_tokens, output_tokens FROM requests")).all())
        n_q = c.execute(text("SELECT COUNT(*) FROM quarantine")).scalar_one()
    expect = sorted((int(pd.Timestamp(t, tz="UTC").value // 1000), i, o) for t, i, o in distinct)
    assert stored == expect
    assert n_q == r.rows_quarantined
    store.dispose()
