"""Training data for the length predictor: the shared length-pair and AlpacaEval sets, and the store.

Each loader returns a frame with input_tokens, output_tokens, model, tenant, prompt_text (or None),
arrived_at_us (or None) and prompt_id (the group for prompt-wise splits).

- ``length_pairs`` (Apache-2.0; ShareGPT, BWB translation, arXiv summarisation token pairs): the
  data set's name is the tenant, every row is its own prompt; no text, no model.
- ``alpaca_eval`` (CC BY-NC 4.0: read from ``../shared/data`` only, never copied into the project):
  805 prompts with text, answered by 227 models; the generator is the model, the AlpacaEval
  sub-source the tenant.
- the store's ``requests`` table (whatever ingestion loaded).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from sqlalchemy import text

from dynamo_pipeline.lengths.model import LengthsError
from dynamo_pipeline.store.db import Store



def _shared_data() -> Path:
    """``$DYNAMO_SHARED_DATA``, else the first ``shared/data`` beside a parent folder of the package."""
    env = os.environ.get("DYNAMO_SHARED_DATA")
    here = Path(__file__).resolve()
    return Path(env) if env else next((p / "shared" / "data" for p in here.parents if (p / "shared" / "data").is_dir()),
                                      here.parents[3] / "shared" / "data")


SHARED = _shared_data()
_PAIRS = {"sharegpt": "sharegpt_8k_filtered_stats_llama2_tokenizer.csv",
          "bwb": "bwb_stats_llama2_tokenizer_filtered_v2.csv",
          "arxiv": "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"}


def load_length_pairs(root: str | Path | None = None) -> pd.DataFrame:
    root = Path(root) if root else SHARED / "length_pairs"
    frames = []
    for name, f in _PAIRS.items():
        if not (root / f).exists():
            raise LengthsError(f"{root / f}: missing; length pairs live in ../shared/data/length_pairs")
        d = pd.read_csv(root / f, usecols=["num_prefill_tokens", "num_decode_tokens"])
        frames.append(pd.DataFrame({"input_tokens": d.num_prefill_tokens, "output_tokens": d.num_decode_tokens,
                                    "model": "llama2", "tenant": name, "prompt_text": None, "arrived_at_us": None,
                                    "prompt_id": [f"{name}:{i}" for i in range(len(d))]}))
    return pd.concat(frames, ignore_index=True)


def load_alpaca_eval(root: str | Path | None = None) -> pd.DataFrame:
    root = Path(root) if root else SHARED / "alpaca_eval_lengths"
    p, o = root / "alpaca_eval_prompts.csv", root / "alpaca_eval_output_lengths.csv"
    if not (p.exists() and o.exists()):
        raise LengthsError(f"{root}: AlpacaEval lengths not found (non-commercial data: it is read from "
                           "../shared/data/alpaca_eval_lengths and never shipped with the project)")
    prompts = pd.read_csv(p)
    outs = pd.read_csv(o, usecols=["prompt_id", "generator", "output_tokens_cl100k"])
    d = outs.merge(prompts, on="prompt_id", how="inner")
    return pd.DataFrame({"input_tokens": d.prompt_tokens_cl100k, "output_tokens": d.output_tokens_cl100k,
                         "model": d.generator, "tenant": d.source_dataset, "prompt_text": d.instruction,
                         "arrived_at_us": None, "prompt_id": d.prompt_id})


def load_store_requests(store: Store, limit: int | None = None) -> pd.DataFrame:
    q = ("SELECT arrived_at_us, input_tokens, output_tokens, model, tenant, prompt_text, request_id FROM requests "
         "ORDER BY arrived_at_us" + (f" LIMIT {int(limit)}" if limit else ""))
    with store.engine.connect() as conn:
        d = pd.read_sql(text(q), conn)
    # a prompt's identity: its text when logged, else the request itself
    d["prompt_id"] = d.prompt_text.where(d.prompt_text.notna(), d.request_id)
    return d


def load_dataset(name: str, store: Store | None = None) -> pd.DataFrame:
    if name == "length_pairs":
        return load_length_pairs()
    if name == "alpaca_eval":
        return load_alpaca_eval()
    if name == "store":
        if store is None:
            raise LengthsError("data set 'store' needs a store")
        return load_store_requests(store)
    raise LengthsError(f"unknown data set {name!r}; use length_pairs, alpaca_eval or store")
