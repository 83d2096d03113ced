"""Paired, stratified bootstrap of two models' predictions on the same test images (numpy, seeded).

Each resample draws, within every true class, as many images as the class has (with replacement), and
scores both models on the same drawn images, so the interval of the difference reflects only the test
images' sampling, not two independent draws. Macro-F1 is averaged over the classes present in the test
labels (as `classifier.metrics.evaluate` does).
"""

from __future__ import annotations

import numpy as np


def _resample_indices(true_idx: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    columns = []
    for cls in np.unique(true_idx):
        members = np.flatnonzero(true_idx == cls)
        columns.append(members[rng.integers(0, len(members), size=(resamples, len(members)))])
    return np.concatenate(columns, axis=1) if columns else np.zeros((resamples, 0), dtype=np.int64)


def _scores(true_idx: np.ndarray, pred_idx: np.ndarray, n_classes: int):
    """(macro-F1, per-class precision, per-class recall) of each row of (resamples x n) index arrays."""
    rows = true_idx.shape[0]
    k = n_classes
    offsets = (np.arange(rows) * k * k)[:, None]
    counts = np.bincount((offsets + true_idx * k + pred_idx).ravel(), minlength=rows * k * k).reshape(rows, k, k)
    tp = np.diagonal(counts, axis1=1, axis2=2).astype(np.float64)
    support = counts.sum(axis=2).astype(np.float64)
    predicted = counts.sum(axis=1).astype(np.float64)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = support > 0
    macro = np.where(present, f1, 0).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    return macro, precision, recall


def paired_bootstrap(
    y_true, candidate_pred, production_pred, classes, *, resamples: int = 2000, level: float = 0.9, seed: int = 0
) -> dict:
    """Intervals (two-sided, at `level`) of candidate minus production: macro-F1 and each class's recall."""
    index = {name: i for i, name in enumerate(classes)}
    t = np.array([index[y] for y in y_true], dtype=np.int64)
    c = np.array([index[y] for y in candidate_pred], dtype=np.int64)
    p = np.array([index[y] for y in production_pred], dtype=np.int64)
    draws = _resample_indices(t, resamples, seed)
    point_c, _, recall_c0 = _scores(t[None, :], c[None, :], len(classes))
    point_p, _, recall_p0 = _scores(t[None, :], p[None, :], len(classes))
    macro_c, _, recall_c = _scores(t[draws], c[draws], len(classes))
    macro_p, _, recall_p = _scores(t[draws], p[draws], len(classes))
    low_q, high_q = (1 - level) / 2, 1 - (1 - level) / 2

    def interval(point, samples):
        return {
            "diff": float(point),
            "low": float(np.quantile(samples, low_q)),
            "high": float(np.quantile(samples, high_q)),
        }

    support = np.bincount(t, minlength=len(classes))
    return {
        "level": level,
        "resamples": resamples,
        "seed": seed,
        "n": int(len(t)),
        "macro_f1": interval(point_c[0] - point_p[0], macro_c - macro_p),
        "recall": {
            name: {
                **interval(recall_c0[0, i] - recall_p0[0, i], recall_c[:, i] - recall_p[:, i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
            if support[i] > 0
        },
    }


def metric_intervals(y_true, predicted, classes, *, resamples: int = 2000, level: float = 0.9, seed: int = 0) -> dict:
    """{class: {"precision": [low, high], "recall": [low, high]}} of one model (stratified bootstrap)."""
    index = {name: i for i, name in enumerate(classes)}
    t = np.array([index[y] for y in y_true], dtype=np.int64)
    p = np.array([index[y] for y in predicted], dtype=np.int64)
    if not len(t):
        return {}
    draws = _resample_indices(t, resamples, seed)
    _, precision, recall = _scores(t[draws], p[draws], len(classes))
    low_q, high_q = (1 - level) / 2, 1 - (1 - level) / 2
    support = np.bincount(t, minlength=len(classes))
    return {
        name: {
            "precision": [float(np.quantile(precision[:, i], low_q)), float(np.quantile(precision[:, i], high_q))],
            "recall": [float(np.quantile(recall[:, i], low_q)), float(np.quantile(recall[:, i], high_q))],
        }
        for i, name in enumerate(classes)
        if support[i] > 0
    }


def intervals_from_confusion(matrix, classes, *, resamples: int = 2000, level: float = 0.9, seed: int = 0) -> dict:
    """`metric_intervals` of a stored evaluation: the confusion matrix (rows: true class, columns: predicted,
    in `classes` order) holds every (true, predicted) pair of the test images, which is all the stratified
    bootstrap of precision and recall draws from."""
    y_true, predicted = [], []
    for i, row in enumerate(matrix or []):
        for j, count in enumerate(row):
            y_true += [classes[i]] * int(count)
            predicted += [classes[j]] * int(count)
    return metric_intervals(y_true, predicted, classes, resamples=resamples, level=level, seed=seed)
