"""Out-of-scope scores: deep nearest neighbours on the embeddings (issue 24, item 3).

Sun, Ming, Zhu & Li, "Out-of-Distribution Detection with Deep Nearest Neighbors" (ICML 2022): normalise
each image's features to unit length; the score of an image is the Euclidean distance to its k-th
nearest training image; a large distance means nothing the model learnt from looks like it. No
distribution is assumed (Mahalanobis assumes one Gaussian per class, which a few hundred images of 2,048
dimensions cannot estimate), and it needs no outlier images to fit.

The features are the body's raw ones (pooled features and texture statistics, averaged over the views),
as in the paper, not the head's standardised input: standardising by the training images' spread
inflates dimensions in which they barely vary, and blank or noise frames then looked closer to the
training images than real micrographs of unseen sources did (AUROC 0.77 against 0.92 raw, seed 0 of
bench/bench_trust.py). k = 1: the paper uses k = 50 for 50,000 training images and scales k with the
share of the training set kept (k = 1 at 1 %); a lab's few hundred images are in that regime (k = 1, 5,
10 gave AUROC 0.92, 0.89, 0.88 on seed 0).

Fitted at training time: the bank is the training images' embeddings (at most MAX_BANK, float16, stored
as a tensor of the artifact); the threshold is set on held-out scores: each training image against a bank
of the other folds (whole series held out), so their distances are those of new in-scope images from
unseen sources (the full bank has more images, so a new image's distance is if anything smaller). The threshold is the
ceil((n + 1)(1 - rate))-th smallest held-out score: as in split conformal prediction, a new in-scope
image then exceeds it with probability at most ``rate`` (ABSTAIN_RATE, 5 %) when it is exchangeable with
the held-out ones. With fewer than 1 / rate - 1 held-out images that rank does not exist and the largest
held-out score is used.
"""

from __future__ import annotations

import math

import numpy as np

METHOD = "deep k-nearest neighbours (Sun et al., ICML 2022) on unit-length features"
K = 1
ABSTAIN_RATE = 0.05
MAX_BANK = 1024  # images kept; 1024 x 2,048 dimensions in float16 is 4 MB of the artifact
BANK_KEY = "ood.bank"  # the artifact tensor (not part of the model's state dict)


def normalise(embeddings) -> np.ndarray:
    embeddings = np.asarray(embeddings, np.float32)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def knn_scores(bank: np.ndarray, embeddings, k: int) -> np.ndarray:
    """Distance of each (unit-length) embedding to its k-th nearest bank row (bank rows unit-length)."""
    queries = normalise(embeddings)
    similarity = queries @ np.asarray(bank, np.float32).T
    k = max(1, min(k, similarity.shape[1]))
    kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1]  # the k-th largest cosine similarity
    return np.sqrt(np.clip(2.0 - 2.0 * kth, 0.0, None))


def fit_knn(train_embeddings, held_out_scores, *, k: int = K, rate: float = ABSTAIN_RATE, seed: int = 0):
    """(JSON-able report with the threshold, float16 bank (m, D)) from the training embeddings and the
    held-out images' scores (held_out_knn_scores: each against a bank without its own series)."""
    train = normalise(train_embeddings)
    if len(train) > MAX_BANK:  # a uniform sample keeps the artifact small; the classes keep their shares
        train = train[np.sort(np.random.default_rng(seed).choice(len(train), MAX_BANK, replace=False))]
    bank = train.astype(np.float16)
    held_out = np.asarray(held_out_scores, dtype=np.float64)
    report = {
        "method": METHOD,
        "k": int(min(k, len(bank))),
        "bank_size": int(len(bank)),
        "bank_dtype": "float16",
        "abstain_rate": rate,
        "n_held_out": int(len(held_out)),
        "threshold": _threshold(held_out, rate),
        "held_out_scores": {
            "median": float(np.median(held_out)) if len(held_out) else None,
            "max": float(held_out.max()) if len(held_out) else None,
        },
    }
    return report, bank


def held_out_knn_scores(embeddings, folds, k: int = K) -> np.ndarray:
    """Each image's score against a bank of the other folds' images (``folds``: (train, held) index
    pairs covering every image once), in the images' order."""
    unit = normalise(embeddings)
    scores = np.zeros(len(unit))
    for train_idx, held_idx in folds:
        scores[held_idx] = knn_scores(unit[train_idx].astype(np.float16), unit[held_idx], k)
    return scores


