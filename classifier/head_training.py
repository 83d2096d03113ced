"""Training of the small-data model (feature_head): features once, two heads, a cross-fitted temperature.

Steps: ImageNet body from its pinned package -> features of every training image in its dihedral views,
averaged -> standardise -> scikit-learn logistic regression (every series of a class weighing the same)
and the class means of the pooled features, mixed (feature_head.py) -> the temperature fitted on
out-of-fold logits of every training image (folds hold out whole series) -> evaluation of the finished
module on the test images through the engine's own path -> artifact. A 2-core CPU does a few hundred
images in about a minute and a half.

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
from .feature_head import (
    ABSENT,
    VIEWS,
    build_classifier,
    mixture_log_probabilities,
    prototype_settings,
    view_features,
    with_folded_batchnorm,
)
from .run_records import stage_summary
from .training_common import TrainResult, metadata_for

log = logging.getLogger(__name__)

MAX_ITER = 3000
BATCH = 32
# The coverage at which the metadata summarises the prediction sets' thresholds; the portal applies the
# lab's own setting (SEM_PREDICTION_SET_COVERAGE) to the stored scores.
DEFAULT_COVERAGE = 0.9
OUTLIER_VIEWS = 2  # views averaged for each outlier image (the detector's training data)
MAX_DEFOCUSED = 12  # training images defocused into outliers, one per series
PSEUDO_SERIES_SIZE = 8  # images per stand-in series when the series are unknown (../shared: ~7 a source)
MAX_PSEUDO_SERIES = 100


def train_feature_head(
    items, config, out_path, *, device, test_items, classes, groups, fingerprint, emit, stop, started, outliers=None
):
    """Train, evaluate and save; returns classifier.train.TrainResult."""

    emit(phase_event("loading weights", 0.0))
    backbone = get_backbone(config.arch)
    size = config.sizes[-1]
    body, provenance = load_pretrained_body(backbone, config.weights_path)
    pooled_dims = body.num_features
    prototypes = prototype_settings(pooled_dims)
    model = build_classifier(backbone, len(classes), body, tta_views=VIEWS, prototypes=prototypes)
    model = model.to(device).eval()
    labels = np.array([classes.index(label) for _, label in items])

    def cancelled():
        if stop():
            from .fit_callbacks import TrainingCancelled

            raise TrainingCancelled("cancelled while computing features")

    emit({"event": "stage_start", "stage": 0, "stages": 1, "size": size, "epochs": 1, "fraction": 0.0})
    # features from the folded body the engine runs (same features to ~1e-5, faster on CPU)
    extractor = _Extractor(
        with_folded_batchnorm(model, backbone), backbone, size, device, config.contrast, emit, cancelled, len(items)
    )
    n_eval = len(test_items or [])
    plan = extractor.plan(items, n_eval, config.budget_s, started)
    emit(plan.event())
    features = extractor.features([path for path, _ in items], plan)  # (N, views, D)
    emit(phase_event("computing the outliers' features", plan.after_features(extractor.done)))
    outlier_features = extractor.outlier_features(outlier_sources(items, groups, outliers))
    fit_started = time.monotonic()
    emit(phase_event("fitting head", plan.fraction_at(time.monotonic() - started, plan.reserve_s + plan.evaluation_s)))
    head = fit_head(features, labels, groups, len(classes), config.head_c, config.seed, pooled_dims)
    install_head(model, head)
    record = stage_summary(
        0,
        size,
        [],  # no epochs: one fit of the head
        best_epoch=None,
        best_valid_loss=head["valid_nll"],
        duration_s=time.monotonic() - started,
        input_shape=[BATCH, 3, size, size],
        kind="frozen features: logistic regression and class means",
        views=plan.train_views,
        fit_s=time.monotonic() - fit_started,
    )
    emit({"event": "stage_end", "stage": 0, "stages": 1, "size": size, "best_epoch": None})
    # The evaluation's views are what the artifact averages at inference: fewer when the time left is short.
    model.tta_views = plan.eval_views_for_time_left(time.monotonic() - started, fit_started - extractor.started)
    fraction = plan.fraction_at(time.monotonic() - started, plan.evaluation_s * model.tta_views / plan.eval_views)
    emit(
        {**phase_event("evaluating", fraction, total=n_eval, views=model.tta_views), "event": "evaluating", "stages": 1}
    )
    production = with_folded_batchnorm(model, backbone)  # the module the engine will run
    evaluation, probabilities = _evaluate(production, head, items, test_items, classes, size, device, config, backbone)
    emit(phase_event("saving", plan.fraction_at(time.monotonic() - started, 1.0)))
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
        len(items),
        len(head["oof_index"]),
        backbone=backbone,
    )
    metadata["recipe"] = "frozen_head"
    metadata["prototypes"] = prototypes
    metadata["tta_views"] = model.tta_views
    trust, bank = trust_metadata(head, features, labels, groups, classes, config.seed, outlier_features)
    metadata.update(trust)
    metadata["budget"] = {**plan.event(), "used_s": duration} if config.budget_s else None
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


def trust_metadata(
    head: dict, features, labels, groups, classes, seed: int, outliers=None, folds: int = 5
) -> tuple[dict, dict]:
    """(metadata entries, extra artifact tensors): the prediction sets calibrated on the out-of-fold
    probabilities of every training image, and the out-of-scope detectors on the raw features averaged over
    the views: the kNN distance (bank: every training image; threshold: each image's distance to the other
    folds' images, the folds of fit_head, so an unseen series sets it as a new source would) and the
    outlier classifier against ``outliers`` ((M, D) raw features; none: no classifier), thresholded alike."""
    import torch

    from .conformal import fit_conformal
    from .ood import BANK_KEY, OUTLIER_WEIGHT_KEY, OUTLIERS_KEY, fit_knn, fit_outlier_classifier, held_out_knn_scores

    conformal = fit_conformal(head["oof_probabilities"], head["oof_labels"], classes, DEFAULT_COVERAGE)
    raw = features.mean(1)  # fewer views than inference averages when the time budget cut them: close enough
    split = _folds(labels, groups, folds, seed, raw)  # the folds of fit_head
    report, bank = fit_knn(raw, held_out_knn_scores(raw, split), seed=seed)
    conformal["held_out_by"] = report["held_out_by"] = held_out_unit(groups, folds, raw)
    tensors = {BANK_KEY: torch.from_numpy(bank)}
    outliers = np.zeros((0, raw.shape[1]), np.float32) if outliers is None else np.asarray(outliers, np.float32)
    classifier, weight = fit_outlier_classifier(raw, outliers, split, seed=seed)
    if classifier:
        report["outlier_classifier"] = classifier
        tensors[OUTLIER_WEIGHT_KEY] = torch.from_numpy(weight)
        tensors[OUTLIERS_KEY] = torch.from_numpy(outliers.astype(np.float16))
    return {"conformal": conformal, "out_of_scope": report}, tensors


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
        self.emit(phase_event("measuring the feature cost", 0.0))
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
            event = phase_event("computing features", plan.after_features(self.done), self.done, self.total)
            self.emit({**event, "event": "batch", "stage": 0, "stages": 1, "size": self.size})
        return np.concatenate(chunks)

    def outlier_features(self, sources) -> np.ndarray:
        """(M, D) raw features of the outliers, OUTLIER_VIEWS views averaged: a detector's training data,
        where a few views are enough and every second counts against the budget."""
        chunks = []
        for start in range(0, len(sources), BATCH):
            self.cancelled()
            chunks.append(self._batch(sources[start : start + BATCH], OUTLIER_VIEWS).mean(1))
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)

    def _batch(self, paths, views: int) -> np.ndarray:
        import torch

        arrays = [transforms.eval_array(path, self.size, self.contrast) for path in paths]
        batch = torch.from_numpy(np.stack(arrays)).to(self.device)
        inputs = transforms.normalise_batch(batch, self.backbone.mean, self.backbone.std)
        with torch.inference_mode():
            per_view = view_features(self.model.features, inputs, views)
        return per_view.transpose(0, 1).float().cpu().numpy()


def outlier_sources(items, groups, curated=None) -> list:
    """What the out-of-scope classifier learns the outside from: the made outliers, MAX_DEFOCUSED training
    images of different series defocused, and the curated not-SEM derivatives (paths), as file objects or paths."""
    from .outliers import as_derivative, defocused, made_outliers, one_per_group

    paths = [path for path, _ in items]
    chosen = one_per_group(paths, groups or paths, MAX_DEFOCUSED)
    made = made_outliers() + defocused(chosen, [os.path.basename(path) for path in chosen])
    return [as_derivative(array) for _, _, array in made] + list(curated or [])


def phase_event(name: str, fraction: float, done: int | None = None, total: int | None = None, views=None) -> dict:
    """A progress event naming the phase; done/total count images, views the views per image."""
    event = {"event": "phase", "phase": name, "fraction": fraction}
    event.update({key: value for key, value in (("done", done), ("total", total), ("views", views)) if value})
    return event


def fit_head(features, labels, groups, n_classes: int, c: float, seed: int, pooled_dims=None, folds: int = 5) -> dict:
    """The head on every image; its temperature fitted on out-of-fold logits.

    ``features``: (N, views, D), averaged over the views as inference does (averaged views scored better
    than each view as its own sample, bench/RESULTS.md). ``groups``: each image's series (sample), or None.
    ``pooled_dims``: how many leading features are the pooled ones the class means use (None: the linear
    head alone). Each image's logits come from a head fitted without its series (StratifiedGroupKFold over
    ``groups``; without series, folds of clusters of similar images: _folds), so the temperature sees every training image as an unseen
    source looks, not the few series one validation split held (that temperature swung from 0.6 to 20
    between folds and left ECE at 0.14 over 10 seeds; cross-fitted: 0.07, bench/RESULTS.md). The
    out-of-fold probabilities are returned too (``oof_probabilities``, ``oof_labels``, ``oof_index``):
    held-out scores for prediction sets and out-of-scope thresholds."""
    from .blas import one_blas_thread
    from .calibration import calibration_report, softmax

    features = features.mean(1)
    weights = series_weights(labels, groups) if groups else None
    with one_blas_thread():
        logits, scored = out_of_fold_logits(features, labels, groups, n_classes, c, seed, folds, pooled_dims)
        final = _fit(features, labels, weights, n_classes, c, seed, pooled_dims)
    calibration = calibration_report(logits[scored], labels[scored])
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


def out_of_fold_logits(features, labels, groups, n_classes: int, c: float, seed: int, folds: int, pooled_dims=None):
    """(logits (N, C), scored mask): each image scored by a head fitted without its fold, exactly as the
    final head is fitted (its series weights recomputed on the fold's images). An image whose class had no
    training image in its fold is not scored (no logit to calibrate)."""
    logits = np.zeros((len(labels), n_classes))
    scored = np.zeros(len(labels), dtype=bool)
    for train_idx, held_idx in _folds(labels, groups, folds, seed, features):
        part = labels[train_idx]
        weights = series_weights(part, [groups[i] for i in train_idx]) if groups else None
        head = _fit(features[train_idx], part, weights, n_classes, c, seed, pooled_dims)
        logits[held_idx] = _logits(head, features[held_idx])
        scored[held_idx] = np.isin(labels[held_idx], part)
    return logits, scored


def _folds(labels, groups, folds: int, seed: int, features=None):
    """Folds that hold out whole series when there are enough series. Without them (an import that did
    not say the series puts every image in one sample) and given ``features`` (N, D), folds hold out
    whole clusters of similar images instead: a series' images sit together in feature space, and folds of
    single images would let each held-out image keep its series-mates in training, so held-out scores
    would look like a familiar source (an out-of-scope threshold that flagged 56 % of a new source's
    micrographs, bench/RESULTS.md). Else stratified folds of images."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if not (groups and len(set(groups)) >= folds) and features is not None:
        groups = pseudo_series(features, folds, seed)
    if groups is not None and len(set(groups)) >= folds:
        splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(labels)), labels, groups))
    largest = np.bincount(labels).max()
    splitter = StratifiedKFold(max(2, min(folds, largest)), shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels))


