"""Output-length predictor: output class (S/M/L by ``classes.output_bins_tokens``) and a token estimate
from what a request log has at arrival: input tokens, model, tenant, time of day and, when present,
the prompt text.

Features (one sparse row per request): log input tokens and its square, hour of day as sine/cosine,
whether text is present; hashed one-hots of model, tenant, model × input bin and tenant × input
bin; hashed word unigrams and bigrams of the prompt text (``lengths.text_hash_features``, no
vocabulary to store, so a request never meets an unknown word). A logistic-loss linear classifier
gives the class, a ridge regression on log output tokens gives the estimate; both are small and
predict one request in well under a millisecond (see bench/bench_lengths.py).

Evaluation is prompt-wise (GroupShuffleSplit by ``prompt_id``: the same prompt never sits on both
sides), against two baselines: the majority class, and a classifier on input length alone.
Predictors are saved with joblib together with their version and training metadata.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction import FeatureHasher
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import Ridge, SGDClassifier
from sklearn.metrics import accuracy_score, confusion_matrix, recall_score
from sklearn.model_selection import GroupShuffleSplit
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils import murmurhash3_32

from dynamo_pipeline.classify import bin_index
from dynamo_pipeline.config import BIN_LETTERS, ClassesConfig, LengthsConfig

FORMAT_VERSION = 1
_CAT_FEATURES = 2**12


class LengthsError(ValueError):
    """Training or prediction cannot proceed as asked; the message says what to change."""


def output_class(output_tokens: np.ndarray, bins: tuple[int, int]) -> np.ndarray:
    """'S', 'M' or 'L' per request from its output tokens."""
    return np.asarray(BIN_LETTERS)[bin_index(np.asarray(output_tokens), bins)]


@dataclass
class Featurizer:
    text_features: int
    input_bins: tuple[int, int]

    def __post_init__(self) -> None:
        self._text = HashingVectorizer(n_features=self.text_features, ngram_range=(1, 2), alternate_sign=False,
                                       norm="l2", lowercase=True)
        self._cat = FeatureHasher(n_features=_CAT_FEATURES, input_type="string", alternate_sign=False)
        self._analyzer = self._text.build_analyzer()

    def __getstate__(self) -> dict:
        return {"text_features": self.text_features, "input_bins": self.input_bins}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    @staticmethod
    def _hash(tokens: list[str], n: int) -> np.ndarray:
        """Column of each token as sklearn's hashers compute it (murmurhash3, seed 0, |h| mod n)."""
        h = np.fromiter((murmurhash3_32(t, 0, False) for t in tokens), np.int64, len(tokens))
        return np.where(h == -(2**31), (2**31 - 1 - (n - 1)) % n, np.abs(h) % n)

    def row(self, input_tokens: float, model: str, tenant: str, text: str, arrived_at_us: int | None
            ) -> tuple[np.ndarray, np.ndarray]:
        """One request's features as (column indices, values), the same as a row of :meth:`transform`
        without building a sparse matrix (the single-request path)."""
        inp = np.log1p(float(input_tokens))
        if arrived_at_us is not None:
            hour = (int(arrived_at_us) // 1_000_000 % 86_400) / 3_600.0
            sin, cos = np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)
        else:
            sin = cos = 0.0
        b = int(bin_index(np.array([input_tokens]), self.input_bins)[0])
        idx = [np.arange(6), 6 + self._hash([f"m={model}", f"t={tenant}", f"mi={model}|{b}", f"ti={tenant}|{b}"],
                                             _CAT_FEATURES)]
        val = [np.array([inp / 8, (inp / 8) ** 2, sin, cos, 1.0 if text else 0.0, 1.0]), np.ones(4)]
        toks = self._analyzer(text) if text else []
        if toks:
            cols, counts = np.unique(self._hash(toks, self.text_features), return_counts=True)
            idx.append(6 + _CAT_FEATURES + cols)
            val.append(counts / np.sqrt((counts.astype(float) ** 2).sum()))
        return np.concatenate(idx), np.concatenate(val)

    def transform(self, df: pd.DataFrame) -> sp.csr_matrix:
        n = len(df)

        def col(name: str) -> list:
            return df[name].fillna("").astype(str).tolist() if name in df.columns else [""] * n

        arrived = df["arrived_at_us"].to_numpy() if "arrived_at_us" in df.columns and df["arrived_at_us"].notna().all() \
            else None
        return self._build(df["input_tokens"].to_numpy(float), col("model"), col("tenant"), col("prompt_text"), arrived)

    def _build(self, input_tokens: np.ndarray, model: list[str], tenant: list[str], text: list[str],
               arrived_at_us: np.ndarray | None) -> sp.csr_matrix:
        n = len(input_tokens)
        inp = np.log1p(input_tokens)
        if arrived_at_us is not None:
            hour = (np.asarray(arrived_at_us, dtype=np.int64) // 1_000_000 % 86_400) / 3_600.0
            sin, cos = np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)
        else:
            sin = cos = np.zeros(n)
        has_text = np.fromiter((1.0 if t else 0.0 for t in text), float, n)
        dense = sp.csr_matrix(np.c_[inp / 8, (inp / 8) ** 2, sin, cos, has_text, np.ones(n)])
        ib = bin_index(input_tokens, self.input_bins)
        cats = [[f"m={m}", f"t={t}", f"mi={m}|{b}", f"ti={t}|{b}"] for m, t, b in zip(model, tenant, ib)]
        return sp.hstack([dense, self._cat.transform(cats), self._text.transform(text)], format="csr")


