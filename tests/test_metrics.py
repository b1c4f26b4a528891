"""hpo.metrics agrees with sklearn.metrics (sklearn is used by the tests only)."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.metrics as skm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hpo.training import classification_metrics, confusion_matrix, metric_tensor


def _sklearn(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "f1": skm.f1_score(y_true, y_pred, average="macro", zero_division=0),
        "precision": skm.precision_score(y_true, y_pred, average="macro", zero_division=0),
        "recall": skm.recall_score(y_true, y_pred, average="macro", zero_division=0),
    }


def test_known_case_matches_sklearn() -> None:
    # Class 2 is never predicted (precision 0/0), class 3 is predicted but never true
    # (recall 0/0) and class 4 occurs nowhere: sklearn then averages over classes 0..3.
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 1, 0])
    y_pred = np.array([0, 1, 0, 1, 1, 0, 3, 1, 1, 0])
    cm = confusion_matrix(torch.from_numpy(y_pred), torch.from_numpy(y_true), n_classes=5)

    np.testing.assert_array_equal(
        cm.numpy(), skm.confusion_matrix(y_true, y_pred, labels=list(range(5)))
    )
    ours = classification_metrics(cm)
    assert ours == pytest.approx(_sklearn(y_true, y_pred), abs=1e-12)
    assert ours["accuracy"] == pytest.approx(0.6)


def test_perfect_and_empty() -> None:
    y = torch.tensor([0, 1, 2, 2, 1])
    assert classification_metrics(confusion_matrix(y, y, 3)) == pytest.approx(
        {"accuracy": 1.0, "f1": 1.0, "precision": 1.0, "recall": 1.0}
    )
    empty = torch.zeros((3, 3), dtype=torch.int64)
    assert metric_tensor(empty).tolist() == [0.0, 0.0, 0.0, 0.0]


@settings(max_examples=50, deadline=None)
@given(
    st.integers(min_value=2, max_value=6).flatmap(
        lambda k: st.lists(
            st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1, max_size=60
        ).map(lambda pairs: (k, pairs))
    )
)
def test_random_labels_match_sklearn(case: tuple[int, list[tuple[int, int]]]) -> None:
    n_classes, pairs = case
    y_true = np.array([t for t, _ in pairs])
    y_pred = np.array([p for _, p in pairs])
    cm = confusion_matrix(torch.from_numpy(y_pred), torch.from_numpy(y_true), n_classes)
    assert int(cm.sum()) == len(pairs)
    assert classification_metrics(cm) == pytest.approx(_sklearn(y_true, y_pred), abs=1e-12)
