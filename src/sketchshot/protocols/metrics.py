"""Classification metrics from class indices, free of the rest of evaluation (the supervised
method's validation and the classifier protocol share them)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts [C, C] of (true class, predicted class) pairs; ``truth`` and ``predicted`` are
    class indices of any (equal) shape."""
    pairs = np.asarray(truth, dtype=np.int64).ravel() * n_classes
    pairs += np.asarray(predicted, dtype=np.int64).ravel()
    return np.bincount(pairs, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def precision_recall_f1(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 [C] from a confusion [C, C] (rows: truth); a class
    never predicted has precision 0, one never true has recall 0 (as scikit-learn's
    ``zero_division=0``)."""
    hits = np.diag(confusion).astype(float)
    predicted, true = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, true, out=np.zeros_like(hits), where=true > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    return precision, recall, f1


def macro_f1(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> float:
    """The mean F1 over the classes that have images among ``truth`` (class indices)."""
    confusion = confusion_matrix(truth, predicted, n_classes)
    return float(precision_recall_f1(confusion)[2][confusion.sum(axis=1) > 0].mean())