@dataclass
class LengthPredictor:
    """A trained predictor. :meth:`predict` takes a frame with input_tokens and optionally model,
    tenant, arrived_at_us and prompt_text; returns output_class and output_tokens_est."""

    version: str
    output_bins: tuple[int, int]
    featurizer: Featurizer
    clf: SGDClassifier
    reg: Ridge
    metadata: dict = field(default_factory=dict)

    def _weights(self) -> np.ndarray:
        """Classifier and regressor weights as one C-ordered (features × 4) array: one sparse-dense
        product scores a whole batch (sklearn's own predict transposes a 3 × 266k array per call)."""
        w = getattr(self, "_w", None)
        if w is None:
            w = self._w = np.ascontiguousarray(np.vstack([self.clf.coef_, self.reg.coef_[None, :]]).T)
        return w

    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        z = self.featurizer.transform(df) @ self._weights()
        scores = z[:, :-1] + self.clf.intercept_
        est = np.expm1(np.clip(z[:, -1] + self.reg.intercept_, 0, 12))
        return pd.DataFrame({"output_class": self.clf.classes_[np.argmax(scores, axis=1)],
                             "output_tokens_est": np.rint(est).astype(np.int64)}, index=df.index)

    def predict_one(self, input_tokens: int, model: str = "", tenant: str = "", prompt_text: str = "",
                    arrived_at_us: int | None = None) -> tuple[str, int]:
        """One request (the router's path): (output class letter, output token estimate)."""
        idx, val = self.featurizer.row(input_tokens, model or "", tenant or "", prompt_text or "", arrived_at_us)
        z = val @ self._weights()[idx]
        scores = z[:-1] + self.clf.intercept_
        est = float(np.expm1(np.clip(z[-1] + self.reg.intercept_, 0, 12)))
        return str(self.clf.classes_[int(np.argmax(scores))]), int(round(est))

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_w"}  # derived: rebuilt on first use

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.version}.joblib"
        joblib.dump({"format": FORMAT_VERSION, "predictor": self}, path, compress=3)
        return path

    @staticmethod
    def load(path: str | Path) -> "LengthPredictor":
        path = Path(path)
        if not path.exists():
            raise LengthsError(f"{path}: no such predictor; train one with `dynamo lengths train`")
        obj = joblib.load(path)
        if not isinstance(obj, dict) or obj.get("format") != FORMAT_VERSION:
            raise LengthsError(f"{path}: not a length predictor of format {FORMAT_VERSION}; retrain it")
        return obj["predictor"]


def _check(df: pd.DataFrame) -> None:
    missing = {"input_tokens", "output_tokens"} - set(df.columns)
    if missing:
        raise LengthsError(f"training data lacks columns {sorted(missing)}")
    if len(df) < 20:
        raise LengthsError(f"need at least 20 requests to train a length predictor, got {len(df)}")


