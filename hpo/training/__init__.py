"""The training loop every built-in objective uses, and the pieces it is made of.

``train(trial, ctx, model, data, config)`` trains, validates, reports to the trial and prunes
each epoch, early-stops, checkpoints and resumes; see :mod:`hpo.training._loop`. ``data`` is
in-memory tensors or the user's datasets and data loaders (:class:`LoaderData`).
"""

from hpo.training._batches import LoaderData, split_batch, to_device
from hpo.training._config import (
    DIRECTIONS,
    LOSSES,
    OPTIMIZERS,
    SCHEDULERS,
    TASKS,
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
    TASK_METRICS,
    MetricAccumulator,
    MetricFn,
    classification_metrics,
    confusion_matrix,
    metric_tensor,
)
from hpo.training._optim import learning_rate, param_groups
from hpo.training._step import Step, default_step
from hpo.training._tasks import DEFAULT_LOSS, LossFn, make_loss, metric_names

__all__ = [
    "CM_METRICS",
    "DEFAULT_LOSS",
    "DIRECTIONS",
    "LOSSES",
    "METRIC_NAMES",
    "MODEL_METRICS",
    "OPTIMIZERS",
    "SCHEDULERS",
    "SKLEARN_DATASETS",
    "TASKS",
    "TASK_METRICS",
    "ClassificationData",
    "LoaderData",
    "LossFn",
    "MetricAccumulator",
    "MetricFn",
    "NonFiniteLossError",
    "Step",
    "TrainConfig",
    "TrainResult",
    "classification_metrics",
    "confusion_matrix",
    "default_step",
    "evaluate",
    "learning_rate",
    "load_sklearn_dataset",
    "make_classification_data",
    "make_loss",
    "metric_names",
    "metric_tensor",
    "param_groups",
    "resolve_device",
    "seed_everything",
    "split_batch",
    "stratified_split",
    "to_device",
    "train",
]
