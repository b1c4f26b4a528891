"""The training loop every built-in objective uses, and the pieces it is made of.

``train(trial, ctx, model, data, config)`` trains, validates, reports to the trial and prunes
each epoch, early-stops, checkpoints and resumes; see :mod:`hpo.training._loop`.
"""

from hpo.training._config import (
    DIRECTIONS,
    OPTIMIZERS,
    SCHEDULERS,
    NonFiniteLossError,
    TrainConfig,
    TrainResult,
)
from hpo.training._data import (
    SKLEARN_DATASETS,
    ClassificationData,
    load_sklearn_dataset,
    make_classification_data,
    stratified_split,
)
from hpo.training._device import resolve_device, seed_everything
from hpo.training._loop import MODEL_METRICS, evaluate, train
from hpo.training._metrics import (
    CM_METRICS,
    METRIC_NAMES,
    classification_metrics,
    confusion_matrix,
    metric_tensor,
)
from hpo.training._optim import learning_rate

__all__ = [
    "CM_METRICS",
    "DIRECTIONS",
    "METRIC_NAMES",
    "MODEL_METRICS",
    "OPTIMIZERS",
    "SCHEDULERS",
    "SKLEARN_DATASETS",
    "ClassificationData",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "classification_metrics",
    "confusion_matrix",
    "evaluate",
    "learning_rate",
    "load_sklearn_dataset",
    "make_classification_data",
    "metric_tensor",
    "resolve_device",
    "seed_everything",
    "stratified_split",
    "train",
]
