"""Temperature scaling (Guo et al. 2017) and expected calibration error.

numpy only: a one-parameter fit does not need autograd. Dividing logits by a
scalar T > 0 never changes the argmax, so accuracy is untouched while the
confidences become honest (the review queue orders by them).
"""

from __future__ import annotations

import math

import numpy as np

ECE_BINS = 15


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    probabilities = softmax(logits, temperature)
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0), iterations: int = 60
) -> float:
    """Temperature minimising validation NLL (golden-section search on log T;
    the NLL is unimodal in log T). Returns 1.0 when there is nothing to fit."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 1.0
    low, high = math.log(bounds[0]), math.log(bounds[1])
    golden = (math.sqrt(5) - 1) / 2
    a, b = high - golden * (high - low), low + golden * (high - low)
    nll_a = negative_log_likelihood(logits, labels, math.exp(a))
    nll_b = negative_log_likelihood(logits, labels, math.exp(b))
    for _ in range(iterations):
        if nll_a < nll_b:
            high, b, nll_b = b, a, nll_a
            a = high - golden * (high - low)
            nll_a = negative_log_likelihood(logits, labels, math.exp(a))
        else:
            low, a, nll_a = a, b, nll_b
            b = low + golden * (high - low)
            nll_b = negative_log_likelihood(logits, labels, math.exp(b))
    return float(math.exp((low + high) / 2))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: sample-weighted mean |accuracy - confidence| over confidence bins."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    bin_index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = bin_index == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def calibration_report(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Fit T and report ECE and NLL before and after (JSON-serialisable)."""
    temperature = fit_temperature(logits, labels)
    return {
        "temperature": temperature,
        "ece_before": expected_calibration_error(softmax(logits), labels),
        "ece_after": expected_calibration_error(softmax(logits, temperature), labels),
        "nll_before": negative_log_likelihood(logits, labels, 1.0) if len(labels) else None,
        "nll_after": negative_log_likelihood(logits, labels, temperature) if len(labels) else None,
        "n": int(len(labels)),
    }
