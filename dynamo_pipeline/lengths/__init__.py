"""Output-length prediction: a scikit-learn predictor of the output class (and tokens) at arrival,
its prompt-wise evaluation against baselines, persistence, and misprediction accounting.

:mod:`.model` (features, train, evaluate, predict), :mod:`.data` (training sets), :mod:`.registry`
(``length_models`` table), :mod:`.mispredict` (per-window mispredicted requests).
"""

from dynamo_pipeline.lengths.mispredict import (
    load_mispredictions,
    misprediction_counts,
    misprediction_summary,
    record_mispredictions,
)
from dynamo_pipeline.lengths.model import LengthPredictor, LengthsError, evaluate, output_class, prompt_split, train
from dynamo_pipeline.lengths.registry import list_predictors, load_predictor, register_predictor

__all__ = ["LengthPredictor", "LengthsError", "evaluate", "list_predictors", "load_mispredictions", "load_predictor",
           "misprediction_counts", "misprediction_summary", "output_class", "prompt_split", "record_mispredictions",
           "register_predictor", "train"]