def _threshold(scores: np.ndarray, rate: float) -> float | None:
    if not len(scores):
        return None  # nothing held out: no threshold, nothing abstains
    rank = math.ceil((len(scores) + 1) * (1.0 - rate) - 1e-9)
    return float(np.sort(scores)[min(rank, len(scores)) - 1])


class OutOfScopeScorer:
    """The fitted detectors as the engine uses them: the kNN distance (the stored score) and, where the
    artifact has one, the outlier classifier; an image is out of scope when either passes its threshold."""

    def __init__(self, bank, report: dict, outlier_weight=None) -> None:
        self.bank = np.asarray(bank, np.float32)
        self.k = int(report["k"])
        self.threshold = report.get("threshold")
        classifier = report.get("outlier_classifier") or {}
        self.outlier_weight = None if outlier_weight is None or not classifier else np.asarray(outlier_weight)
        self.outlier_threshold = classifier.get("threshold")

    def scores(self, embeddings) -> np.ndarray:
        return knn_scores(self.bank, embeddings, self.k)

    def outlier_scores(self, embeddings) -> np.ndarray | None:
        return None if self.outlier_weight is None else linear_scores(self.outlier_weight, embeddings)

    def out_of_scope(self, scores: np.ndarray, outlier_scores=None) -> np.ndarray:
        flags = np.zeros(len(scores), bool) if self.threshold is None else np.asarray(scores) > self.threshold
        if outlier_scores is not None and self.outlier_threshold is not None:
            flags |= np.asarray(outlier_scores) > self.outlier_threshold
        return flags


# Outlier exposure: a linear classifier, the lab's curated micrographs against made outliers
# (classifier.outliers) and the images curators marked "not SEM / not classifiable". Measured against
# images of kinds it never saw (scikit-image's samples, bench/bench_trust.py): it catches greyscale photos
# and graphics the kNN distance misses, so an image is out of scope when either detector says so.
OUTLIER_METHOD = "linear classifier against made and curated outliers (outlier exposure, Hendrycks et al., ICLR 2019)"
OUTLIER_C = 0.1  # L2 strength on standardised unit-length features (C = 0.01-0.1 measured alike; 0.001 worse)
OUTLIERS_KEY = "ood.outliers"  # the outliers' raw features (float16): a head refit fits the classifier again
OUTLIER_WEIGHT_KEY = "ood.outlier_weight"  # (D + 1,) float32: weights on unit-length features, then the bias


def fit_outlier_classifier(train_embeddings, outlier_embeddings, folds, *, rate: float = ABSTAIN_RATE, seed: int = 0):
    """(JSON-able report with the threshold, (D + 1,) float32 weights and bias), or (None, None) without outliers.

    The threshold is set like the kNN one: each training image scored by a classifier fitted without its
    fold (``folds``: (train, held) index pairs over the training images; every outlier in every fit)."""
    outliers = normalise(outlier_embeddings)
    if not len(outliers):
        return None, None
    train = normalise(train_embeddings)
    held_out = np.zeros(len(train))
    for train_idx, held_idx in folds:
        held_out[held_idx] = linear_scores(_fit_linear(train[train_idx], outliers, seed), train[held_idx])
    weight = _fit_linear(train, outliers, seed)
    report = {
        "method": OUTLIER_METHOD,
        "c": OUTLIER_C,
        "n_outliers": int(len(outliers)),
        "n_held_out": int(len(held_out)),
        "abstain_rate": rate,
        "threshold": _threshold(held_out, rate),
    }
    return report, weight


def _fit_linear(inside: np.ndarray, outside: np.ndarray, seed: int) -> np.ndarray:
    """Logistic regression (balanced classes) on standardised features, folded into one weight vector
    and bias on the unit-length features, so scoring needs no scaler."""
    from sklearn.linear_model import LogisticRegression

    from .blas import one_blas_thread

    features = np.r_[inside, outside].astype(np.float64)
    target = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    mean, scale = features.mean(0), features.std(0) + 1e-6
    model = LogisticRegression(C=OUTLIER_C, class_weight="balanced", max_iter=3000, random_state=seed)
    with one_blas_thread():
        model.fit((features - mean) / scale, target)
    coef = model.coef_[0] / scale
    return np.r_[coef, model.intercept_[0] - coef @ mean].astype(np.float32)


def linear_scores(weight: np.ndarray, embeddings) -> np.ndarray:
    """The classifier's log-odds that each image is an outlier (embeddings: raw or unit-length)."""
    weight = np.asarray(weight, np.float32)
    return normalise(embeddings) @ weight[:-1] + weight[-1]
