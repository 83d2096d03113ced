"""Evaluation metrics (scikit-learn), JSON-serialisable, in fixed class order."""

from __future__ import annotations

import numpy as np

from .calibration import expected_calibration_error


def evaluate(y_true: list[str], probabilities: np.ndarray, classes: list[str]) -> dict:
    """Per-class precision/recall/F1/support, accuracy, macro and weighted
    averages, top-2 accuracy, confusion matrix (counts and row percentages, the
    convention of Modarres et al.) and expected calibration error.

    Classes absent from ``y_true`` get support 0 and zero recall rather than an
    error or a warning; labels unknown to ``classes`` are rejected.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, top_k_accuracy_score

    probabilities = np.asarray(probabilities, dtype=np.float64)
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(y_true) - set(index))
    if unknown:
        raise ValueError(f"labels not in classes: {unknown}")
    if probabilities.shape != (len(y_true), len(classes)):
        raise ValueError(f"probabilities shape {probabilities.shape} != ({len(y_true)}, {len(classes)})")
    labels = list(range(len(classes)))
    true_idx = np.array([index[name] for name in y_true], dtype=np.int64)
    pred_idx = probabilities.argmax(axis=1) if len(y_true) else np.zeros(0, dtype=np.int64)

    precision, recall, f1, support = precision_recall_fscore_support(true_idx, pred_idx, labels=labels, zero_division=0)
    counts = confusion_matrix(true_idx, pred_idx, labels=labels)
    row_totals = counts.sum(axis=1, keepdims=True)
    percentages = np.divide(100.0 * counts, row_totals, out=np.zeros(counts.shape), where=row_totals > 0)

    n = len(y_true)
    present = support > 0
    return {
        "n": n,
        "classes": list(classes),
        "accuracy": float((pred_idx == true_idx).mean()) if n else 0.0,
        "top2_accuracy": _top_k(true_idx, probabilities, labels, 2, top_k_accuracy_score),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        # Macro averages over the classes present in y_true: a class with no
        # test images says nothing about the model.
        "macro_avg": _average(precision, recall, f1, support, present, weighted=False),
        "weighted_avg": _average(precision, recall, f1, support, present, weighted=True),
        "confusion_matrix": counts.astype(int).tolist(),
        "confusion_matrix_pct": np.round(percentages, 2).tolist(),
        "ece": expected_calibration_error(probabilities, true_idx) if n else 0.0,
        "mean_confidence": float(probabilities.max(axis=1).mean()) if n else 0.0,
    }


def _average(precision, recall, f1, support, present, weighted: bool) -> dict:
    if not present.any():
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    weights = support[present] if weighted else np.ones(int(present.sum()))
    return {
        "precision": float(np.average(precision[present], weights=weights)),
        "recall": float(np.average(recall[present], weights=weights)),
        "f1": float(np.average(f1[present], weights=weights)),
        "support": int(support.sum()),
    }


def _top_k(true_idx, probabilities, labels, k, scorer) -> float:
    if len(true_idx) == 0:
        return 0.0
    if len(labels) <= k:
        return 1.0
    return float(scorer(true_idx, probabilities, k=k, labels=labels))


def format_report(evaluation: dict) -> str:
    """Readable table: per-class precision/recall/F1/support and the confusion matrix."""
    classes = evaluation["classes"]
    width = max(12, max((len(c) for c in classes), default=0) + 2)
    lines = [f"{'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}"]
    for name in classes:
        row = evaluation["per_class"][name]
        lines.append(
            f"{name:<{width}}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}{row['support']:>9d}"
        )
    for key, label in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        row = evaluation[key]
        lines.append(
            f"{label:<{width}}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}{row['support']:>9d}"
        )
    lines.append(
        f"accuracy {evaluation['accuracy']:.3f}   top-2 {evaluation['top2_accuracy']:.3f}   "
        f"ECE {evaluation['ece']:.3f}   n={evaluation['n']}"
    )
    lines.append("")
    lines.append("confusion matrix (rows = true, columns = predicted; counts and row %):")
    short = [c[:8] for c in classes]
    lines.append(" " * width + "".join(f"{s:>14}" for s in short))
    for i, name in enumerate(classes):
        cells = "".join(
            f"{evaluation['confusion_matrix'][i][j]:>6d} ({evaluation['confusion_matrix_pct'][i][j]:>5.1f})"
            for j in range(len(classes))
        )
        lines.append(f"{name:<{width}}{cells}")
    return "\n".join(lines)
