"""Training of the small-data model (feature_head): features once, a logistic-regression head, calibration.

Steps: ImageNet body from its pinned package -> features of every training image in its dihedral views
(each view a training sample) -> standardise -> scikit-learn logistic regression (balanced class
weights) fitted on the training part -> temperature fitted on the validation part -> the head refitted
on all images with that temperature kept -> evaluation of the finished module on the test images
through the engine's own path -> artifact. A 2-core CPU does a few hundred images in about a minute.

When the features of all views would not fit the time budget, fewer views are used for training
(measured on the first batch; feature_budget.py); inference always averages all views the artifact
names. Every phase is a progress event with its name ("loading weights", "computing features",
"fitting head", "evaluating", "saving"), its fraction weighted by the planned seconds.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter

import numpy as np

from . import transforms
from .backbones import get_backbone, load_pretrained_body
from .feature_budget import plan_views
from .feature_head import VIEWS, build_classifier, dihedral_views
from .training_common import TrainResult, metadata_for, stratified_split

log = logging.getLogger(__name__)

MAX_ITER = 3000
BATCH = 32


def train_feature_head(
    items, config, out_path, *, device, test_items, classes, groups, fingerprint, emit, stop, started
):
    """Train, evaluate and save; returns classifier.train.TrainResult."""

    emit(_phase("loading weights", 0.0))
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
    n_eval = len(test_items) if test_items else len(valid_idx)
    plan = extractor.plan(items, n_eval, config.budget_s, started)
    emit(plan.event())
    features = extractor.features([path for path, _ in items], plan)  # (N, views, D)
    fit_started = time.monotonic()
    emit(_phase("fitting head", plan.fraction_at(time.monotonic() - started, plan.reserve_s + plan.evaluation_s)))
    head = fit_head(features, labels, weights, train_idx, valid_idx, len(classes), config.head_c, config.seed)
    install_head(model, head)
    record = {
        "stage": 0,
        "size": size,
        "kind": "frozen features + logistic regression",
        "views": plan.train_views,
        "epochs": [],
        "best_epoch": None,
        "best_valid_loss": head["valid_nll"],
        "duration_s": time.monotonic() - started,
        "fit_s": time.monotonic() - fit_started,
        "input_shape": [BATCH, 3, size, size],
    }
    emit({"event": "stage_end", "stage": 0, "stages": 1, "size": size, "best_epoch": None})
    # The evaluation's views are what the artifact averages at inference: fewer when the time left is short.
    model.tta_views = plan.eval_views_for_time_left(time.monotonic() - started, fit_started - extractor.started)
    fraction = plan.fraction_at(time.monotonic() - started, plan.evaluation_s * model.tta_views / plan.eval_views)
    emit({**_phase("evaluating", fraction, total=n_eval, views=model.tta_views), "event": "evaluating", "stages": 1})
    evaluation, probabilities = _evaluate(
        model, head, items, valid_idx, test_items, classes, size, device, config, backbone
    )
    emit(_phase("saving", plan.fraction_at(time.monotonic() - started, 1.0)))
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
    metadata["tta_views"] = model.tta_views
    metadata["budget"] = {**plan.event(), "used_s": duration} if config.budget_s else None
    from .artifact import save_artifact

    sha256 = save_artifact(out_path, model.state_dict(), metadata)
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


class _Extractor:
    """Batched features of files in their dihedral views, with progress and cancellation."""

    def __init__(self, model, backbone, size, device, contrast, emit, cancelled, total):
        self.model, self.backbone, self.size, self.device = model, backbone, size, device
        self.contrast, self.emit, self.cancelled, self.total = contrast, emit, cancelled, max(1, total)
        self.done = 0
        self.started = time.monotonic()

    def plan(self, items, n_eval: int, budget_s, started: float):
        """Measure one view of the first batch and plan the views (feature_budget.plan_views). Measured
        without a budget too: the progress fraction and later runs' request-time estimates need the cost."""
        self.emit(_phase("measuring the feature cost", 0.0))
        sample = [path for path, _ in items[:BATCH]]
        measured = time.monotonic()
        self._batch(sample, 1)
        per_view = (time.monotonic() - measured) / max(1, len(sample))
        plan = plan_views(budget_s, time.monotonic() - started, per_view, len(items), n_eval, VIEWS)
        if plan.train_views < VIEWS:
            log.info("the time budget affords %d dihedral views per training image, not %d", plan.train_views, VIEWS)
        if plan.note:
            log.warning("%s", plan.note)
        return plan

    def features(self, paths, plan) -> np.ndarray:
        self.started = time.monotonic()
        chunks = []
        for start in range(0, len(paths), BATCH):
            self.cancelled()
            chunks.append(self._batch(paths[start : start + BATCH], plan.train_views))
            self.done += len(paths[start : start + BATCH])
            event = _phase("computing features", plan.after_features(self.done), self.done, self.total)
            self.emit({**event, "event": "batch", "stage": 0, "stages": 1, "size": self.size})
        return np.concatenate(chunks)

    def _batch(self, paths, views: int) -> np.ndarray:
        import torch

        arrays = [transforms.eval_array(path, self.size, self.contrast) for path in paths]
        batch = torch.from_numpy(np.stack(arrays)).to(self.device)
        inputs = transforms.normalise_batch(batch, self.backbone.mean, self.backbone.std)
        with torch.inference_mode():
            per_view = [self.model.features(view) for view in dihedral_views(inputs, views)]
        return torch.stack(per_view, 1).float().cpu().numpy()


