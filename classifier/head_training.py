"""Training of the small-data model (feature_head): features once, a logistic-regression head, calibration.

Steps: ImageNet body from its pinned package -> features of every training image in its dihedral views
(each view a training sample) -> standardise -> scikit-learn logistic regression (balanced class
weights) fitted on the training part -> temperature fitted on the validation part -> the head refitted
on all images with that temperature kept -> evaluation of the finished module on the test images
through the engine's own path -> artifact. A 2-core CPU does a few hundred images in about a minute.

When the features of all views would not fit the time budget, fewer views are used for training
(measured on the first batch); inference always averages all views the artifact names.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter

import numpy as np

from . import transforms
from .backbones import get_backbone, load_pretrained_body
from .feature_head import VIEWS, build_classifier, dihedral_views
from .training_common import TrainResult, metadata_for, stratified_split

log = logging.getLogger(__name__)

# Share of the budget that feature extraction may take; the rest is the fit, evaluation and saving.
FEATURE_BUDGET_SHARE = 0.8
MAX_ITER = 3000
BATCH = 32
# The coverage at which the metadata summarises the prediction sets' thresholds; the portal applies the
# lab's own setting (SEM_PREDICTION_SET_COVERAGE) to the stored scores.
DEFAULT_COVERAGE = 0.9


def train_feature_head(
    items, config, out_path, *, device, test_items, classes, groups, fingerprint, emit, stop, started
):
    """Train, evaluate and save; returns classifier.train.TrainResult."""

    backbone = get_backbone(config.arch)
    size = config.sizes[-1]
    body, provenance = load_pretrained_body(backbone, config.weights_path)
    model = build_classifier(backbone, len(classes), body, tta_views=VIEWS).to(device).eval()
    labels = np.array([classes.index(label) for _, label in items])
    if groups:
        train_idx, valid_idx = group_split(labels, groups, config.valid_pct, config.seed)
    else:
        train_idx, valid_idx = stratified_split([label for _, label in items], config.valid_pct, config.seed)
    weights = series_weights(labels, groups) if groups else None

    def cancelled():
        if stop():
            from .fit_callbacks import TrainingCancelled

            raise TrainingCancelled("cancelled while computing features")

    emit({"event": "stage_start", "stage": 0, "stages": 1, "size": size, "epochs": 1, "fraction": 0.0})
    extractor = _Extractor(model, backbone, size, device, config.contrast, emit, cancelled, len(items))
    views = extractor.views_for_budget(items, len(test_items or []), config.budget_s, time.monotonic() - started)
    features = extractor.features([path for path, _ in items], views)  # (N, views, D)
    fit_started = time.monotonic()
    head = fit_head(features, labels, weights, train_idx, valid_idx, len(classes), config.head_c, config.seed)
    install_head(model, head)
    record = {
        "stage": 0,
        "size": size,
        "kind": "frozen features + logistic regression",
        "views": views,
        "epochs": [],
        "best_epoch": None,
        "best_valid_loss": head["valid_nll"],
        "duration_s": time.monotonic() - started,
        "fit_s": time.monotonic() - fit_started,
        "input_shape": [BATCH, 3, size, size],
    }
    emit({"event": "stage_end", "stage": 0, "stages": 1, "size": size, "fraction": 0.95, "best_epoch": None})
    emit({"event": "evaluating", "stages": 1, "fraction": 0.96})
    evaluation, probabilities = _evaluate(
        model, head, items, valid_idx, test_items, classes, size, device, config, backbone
    )
    duration = time.monotonic() - started
    metadata = metadata_for(
        config,
        classes,
        [record],
        head["calibration"],
        evaluation,
        fingerprint,
        provenance,
        device,
        duration,
        len(train_idx),
        len(valid_idx),
        backbone=backbone,
    )
    metadata["recipe"] = "frozen_head"
    metadata["tta_views"] = VIEWS
    trust, bank = trust_metadata(head, features, labels, train_idx, classes, config.seed)
    metadata.update(trust)
    metadata["budget"] = {"budget_s": config.budget_s, "used_s": duration} if config.budget_s else None
    from .artifact import save_artifact

    sha256 = save_artifact(out_path, {**model.state_dict(), **bank}, metadata)
    emit({"event": "done", "stages": 1, "fraction": 1.0, "artifact_path": os.fspath(out_path), "sha256": sha256})
    return TrainResult(
        os.fspath(out_path),
        metadata,
        evaluation,
        [record],
        duration,
        str(device),
        sha256,
        test_probabilities=probabilities,
    )


def trust_metadata(head: dict, features, labels, train_idx, classes, seed: int) -> tuple[dict, dict]:
    """(metadata entries, extra artifact tensors): the prediction sets' calibration on the held-out
    probabilities, and the out-of-scope detector on the raw features averaged over the views (bank: the
    training part; threshold: the held-out part)."""
    import torch

    from .conformal import fit_conformal
    from .ood import BANK_KEY, fit_knn

    held_out = head["held_out"]
    conformal = fit_conformal(held_out["probabilities"], labels[held_out["index"]], classes, DEFAULT_COVERAGE)
    raw = features.mean(1)  # fewer views than inference averages when the time budget cut them: close enough
    report, bank = fit_knn(raw[np.asarray(train_idx)], raw[held_out["index"]], seed=seed)
    return {"conformal": conformal, "out_of_scope": report}, {BANK_KEY: torch.from_numpy(bank)}


class _Extractor:
    """Batched features of files in their dihedral views, with progress and cancellation."""

    def __init__(self, model, backbone, size, device, contrast, emit, cancelled, total):
        self.model, self.backbone, self.size, self.device = model, backbone, size, device
        self.contrast, self.emit, self.cancelled, self.total = contrast, emit, cancelled, max(1, total)
        self.done = 0

    def views_for_budget(self, items, n_test: int, budget_s, spent_s) -> int:
        """All 8 views when they fit the budget's feature share, else the most that do (at least 1).
        The evaluation costs 8 views of every validation and test image whatever the choice."""
        if not budget_s:
            return VIEWS
        sample = [path for path, _ in items[:BATCH]]
        started = time.monotonic()
        self._batch(sample, 1)
        per_view = (time.monotonic() - started) / max(1, len(sample))
        evaluation = per_view * VIEWS * (n_test or len(items) * 0.2)
        affordable = (budget_s * FEATURE_BUDGET_SHARE - spent_s - evaluation) / (per_view * len(items))
        views = max(1, min(VIEWS, 2 ** int(math.log2(max(1.0, affordable)))))
        if views < VIEWS:
            log.info("the time budget affords %d dihedral views per training image, not %d", views, VIEWS)
        return views

    def features(self, paths, views: int) -> np.ndarray:
        chunks = []
        for start in range(0, len(paths), BATCH):
            self.cancelled()
            chunks.append(self._batch(paths[start : start + BATCH], views))
            self.done += len(paths[start : start + BATCH])
            fraction = 0.9 * min(1.0, self.done / self.total)
            self.emit({"event": "batch", "stage": 0, "stages": 1, "size": self.size, "fraction": fraction})
        return np.concatenate(chunks)

    def _batch(self, paths, views: int) -> np.ndarray:
        import torch

        arrays = [transforms.eval_array(path, self.size, self.contrast) for path in paths]
        batch = torch.from_numpy(np.stack(arrays)).to(self.device)
        inputs = transforms.normalise_batch(batch, self.backbone.mean, self.backbone.std)
        with torch.inference_mode():
            per_view = [self.model.features(view) for view in dihedral_views(inputs, views)]
        return torch.stack(per_view, 1).float().cpu().numpy()


def fit_head(features, labels, weights, train_idx, valid_idx, n_classes: int, c: float, seed: int) -> dict:
    """Standardisation + logistic regression; temperature on the validation part; then refitted on all.

    ``features``: (N, views, D), averaged over the views as inference does (averaged views scored better
    than each view as its own sample under grouped cross-validation, bench/RESULTS.md). ``weights``:
    per-image sample weights (series_weights), or None for class-balanced weights. Returns the head's
    parameters, the temperature and its calibration report."""
    from .calibration import calibration_report, softmax

    features = features.mean(1)
    train_idx, valid_idx = np.asarray(train_idx), np.asarray(valid_idx)
    first = _fit(features[train_idx], labels[train_idx], _subset(weights, train_idx), n_classes, c, seed)
    # A class seen only in validation has no logit to calibrate: those images say nothing about T.
    known = valid_idx[np.isin(labels[valid_idx], labels[train_idx])]
    calibration = calibration_report(_logits(first, features[known]), labels[known])
    everything = np.concatenate([train_idx, valid_idx])
    final = _fit(features[everything], labels[everything], _subset(weights, everything), n_classes, c, seed)
    nll = calibration["nll_after"]
    # The held-out probabilities also calibrate the prediction sets (classifier.conformal, trust_metadata).
    held_out = {"probabilities": softmax(_logits(first, features[known]), calibration["temperature"]), "index": known}
    return {
        **final,
        "temperature": calibration["temperature"],
        "calibration": calibration,
        "valid_nll": nll,
        "held_out": held_out,
    }


def _subset(weights, index):
    return None if weights is None else weights[index]


def series_weights(labels: np.ndarray, groups: list[str]) -> np.ndarray:
    """Each class weighs the same, and within a class each series (sample) weighs the same, however
    many images it has: 40 tiles of one bead series count as one source, not 40 (grouped
    cross-validation: +0.01 accuracy and macro recall over class-balanced weights, bench/RESULTS.md)."""
    pairs = list(zip(labels.tolist(), groups))
    per_series = Counter(pairs)
    series_per_class = Counter(label for label, _ in per_series)
    weights = np.array([1.0 / (per_series[pair] * series_per_class[pair[0]]) for pair in pairs])
    return weights * len(weights) / weights.sum()


def group_split(labels: np.ndarray, groups: list[str], valid_pct: float, seed: int):
    """(train, valid) indices with whole series on one side, about ``valid_pct`` of the images in
    validation, stratified by class (scikit-learn's StratifiedGroupKFold, its first fold); every class
    keeps a series for training. Falls back to a stratified split when there are too few series."""
    from sklearn.model_selection import StratifiedGroupKFold

    folds = max(2, round(1 / valid_pct))
    if len(set(groups)) < folds:
        return stratified_split(labels.tolist(), valid_pct, seed)
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    train_idx, valid_idx = next(splitter.split(np.zeros(len(labels)), labels, groups))
    lost = set(labels[valid_idx].tolist()) - set(labels[train_idx].tolist())
    if lost:  # a class whose only series went to validation: it trains instead
        moving = np.isin(labels[valid_idx], list(lost))
        train_idx = np.concatenate([train_idx, valid_idx[moving]])
        valid_idx = valid_idx[~moving]
    if len(valid_idx) == 0:
        return stratified_split(labels.tolist(), valid_pct, seed)
    return sorted(train_idx.tolist()), sorted(valid_idx.tolist())


def _fit(features, labels, weights, n_classes: int, c: float, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    features = features.astype(np.float64)
    mean = features.mean(0)
    scale = features.std(0)
    scale[scale < 1e-6] = 1.0  # a constant feature: leave it unscaled rather than divide by zero
    balanced = "balanced" if weights is None else None  # series weights already balance the classes
    regression = LogisticRegression(C=c, class_weight=balanced, max_iter=MAX_ITER, random_state=seed)
    regression.fit((features - mean) / scale, labels, sample_weight=weights)
    weight = np.zeros((n_classes, features.shape[1]))
    bias = np.full(n_classes, -1e4)  # a class with no training images is never predicted
    present = regression.classes_
    if len(present) == 2:  # scikit-learn's binary model has one row: logits -z/2, +z/2 give its softmax
        weight[present] = np.stack([-regression.coef_[0] / 2, regression.coef_[0] / 2])
        bias[present] = [-regression.intercept_[0] / 2, regression.intercept_[0] / 2]
    else:
        weight[present] = regression.coef_
        bias[present] = regression.intercept_
    return {"mean": mean, "scale": scale, "weight": weight, "bias": bias}


def _logits(head: dict, features: np.ndarray) -> np.ndarray:
    return ((features - head["mean"]) / head["scale"]) @ head["weight"].T + head["bias"]


def install_head(model, head: dict) -> None:
    """Copy the fitted standardisation and linear layer into the torch module."""
    import torch

    with torch.no_grad():
        model.feature_mean.copy_(torch.as_tensor(head["mean"], dtype=torch.float32))
        model.feature_scale.copy_(torch.as_tensor(head["scale"], dtype=torch.float32))
        model.linear.weight.copy_(torch.as_tensor(head["weight"], dtype=torch.float32))
        model.linear.bias.copy_(torch.as_tensor(head["bias"], dtype=torch.float32))


def _evaluate(model, head, items, valid_idx, test_items, classes, size, device, config, backbone) -> dict:
    """The finished module scored through the engine's path on the test images (else validation)."""
    from .calibration import softmax
    from .engine import predict_logits_for_paths
    from .metrics import evaluate

    if test_items:
        split, pairs = "test", test_items
    else:
        split, pairs = "valid", [items[i] for i in valid_idx]
    logits = predict_logits_for_paths(
        model,
        [path for path, _ in pairs],
        size,
        device=device,
        channels_last=False,
        mean=backbone.mean,
        std=backbone.std,
        contrast=config.contrast,
    )
    probabilities = softmax(logits, head["temperature"])
    evaluation = evaluate([label for _, label in pairs], probabilities, classes)
    evaluation["split"] = split
    evaluation["calibration"] = head["calibration"]
    return evaluation, probabilities
