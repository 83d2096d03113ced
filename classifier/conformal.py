"""Prediction sets with a coverage guarantee: split conformal prediction (issue 24, item 2).

Fitted at training time on held-out curated images (their calibrated probabilities and true labels; the
default recipe scores every training image out of fold, by a head fitted without its series);
applied to every prediction at the lab's coverage setting. Score: LAC, the "hinge" nonconformity
1 - p(true class) (Sadinle, Lei & Wasserman, JASA 2019; crepes' ``hinge``), which gives the smallest
sets on average. A class c enters an image's set when its conformal p-value

    p_c = (#{calibration scores >= 1 - p(c)} + 1) / (n + 1)

exceeds 1 - coverage: the finite-sample (n + 1) correction of split conformal prediction (Vovk, Gammerman
& Shafer 2005; Angelopoulos & Bates 2021, eq. 1), which guarantees P(true class in set) >= coverage for
exchangeable images. The p-values come from crepes' ConformalClassifier (non-smoothed) when it is
installed, else from the same formula here (tests check that both agree).

Class-conditional (Mondrian, Vovk 2012): a class with at least MIN_PER_CLASS calibration images is
compared with its own images' scores, so the guarantee holds for each such class, not only on
average (a rare class is otherwise under-covered). A class with fewer uses the pooled scores of all
calibration images: with n images the attainable coverage is at most n / (n + 1), and below about 20
the set jumps between "one class" and "every class" with each image (at 90 % a class needs n >= 9 to
ever leave a class out, and at n = 20 the coverage a calibration achieves has a standard deviation of
about 6 %, Beta(19, 2)).

Everything stored is JSON (the artifact's metadata): the sorted scores, so the coverage can be changed
without retraining. NumPy only: the portal's worker computes sets where it saves predictions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

MIN_PER_CLASS = 20
METHOD = "split conformal, LAC (1 - p(true class)) scores"
DECIMALS = 6  # scores are rounded for the metadata; 1e-6 is far below any probability shown


def fit_conformal(probabilities, labels, classes: Sequence[str], coverage: float = 0.9) -> dict:
    """The calibration of prediction sets from held-out images.

    ``probabilities``: (n, C) calibrated probabilities; ``labels``: n class indices; ``coverage``: the
    level the report's quantiles are given at (the sets use the lab's setting). Returns a JSON-able dict."""
    probabilities, labels = np.asarray(probabilities, float), np.asarray(labels, int)
    scores = np.round(1.0 - probabilities[np.arange(len(labels)), labels], DECIMALS)
    per_class = {name: np.sort(scores[labels == index]) for index, name in enumerate(classes)}
    own = [name for name, values in per_class.items() if len(values) >= MIN_PER_CLASS]
    calibration = {
        "method": METHOD,
        "library": _library(),
        "n": int(len(scores)),
        "min_per_class": MIN_PER_CLASS,
        "pooled_scores": np.sort(scores).tolist(),
        "class_scores": {name: per_class[name].tolist() for name in own},
        "class_counts": {name: int(len(values)) for name, values in per_class.items()},
        "mode": _mode(len(own), len(classes)),
        "coverage": coverage,
    }
    calibration["thresholds"] = {name: _threshold(_reference(calibration, name), coverage) for name in classes}
    return calibration


def _mode(own: int, total: int) -> str:
    if own == total:
        return "class-conditional"
    return "pooled" if own == 0 else "class-conditional where enough, pooled otherwise"


def _library() -> str | None:
    try:
        from importlib.metadata import version

        return f"crepes {version('crepes')}"
    except Exception:  # not installed: the formula below is used
        return None


def _reference(calibration: dict, name: str) -> np.ndarray:
    """The calibration scores class ``name`` is compared with: its own, else the pooled ones."""
    own = calibration["class_scores"].get(name)
    return np.asarray(own if own is not None else calibration["pooled_scores"], float)


def _threshold(reference: np.ndarray, coverage: float) -> float | None:
    """The largest score admitted at ``coverage``: the ceil((n + 1) * coverage)-th smallest calibration
    score; None (every class admitted) when there are too few scores to reach it."""
    rank = math.ceil((len(reference) + 1) * coverage - 1e-9)
    return None if rank > len(reference) else float(np.sort(reference)[rank - 1])


def p_values(probabilities, calibration: dict, classes: Sequence[str]) -> np.ndarray:
    """(n, C) conformal p-values of each class for each image."""
    probabilities = np.atleast_2d(np.asarray(probabilities, float))
    scores = np.round(1.0 - probabilities, DECIMALS)
    out = np.empty_like(scores)
    for index, name in enumerate(classes):
        out[:, index] = _class_p_values(scores[:, index], _reference(calibration, name))
    return out


def _class_p_values(test_scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    try:
        from crepes import ConformalClassifier
    except ImportError:
        at_least = len(reference) - np.searchsorted(np.sort(reference), test_scores, side="left")
        return (at_least + 1) / (len(reference) + 1)
    conformal = ConformalClassifier().fit(reference)
    return conformal.predict_p(test_scores[:, None], smoothing=False)[:, 0]


def prediction_sets(probabilities, calibration: dict, classes: Sequence[str], coverage: float) -> list[list[str]]:
    """Each image's set at ``coverage``: the classes whose p-value exceeds 1 - coverage, most probable first.

    Never empty: when no class passes (the calibration images were all answered more surely than this
    one, as on well-separated data), the most probable class is the set. A larger set only raises the
    coverage, so the guarantee stands; an empty set told a curator nothing the out-of-scope score does not,
    and read as a contradiction beside a 99 % answer."""
    probabilities = np.atleast_2d(np.asarray(probabilities, float))
    admitted = p_values(probabilities, calibration, classes) > 1.0 - coverage + 1e-12
    admitted[np.arange(len(admitted)), probabilities.argmax(1)] |= ~admitted.any(1)
    return [
        [classes[i] for i in np.argsort(-row, kind="stable") if keep[i]] for row, keep in zip(probabilities, admitted)
    ]


def prediction_set(probabilities, calibration: dict, classes: Sequence[str], coverage: float) -> list[str]:
    """One image's set (see prediction_sets)."""
    return prediction_sets([probabilities], calibration, classes, coverage)[0]


def coverage_report(sets: list[list[str]], true: Sequence[str]) -> dict:
    """Empirical coverage and set sizes of sets against true class names (benchmarks, tests)."""
    sizes = np.array([len(s) for s in sets], float)
    covered = np.array([label in s for s, label in zip(sets, true)], float)
    return {
        "n": len(sets),
        "coverage": float(covered.mean()) if len(sets) else None,
        "mean_size": float(sizes.mean()) if len(sets) else None,
        "singletons": float((sizes == 1).mean()) if len(sets) else None,
        "empty": float((sizes == 0).mean()) if len(sets) else None,
    }