def _phase(name: str, fraction: float, done: int | None = None, total: int | None = None, views=None) -> dict:
    """A progress event naming the phase; done/total count images, views the views per image."""
    event = {"event": "phase", "phase": name, "fraction": fraction}
    event.update({key: value for key, value in (("done", done), ("total", total), ("views", views)) if value})
    return event


def fit_head(features, labels, weights, train_idx, valid_idx, n_classes: int, c: float, seed: int) -> dict:
    """Standardisation + logistic regression; temperature on the validation part; then refitted on all.

    ``features``: (N, views, D), averaged over the views as inference does (averaged views scored better
    than each view as its own sample under grouped cross-validation, bench/RESULTS.md). ``weights``:
    per-image sample weights (series_weights), or None for class-balanced weights. Returns the head's
    parameters, the temperature and its calibration report."""
    from .calibration import calibration_report

    features = features.mean(1)
    train_idx, valid_idx = np.asarray(train_idx), np.asarray(valid_idx)
    first = _fit(features[train_idx], labels[train_idx], _subset(weights, train_idx), n_classes, c, seed)
    # A class seen only in validation has no logit to calibrate: those images say nothing about T.
    known = valid_idx[np.isin(labels[valid_idx], labels[train_idx])]
    calibration = calibration_report(_logits(first, features[known]), labels[known])
    everything = np.concatenate([train_idx, valid_idx])
    final = _fit(features[everything], labels[everything], _subset(weights, everything), n_classes, c, seed)
    nll = calibration["nll_after"]
    return {**final, "temperature": calibration["temperature"], "calibration": calibration, "valid_nll": nll}


def fit_head_cross_fitted(features, labels, groups, n_classes: int, c: float, seed: int, folds: int = 5) -> dict:
    """Standardisation + logistic regression on every image; the temperature fitted on out-of-fold logits.

    Each image's logits come from a head fitted without its series (scikit-learn's StratifiedGroupKFold over
    ``groups``; without series, folds of images), so the temperature sees every training image as an unseen
    source would look, not the handful of series one validation split holds (on seeds 1 and 2 of the
    grouped cross-validation that temperature was too low: ECE 0.18 and 0.24, bench/RESULTS.md). The
    out-of-fold probabilities are returned too (``oof_probabilities``, ``oof_labels``): held-out scores for
    conformal prediction sets and out-of-scope thresholds."""
    from .calibration import calibration_report, softmax

    features = features.mean(1)
    weights = series_weights(labels, groups) if groups else None
    logits, scored = out_of_fold_logits(features, labels, groups, weights, n_classes, c, seed, folds)
    calibration = calibration_report(logits[scored], labels[scored])
    final = _fit(features, labels, weights, n_classes, c, seed)
    temperature = calibration["temperature"]
    return {
        **final,
        "temperature": temperature,
        "calibration": calibration,
        "valid_nll": calibration["nll_after"],
        "oof_probabilities": softmax(logits[scored], temperature),
        "oof_labels": labels[scored],
        "oof_index": np.flatnonzero(scored),
    }


def out_of_fold_logits(features, labels, groups, weights, n_classes: int, c: float, seed: int, folds: int):
    """(logits (N, C), scored mask): each image scored by a head fitted without its fold. An image whose
    class had no training image in its fold is not scored (no logit to calibrate)."""
    logits = np.zeros((len(labels), n_classes))
    scored = np.zeros(len(labels), dtype=bool)
    for train_idx, held_idx in _folds(labels, groups, folds, seed):
        head = _fit(features[train_idx], labels[train_idx], _subset(weights, train_idx), n_classes, c, seed)
        logits[held_idx] = _logits(head, features[held_idx])
        scored[held_idx] = np.isin(labels[held_idx], labels[train_idx])
    return logits, scored


def _folds(labels, groups, folds: int, seed: int):
    """Folds that hold out whole series when there are enough series, else folds of images."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    smallest = min(np.bincount(labels)[np.unique(labels)])
    if groups and len(set(groups)) >= folds:
        splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(labels)), labels, groups))
    splitter = StratifiedKFold(max(2, min(folds, smallest)), shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels))


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
