"""Metrics of every task, computed on the device that holds the outputs.

Classification metrics come from a confusion matrix.

Everything derives from one ``n_classes x n_classes`` confusion matrix (rows: true class,
columns: predicted class, the sklearn convention) that is accumulated batch by batch with
``torch.bincount``. Keeping it on the device means evaluation needs a single device-to-host
transfer per epoch instead of one per batch.

Macro averages follow ``sklearn.metrics`` with ``zero_division=0``: they average over the
classes that occur in the targets or the predictions, and a class with an empty denominator
scores 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

__all__ = [
    "CM_METRICS",
    "METRIC_NAMES",
    "TASK_METRICS",
    "MetricAccumulator",
    "MetricFn",
    "binary_metric_tensor",
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


# --------------------------------------------------------------------------------------
# Accumulators: one per evaluation pass, updated per batch on the device, read once.

#: The validation metrics of each task (without the ``val_`` prefix), in row order.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": CM_METRICS,
    "binary": CM_METRICS,
    "multilabel": CM_METRICS,
    "regression": ("mse", "mae", "r2"),
}

#: A user metric: ``(outputs, targets) ->`` the batch's mean, a 0-d tensor.
MetricFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _float_dtype(device: torch.device) -> torch.dtype:
    # float64 where the device has it; MPS has none, and float32 is plenty for counts.
    return torch.float32 if device.type == "mps" else torch.float64


def binary_metric_tensor(cm: torch.Tensor) -> torch.Tensor:
    """Accuracy, F1, precision, recall of the positive class (sklearn's ``average="binary"``)."""
    cm = cm.to(_float_dtype(cm.device))
    tp, fp, fn = cm[1, 1], cm[0, 1], cm[1, 0]
    return torch.stack(
        [
            _safe_div(cm.diagonal().sum(), cm.sum()),
            _safe_div(2 * tp, 2 * tp + fp + fn),
            _safe_div(tp, tp + fp),
            _safe_div(tp, tp + fn),
        ]
    )


class MetricAccumulator:
    """Sums one evaluation pass needs, kept on the device; :meth:`values` reads none of them.

    ``task`` decides what is counted: a confusion matrix (classification: argmax of the
    logits; binary: logit > 0), per-label counts (multi-label: logit > 0 per label) or sums
    of errors (regression, per output). ``user`` metrics are batch means, averaged over the
    pass weighted by batch size.
    """

    def __init__(
        self,
        task: str,
        device: torch.device,
        *,
        n_classes: int | None = None,
        user: Mapping[str, MetricFn] | None = None,
    ) -> None:
        self.task, self.device, self.n_classes = task, device, n_classes
        self.user = dict(user or {})
        self.n = 0
        self.dtype = _float_dtype(device)
        self.sums: dict[str, torch.Tensor] = {}
        self.user_sums = torch.zeros(len(self.user), dtype=self.dtype, device=device)
        self.cm: torch.Tensor | None = None

    def _add(self, key: str, value: torch.Tensor) -> None:
        if key in self.sums:
            self.sums[key] += value
        else:
            self.sums[key] = value.clone()

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        outputs = outputs.detach()
        n = len(targets)
        self.n += n
        if self.task == "classification":
            if self.n_classes is None:
                self.n_classes = outputs.shape[-1]
            cm = confusion_matrix(outputs.argmax(dim=-1), targets, self.n_classes)
            self.cm = cm if self.cm is None else self.cm + cm
        elif self.task == "binary":
            preds = (outputs.reshape(-1) > 0).long()
            cm = confusion_matrix(preds, targets.reshape(-1), 2)
            self.cm = cm if self.cm is None else self.cm + cm
        elif self.task == "multilabel":
            preds, truth = outputs > 0, targets.reshape(outputs.shape) > 0.5
            self._add("tp", (preds & truth).sum(dim=0))
            self._add("fp", (preds & ~truth).sum(dim=0))
            self._add("fn", (~preds & truth).sum(dim=0))
            self._add("exact", (preds == truth).all(dim=1).sum())
        else:
            pred = outputs.to(self.dtype).reshape(n, -1)
            y = targets.to(self.dtype).reshape(n, -1)
            err = pred - y
            self._add("sse", (err * err).sum(dim=0))
            self._add("sae", err.abs().sum(dim=0))
            self._add("sy", y.sum(dim=0))
            self._add("syy", (y * y).sum(dim=0))
        for i, fn in enumerate(self.user.values()):
            self.user_sums[i] += fn(outputs, targets).detach().to(self.dtype) * n

    @property
    def names(self) -> tuple[str, ...]:
        """Names of :meth:`values`, without the split's prefix."""
        names = TASK_METRICS[self.task]
        if self.task == "multilabel" and "tp" in self.sums:
            names = (*names, *(f"f1_{i}" for i in range(len(self.sums["tp"]))))
        return (*names, *self.user)

    def values(self) -> torch.Tensor:
        """The metrics named by :attr:`names`, one device tensor (no synchronization)."""
        if self.n == 0:
            raise ValueError("evaluation saw no batch; the split is empty")
        if self.task == "classification" and self.cm is not None:
            task_values = metric_tensor(self.cm).to(self.dtype)
        elif self.task == "binary" and self.cm is not None:
            task_values = binary_metric_tensor(self.cm)
        elif self.task == "multilabel":
            tp, fp, fn = (self.sums[k].to(self.dtype) for k in ("tp", "fp", "fn"))
            f1 = _safe_div(2 * tp, 2 * tp + fp + fn)  # sklearn: macro over all labels
            task_values = torch.cat(
                [
                    torch.stack(
                        [
                            self.sums["exact"].to(self.dtype) / self.n,
                            f1.mean(),
                            _safe_div(tp, tp + fp).mean(),
                            _safe_div(tp, tp + fn).mean(),
                        ]
                    ),
                    f1,
                ]
            )
        else:
            sse, sae, sy, syy = (self.sums[k] for k in ("sse", "sae", "sy", "syy"))
            total = syy - sy * sy / self.n
            # sklearn's force_finite: a constant target scores 1 if predicted exactly, else 0
            r2 = torch.where(total > 0, 1 - sse / total.clamp(min=1e-300), (sse == 0).to(sse.dtype))
            mse, mae = sse.mean() / self.n, sae.mean() / self.n
            task_values = torch.stack([mse, mae, r2.mean()])
        return torch.cat([task_values, self.user_sums / self.n])