def train(df: pd.DataFrame, classes: ClassesConfig, cfg: LengthsConfig, data: str = "") -> LengthPredictor:
    """Fit the classifier and the token regressor on every row of ``df``."""
    _check(df)
    t0 = time.perf_counter()
    feat = Featurizer(cfg.text_hash_features, classes.input_bins_tokens)
    X = feat.transform(df)
    y = output_class(df["output_tokens"].to_numpy(), classes.output_bins_tokens)
    with warnings.catch_warnings():  # a capped number of epochs is the point: training stays seconds
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = SGDClassifier(loss="log_loss", alpha=2e-6, max_iter=30, tol=1e-4, random_state=cfg.seed).fit(X, y)
    reg = Ridge(alpha=1.0, solver="sparse_cg" if X.shape[0] > 5000 else "auto").fit(X, np.log1p(df["output_tokens"].to_numpy(float)))
    meta = {"data": data, "rows": int(len(df)), "output_bins_tokens": list(classes.output_bins_tokens),
            "input_bins_tokens": list(classes.input_bins_tokens), "text_hash_features": cfg.text_hash_features,
            "has_text_share": float(df["prompt_text"].notna().mean()) if "prompt_text" in df.columns else 0.0,
            "class_shares": {k: float(v) for k, v in pd.Series(y).value_counts(normalize=True).items()},
            "fit_s": round(time.perf_counter() - t0, 3), "sklearn": __import__("sklearn").__version__}
    digest = hashlib.sha1(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:10]
    version = f"lengths-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{digest}"
    return LengthPredictor(version, classes.output_bins_tokens, feat, clf, reg, meta)


def prompt_split(df: pd.DataFrame, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row positions (train, test) with no prompt on both sides (groups: ``prompt_id``, else each row)."""
    groups = df["prompt_id"].to_numpy() if "prompt_id" in df.columns else np.arange(len(df))
    return next(GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed).split(df, groups=groups))


def _report(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    labels = list(BIN_LETTERS)
    rec = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "recall": {k: float(v) for k, v in zip(labels, rec)},
            "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist()}


def evaluate(df: pd.DataFrame, classes: ClassesConfig, cfg: LengthsConfig, data: str = "") -> dict:
    """Prompt-wise split; the predictor and both baselines trained on the train side, scored on the
    test side. Returns accuracies, per-class recall and confusion matrices (rows true S/M/L, columns
    predicted), the token estimate's median absolute error, and the trained predictor under ``predictor``."""
    _check(df)
    tr, te = prompt_split(df, cfg.test_fraction, cfg.seed)
    train_df, test_df = df.iloc[tr], df.iloc[te]
    bins = classes.output_bins_tokens
    y_tr = output_class(train_df["output_tokens"].to_numpy(), bins)
    y_te = output_class(test_df["output_tokens"].to_numpy(), bins)
    pred = train(train_df, classes, cfg, data)
    p = pred.predict(test_df)
    maj = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(tr), 1)), y_tr)
    x_tr = np.log1p(train_df[["input_tokens"]].to_numpy(float))
    x_te = np.log1p(test_df[["input_tokens"]].to_numpy(float))
    inp = DecisionTreeClassifier(max_depth=6, min_samples_leaf=50, random_state=cfg.seed).fit(x_tr, y_tr)
    err = np.abs(p["output_tokens_est"].to_numpy() - test_df["output_tokens"].to_numpy())
    return {"data": data, "train_rows": int(len(tr)), "test_rows": int(len(te)),
            "train_prompts": int(train_df["prompt_id"].nunique()) if "prompt_id" in df.columns else int(len(tr)),
            "test_prompts": int(test_df["prompt_id"].nunique()) if "prompt_id" in df.columns else int(len(te)),
            "model": _report(y_te, p["output_class"].to_numpy()),
            "majority": _report(y_te, maj.predict(np.zeros((len(te), 1)))),
            "input_length_only": _report(y_te, inp.predict(x_te)),
            "token_median_abs_error": float(np.median(err)),
            "predictor": pred}
