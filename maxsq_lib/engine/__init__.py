"""Training, adaptation and evaluation engine (one loop; methods are strategies)."""

from .evaluation import EvalResult, evaluate, normalized_entropy, predict_probabilities
from .runs import RunExistsError, find_runs, is_finished, read_metrics, run_name
from .strategies import TargetStrategy, make_strategy, strategy_from_config
from ..optim import poly_lr
from .build import build_dataset, build_model, resolve_device, run_dir_for
from .trainer import MissingInputError, TrainingDiverged, train

__all__ = [
    "EvalResult", "evaluate", "normalized_entropy", "predict_probabilities", "RunExistsError",
    "find_runs", "is_finished", "read_metrics", "run_name", "TargetStrategy", "make_strategy",
    "strategy_from_config", "MissingInputError", "TrainingDiverged", "poly_lr", "run_dir_for",
    "train", "build_dataset", "build_model", "resolve_device",
]
