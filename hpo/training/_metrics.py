"""Classification metrics computed from a confusion matrix, on the device that holds it.

Everything derives from one ``n_classes x n_classes`` confusion matrix (rows: true class,
columns: predicted class, the sklearn convention) that is accumulated batch by batch with
``torch.bincount``. Keeping it on the device means evaluation needs a single device-to-host
transfer per epoch instead of one per batch.

Macro averages follow ``sklearn.metrics`` with ``zero_division=0``: they average over the
classes that occur in the targets or the predictions, and a class with an empty denominator
scores 0.
"""

from __future__ import annotations

import torch

__all__ = [
    "CM_METRICS",
    "METRIC_NAMES",
    "classification_metrics",
    "confusion_matrix",
    "metric_tensor",
]

#: Per-epoch model-quality metrics an objective can optimize, prune and early-stop on.
METRIC_NAMES: tuple[str, ...] = (
    "train_loss",
    "val_loss",
    "val_accuracy",
    "val_f1",
    "val_precision",
    "val_recall",
)


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Count (true, predicted) pairs into an int64 ``n_classes x n_classes`` matrix.

    Runs on the tensors' device without synchronizing; labels outside ``[0, n_classes)``
    would corrupt neighbouring cells, so callers validate labels once, up front.
    """
    flat = targets.reshape(-1).long() * n_classes + preds.reshape(-1).long()
    return torch.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))


#: Order of the values in :func:`metric_tensor`.
CM_METRICS: tuple[str, ...] = ("accuracy", "f1", "precision", "recall")


def metric_tensor(cm: torch.Tensor) -> torch.Tensor:
    """Accuracy, macro F1, macro precision, macro recall of ``cm`` as one device tensor.

    Nothing here synchronizes with the device, so the training loop can fetch these values
    together with the losses in a single transfer per epoch.
    """
    # float64 where the device has it; MPS has no float64 and float32 is plenty for counts.
    cm = cm.to(torch.float32 if cm.device.type == "mps" else torch.float64)
    tp = cm.diagonal()
    true_count = cm.sum(dim=1)
    pred_count = cm.sum(dim=0)
    # sklearn averages over the labels present in y_true or y_pred, not over all classes.
    # Masking by multiplication, not boolean indexing, which would synchronize on CUDA.
    present = ((true_count + pred_count) > 0).to(cm.dtype)
    n_present = present.sum().clamp(min=1)
    precision = (_safe_div(tp, pred_count) * present).sum() / n_present
    recall = (_safe_div(tp, true_count) * present).sum() / n_present
    f1 = (_safe_div(2 * tp, true_count + pred_count) * present).sum() / n_present
    accuracy = _safe_div(tp.sum(), cm.sum())
    return torch.stack([accuracy, f1, precision, recall])


def classification_metrics(cm: torch.Tensor) -> dict[str, float]:
    """Accuracy and macro F1, precision and recall of a confusion matrix, as floats."""
    return dict(zip(CM_METRICS, metric_tensor(cm).tolist(), strict=True))
