"""Training a HetClassifier on (noisy) labels and scoring it."""

from hetexport.training.config import TrainConfig
from hetexport.training.evaluation import Predictions, predict
from hetexport.training.loop import EpochRecord, TrainResult, train_model
from hetexport.training.splits import Split, holdout_split

__all__ = [
    "EpochRecord",
    "Predictions",
    "Split",
    "TrainConfig",
    "TrainResult",
    "holdout_split",
    "predict",
    "train_model",
]
