"""Length predictor: features, prompt-wise split, baselines, persistence, the one-request path, and
misprediction accounting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from dynamo_pipeline.cli import main
from dynamo_pipeline.config import ClassesConfig, load_settings
from dynamo_pipeline.lengths import (
    LengthPredictor,
    LengthsError,
    evaluate,
    load_mispredictions,
    load_predictor,
    misprediction_counts,
    misprediction_summary,
    output_class,
    prompt_split,
    record_mispredictions,
    register_predictor,
    train,
)
from dynamo_pipeline.lengths.data import SHARED, load_alpaca_eval, load_length_pairs

WORDS_LONG = ["write an essay about", "explain in detail", "write a long story on", "describe thoroughly"]
WORDS_SHORT = ["what is", "name the capital of", "yes or no:", "give one word for"]


def synthetic(n_prompts: int = 300, per_prompt: int = 4, seed: int = 0) -> pd.DataFrame:
    """Output length set by the prompt's wording and the model; input length uninformative."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        long = p % 3 == 0
        medium = p % 3 == 1
        text = f"{rng.choice(WORDS_LONG if long else WORDS_SHORT)} topic{p}" + (" with some detail" if medium else "")
        for k in range(per_prompt):
            model = f"model{k % 2}"
            base = 600 if long else (200 if medium else 30)
            out = int(base * (1.5 if model == "model1" else 1.0) * rng.uniform(0.8, 1.2))
            rows.append(dict(input_tokens=int(rng.integers(5, 60)), output_tokens=out, model=model, tenant="t",
                             prompt_text=text, arrived_at_us=1_704_067_200_000_000 + p * 1_000_000, prompt_id=f"p{p}"))
    return pd.DataFrame(rows)


@pytest.fixture
def cfg():
    return load_settings(None, lengths={"text_hash_features": 2**14})


def test_output_class_uses_configured_bins():
    assert list(output_class(np.array([0, 99, 100, 349, 350]), (100, 350))) == ["S", "S", "M", "M", "L"]


def test_prompt_split_never_puts_a_prompt_on_both_sides():
    d = synthetic()
    tr, te = prompt_split(d, 0.25, 0)
    assert not set(d.prompt_id.iloc[tr]) & set(d.prompt_id.iloc[te])
    assert 0.15 < len(te) / len(d) < 0.35


def test_predictor_beats_majority_and_input_length_baselines_on_held_out_prompts(cfg):
    r = evaluate(synthetic(), cfg.classes, cfg.lengths, "synthetic")
    assert r["model"]["accuracy"] > 0.9
    assert r["model"]["accuracy"] > r["majority"]["accuracy"] + 0.3
    assert r["model"]["accuracy"] > r["input_length_only"]["accuracy"] + 0.3
    conf = np.array(r["model"]["confusion"])
    assert conf.sum() == r["test_rows"] and set(r["model"]["recall"]) == {"S", "M", "L"}


def test_single_request_path_agrees_with_batch_prediction(cfg):
    d = synthetic(60)
    p = train(d, cfg.classes, cfg.lengths)
    batch = p.predict(d)
    X = p.featurizer.transform(d.iloc[:20])
    for i in range(20):
        r = d.iloc[i]
        idx, val = p.featurizer.row(r.input_tokens, r.model, r.tenant, r.prompt_text, r.arrived_at_us)
        dense = np.zeros(X.shape[1])
        np.add.at(dense, idx, val)
        assert np.allclose(dense, X[i].toarray().ravel())
        cls, est = p.predict_one(int(r.input_tokens), r.model, r.tenant, r.prompt_text, int(r.arrived_at_us))
        assert cls == batch.output_class.iloc[i] and abs(est - batch.output_tokens_est.iloc[i]) <= 1


def test_predictor_persists_with_version_and_metadata(cfg, tmp_path, store):
    p = train(synthetic(60), cfg.classes, cfg.lengths, "synthetic")
    path = p.save(tmp_path)
    q = LengthPredictor.load(path)
    assert q.version == p.version and q.metadata["rows"] == 240 and q.metadata["data"] == "synthetic"
    assert q.predict_one(20, "model0", "t", "write an essay about x") == p.predict_one(20, "model0", "t", "write an essay about x")
    register_predictor(store, p, path, 0.9)
    assert load_predictor(store).version == p.version
    with pytest.raises(LengthsError, match="dynamo lengths train"):
        LengthPredictor.load(tmp_path / "nope.joblib")


def test_training_refuses_too_little_data(cfg):
    with pytest.raises(LengthsError, match="at least 20"):
        train(synthetic(2, 2), cfg.classes, cfg.lengths)


def test_mispredictions_count_per_window_and_store(store):
    classes = ClassesConfig()
    req = pd.DataFrame({"arrived_at_us": [0, 1_000_000, 301_000_000, 302_000_000], "input_tokens": [100, 100, 1000, 3000],
                        "output_tokens": [50, 500, 200, 50], "model": "m"})
    counts = misprediction_counts(req, np.array([60, 200, 250, 400]), classes, 300)
    s = misprediction_summary(counts)
    assert list(s.requests) == [2, 2] and list(s.mispredicted) == [1, 1]
    assert list(s.under_predicted) == [1, 0]  # SL predicted SM in window 0; LS predicted LL in window 300
    assert counts.requests.sum() == len(req)
    record_mispredictions(store, counts, "v1")
    record_mispredictions(store, counts, "v1")  # re-recording replaces, never doubles
    back = load_mispredictions(store, "v1")
    assert back.requests.sum() == 4 and set(back.predicted_class) == {"SS", "SM", "MM", "LL"}
    by_class = misprediction_counts(req, None, classes, 300, np.array(["S", "L", "M", "L"]))
    assert misprediction_summary(by_class).mispredicted.sum() == 1


def test_cli_lengths_train_and_account(tmp_path, monkeypatch):
    import dynamo_pipeline.cli.lengths as cli_lengths

    monkeypatch.setattr(cli_lengths, "load_dataset", lambda name, store=None: synthetic(80))
    db = f"sqlite:///{tmp_path / 'l.db'}"
    r = CliRunner()
    assert r.invoke(main, ["--db", db, "db", "upgrade"]).exit_code == 0
    res = r.invoke(main, ["--db", db, "lengths", "train", "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    assert "majority" in res.output and "input_length_only" in res.output and "saved lengths-" in res.output
    res = r.invoke(main, ["--db", db, "lengths", "account"])
    assert res.exit_code == 2 and "dynamo ingest" in res.output


def test_shared_length_pairs_load_with_tenants():
    if not (SHARED / "length_pairs").is_dir():
        pytest.skip("../shared/data/length_pairs not present")
    d = load_length_pairs()
    assert len(d) == 30_731 + 33_768 + 28_257 and set(d.tenant) == {"sharegpt", "bwb", "arxiv"}


def test_alpaca_eval_is_read_in_place_with_prompt_groups():
    if not (SHARED / "alpaca_eval_lengths").is_dir():
        pytest.skip("../shared/data/alpaca_eval_lengths not present (non-commercial; never bundled)")
    d = load_alpaca_eval()
    assert d.prompt_id.nunique() == 805 and d.prompt_text.notna().all() and d.model.nunique() > 200