def held_out_unit(groups, folds: int, features) -> str:
    """What _folds held out, in words for the Training page: "series", "clusters of similar images"
    (pseudo_series) or "images"."""
    if groups and len(set(groups)) >= folds:
        return "series"
    if _pseudo_series_count(len(features)) >= folds:
        return "clusters of similar images"
    return "images"


def _pseudo_series_count(images: int) -> int:
    return min(MAX_PSEUDO_SERIES, images // PSEUDO_SERIES_SIZE)


def pseudo_series(features, folds: int, seed: int) -> list[int] | None:
    """Each image's cluster (k-means on unit-length features, about PSEUDO_SERIES_SIZE images a cluster),
    standing in for its series; None when there are too few images for ``folds`` clusters."""
    from sklearn.cluster import KMeans

    from .ood import normalise

    clusters = _pseudo_series_count(len(features))
    if clusters < folds:
        return None
    found = KMeans(n_clusters=clusters, n_init=3, random_state=seed).fit_predict(normalise(features))
    return found.tolist()


def series_weights(labels: np.ndarray, groups: list[str]) -> np.ndarray:
    """Each class weighs the same, and within a class each series (sample) weighs the same, however
    many images it has: 40 tiles of one bead series count as one source, not 40 (grouped
    cross-validation: +0.01 accuracy and macro recall over class-balanced weights, bench/RESULTS.md)."""
    pairs = list(zip(labels.tolist(), groups))
    per_series = Counter(pairs)
    series_per_class = Counter(label for label, _ in per_series)
    weights = np.array([1.0 / (per_series[pair] * series_per_class[pair[0]]) for pair in pairs])
    return weights * len(weights) / weights.sum()


def _fit(features, labels, weights, n_classes: int, c: float, seed: int, pooled_dims=None) -> dict:
    """Standardisation + logistic regression (class-balanced unless ``weights``); the class means of the
    first ``pooled_dims`` features when given."""
    from sklearn.linear_model import LogisticRegression

    features = features.astype(np.float64)
    mean = features.mean(0)
    scale = features.std(0)
    scale[scale < 1e-6] = 1.0  # a constant feature: leave it unscaled rather than divide by zero
    balanced = "balanced" if weights is None else None  # series weights already balance the classes
    regression = LogisticRegression(C=c, class_weight=balanced, max_iter=MAX_ITER, random_state=seed)
    regression.fit((features - mean) / scale, labels, sample_weight=weights)
    weight = np.zeros((n_classes, features.shape[1]))
    bias = np.full(n_classes, ABSENT)  # a class with no training images is never predicted
    present = regression.classes_
    if len(present) == 2:  # scikit-learn's binary model has one row: logits -z/2, +z/2 give its softmax
        weight[present] = np.stack([-regression.coef_[0] / 2, regression.coef_[0] / 2])
        bias[present] = [-regression.intercept_[0] / 2, regression.intercept_[0] / 2]
    else:
        weight[present] = regression.coef_
        bias[present] = regression.intercept_
    head = {"mean": mean, "scale": scale, "weight": weight, "bias": bias}
    if pooled_dims:
        head.update(class_means(features[:, :pooled_dims], labels, n_classes))
    return head


def class_means(pooled: np.ndarray, labels: np.ndarray, n_classes: int) -> dict:
    """Each class's mean direction of the L2-normalised pooled features (each image counts once; series
    means scored worse), and the offset that keeps a class without images out of the answer."""
    unit = pooled / np.linalg.norm(pooled, axis=1, keepdims=True).clip(1e-12)
    centres = np.zeros((n_classes, pooled.shape[1]))
    offset = np.full(n_classes, ABSENT)
    for label in np.unique(labels):
        centre = unit[labels == label].mean(0)
        centres[label] = centre / max(np.linalg.norm(centre), 1e-12)
        offset[label] = 0.0
    return {"centres": centres, "offset": offset, "prototypes": prototype_settings(pooled.shape[1])}


def _logits(head: dict, features: np.ndarray) -> np.ndarray:
    """The module's logits for raw features, computed as the module computes them."""
    import torch

    features = np.asarray(features, dtype=np.float64)
    logits = ((features - head["mean"]) / head["scale"]) @ head["weight"].T + head["bias"]
    if "centres" not in head:
        return logits
    settings = head["prototypes"]
    pooled = torch.from_numpy(np.ascontiguousarray(features[:, : settings["dims"]]))
    mixture = mixture_log_probabilities(
        torch.from_numpy(logits),
        pooled,
        torch.from_numpy(head["centres"]),
        torch.from_numpy(head["offset"]),
        settings["weight"],
        settings["sharpness"],
    )
    return mixture.numpy()


def install_head(model, head: dict) -> None:
    """Copy the fitted standardisation, linear layer and class means into the torch module."""
    import torch

    def copy(target, value):
        target.copy_(torch.as_tensor(value, dtype=torch.float32))

    with torch.no_grad():
        copy(model.feature_mean, head["mean"])
        copy(model.feature_scale, head["scale"])
        copy(model.linear.weight, head["weight"])
        copy(model.linear.bias, head["bias"])
        if "centres" in head:
            copy(model.prototype_centres, head["centres"])
            copy(model.prototype_offset, head["offset"])


def _evaluate(model, head, items, test_items, classes, size, device, config, backbone) -> dict:
    """The finished module scored through the engine's path on the test images; without test images,
    the out-of-fold probabilities of the training images (split "cross-validated")."""
    from .engine import predict_logits_for_paths

    if not test_items:
        return _cross_validated(head, [label for _, label in items], classes), None
    logits = predict_logits_for_paths(
        model,
        [path for path, _ in test_items],
        size,
        device=device,
        channels_last=False,
        mean=backbone.mean,
        std=backbone.std,
        contrast=config.contrast,
    )
    return _scored(head, [label for _, label in test_items], logits, classes)


def evaluation_of(head, train_labels, test_labels, test_features, classes) -> tuple[dict, np.ndarray | None]:
    """(evaluation, test probabilities) of a fitted head from raw features of the test images (a head
    refit: head_refit.py); without test images, the out-of-fold probabilities of the training images."""
    if not test_labels:
        return _cross_validated(head, train_labels, classes), None
    return _scored(head, test_labels, _logits(head, test_features), classes)


def _cross_validated(head, train_labels, classes) -> dict:
    from .metrics import evaluate

    y_true = [train_labels[i] for i in head["oof_index"]]
    evaluation = evaluate(y_true, head["oof_probabilities"], classes)
    return {**evaluation, "split": "cross-validated", "calibration": head["calibration"]}


def _scored(head, test_labels, logits, classes) -> tuple[dict, np.ndarray]:
    from .calibration import softmax
    from .metrics import evaluate

    probabilities = softmax(logits, head["temperature"])
    evaluation = evaluate(list(test_labels), probabilities, classes)
    return {**evaluation, "split": "test", "calibration": head["calibration"]}, probabilities
