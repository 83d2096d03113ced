"""A head refitted on stored embeddings: the base model's frozen body, a new head in seconds (issue 25).

The frozen-feature model (head_training.py) never changes its body, so the features a model computed for
each image it classified (the engine returns them, standardised, with every prediction; the portal keeps
them as float16) are all a new head needs. After a review session the portal refits only the head on
them, the same way a full training fits it (`head_training.fit_head`: series weights, cross-fitted
temperature, the prediction sets and the out-of-scope detector from the same out-of-fold scores), and
copies the body's weights from the base artifact. An image the base model has not embedded yet is run
through the base engine here.

What differs from a full training: the features are the views the base averages at inference
(`tta_views`, 4 by default) rather than the 8 a full training averages, rounded to float16; the scheduled
full training still runs and recomputes them. The result is an ordinary artifact of the current format;
its metadata names its base (``refit_of``), and the engine runs it like any other.

torch-free at import (the web process asks ``can_refit``); the training modules are imported by ``refit_head``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np

from .run_records import stage_summary
from .training_common import TrainResult, metadata_for

log = logging.getLogger(__name__)

# The state-dict entries a refit replaces; everything else (the body) is copied from the base.
HEAD_KEYS = ("feature_mean", "feature_scale", "linear.", "prototype_centres", "prototype_offset")
RECIPE = "frozen_head"


class RefitUnavailable(ValueError):
    """The base model cannot be refitted (not a frozen-feature model, another architecture, other
    embeddings); a full training is needed."""


@dataclass(frozen=True)
class EmbeddedItem:
    path: str  # the derivative, run through the base engine when ``embedding`` is None
    label: str
    embedding: np.ndarray | None = None  # the base model's standardised features (Engine: prediction.embedding)


def can_refit(metadata: dict, arch: str | None = None) -> str:
    """ "" when a model with this artifact metadata can be refitted head-only (for ``arch``, when given),
    else why not."""
    if metadata.get("recipe") != RECIPE:
        return "the model is not a frozen-feature model; its body was trained, so only a full training updates it"
    if arch and metadata.get("arch") != arch:
        return f"the architecture changed ({metadata.get('arch')} -> {arch}); a full training is needed"
    return ""


def refit_head(
    base_path, base_sha256, items, test_items, classes, groups, out_path, *, config, fingerprint="", progress=None
) -> TrainResult:
    """Fit a new head on ``items`` (EmbeddedItem) over the base artifact's body; evaluate it on
    ``test_items`` (EmbeddedItem; none: the out-of-fold scores, as a full training does) and save the
    artifact to ``out_path``. ``config``: a TrainConfig (head_c and seed are used; the architecture, sizes
    and contrast are the base's)."""
    from .artifact import load_artifact, save_artifact
    from .backbones import get_backbone
    from .engine import BASE_MEAN_KEY, BASE_SCALE_KEY
    from .head_training import evaluation_of, fit_head, install_head, phase_event, trust_metadata
    from .ood import OUTLIERS_KEY

    started = time.monotonic()
    emit = progress or (lambda event: None)
    emit(phase_event("loading the base model", 0.0))
    base = load_artifact(base_path, base_sha256)
    reason = can_refit(base.metadata, config.arch)
    if reason:
        raise RefitUnavailable(reason)
    test_items = list(test_items or [])
    raw, computed = _raw_features(base, list(items) + test_items, base_path, emit)
    train_raw, test_raw = raw[: len(items)], raw[len(items) :]
    labels = np.array([classes.index(item.label) for item in items])
    emit(phase_event("fitting head", 0.4))
    prototypes = base.metadata.get("prototypes")
    head = fit_head(
        train_raw[:, None, :], labels, groups, len(classes), config.head_c, config.seed, (prototypes or {}).get("dims")
    )
    model = _model_with_base_body(base, classes)
    install_head(model, head)
    emit(phase_event("evaluating", 0.7, total=len(test_items)))
    y_test = [item.label for item in test_items]
    evaluation, probabilities = evaluation_of(head, [item.label for item in items], y_test, test_raw, classes)
    # the base's outliers (made and curated at its training): a refit has their features, not their images
    outliers = base.extra_tensors().get(OUTLIERS_KEY)
    outliers = None if outliers is None else outliers.float().numpy()
    trust, bank = trust_metadata(head, train_raw[:, None, :], labels, groups, classes, config.seed, outliers)
    emit(phase_event("saving", 0.9))
    duration = time.monotonic() - started
    record = stage_summary(
        0,
        base.metadata["input_size"],
        [],
        best_epoch=None,
        best_valid_loss=head["valid_nll"],
        duration_s=duration,
        input_shape=None,
        kind="head refit on the base model's stored embeddings",
        views=base.metadata.get("tta_views"),
    )
    base_config = {**base.metadata["training_config"], "head_c": config.head_c, "seed": config.seed}
    metadata = metadata_for(
        type(config).from_dict(base_config),
        classes,
        [record],
        head["calibration"],
        evaluation,
        fingerprint,
        base.metadata.get("pretrained"),
        "cpu",
        duration,
        len(items),
        len(head["oof_index"]),
        backbone=get_backbone(base.metadata["arch"]),
    )
    metadata.update(trust)
    metadata.update(recipe=RECIPE, prototypes=prototypes, tta_views=base.metadata["tta_views"], budget=None)
    metadata["refit_of"] = {
        "sha256": base.sha256,
        "created_at": base.metadata.get("created_at"),
        "stored_embeddings": len(items) + len(test_items) - computed,
        "computed_embeddings": computed,
    }
    statistics = {BASE_MEAN_KEY: base.state_dict["feature_mean"], BASE_SCALE_KEY: base.state_dict["feature_scale"]}
    sha256 = save_artifact(out_path, {**model.state_dict(), **bank, **statistics}, metadata)
    emit({"event": "done", "stages": 1, "fraction": 1.0, "artifact_path": os.fspath(out_path), "sha256": sha256})
    log.info("head refit on %d images (%d embeddings computed) in %.1f s", len(items), computed, duration)
    return TrainResult(
        os.fspath(out_path), metadata, evaluation, [record], duration, "cpu", sha256, test_probabilities=probabilities
    )


def _raw_features(base, items: list[EmbeddedItem], base_path, emit) -> tuple[np.ndarray, int]:
    """((N, D) raw features in ``items`` order, how many had to be computed): the stored standardised
    embeddings turned back with the base's statistics; the missing ones from the base engine."""
    mean = base.state_dict["feature_mean"].double().numpy()
    scale = base.state_dict["feature_scale"].double().numpy()
    from .head_training import phase_event

    missing = [index for index, item in enumerate(items) if item.embedding is None]
    standardised = np.zeros((len(items), mean.size))
    for index, item in enumerate(items):
        if item.embedding is not None:
            if np.asarray(item.embedding).size != mean.size:
                raise RefitUnavailable(
                    f"{item.path}: a stored embedding of {np.asarray(item.embedding).size} values; the base "
                    f"model's features have {mean.size}"
                )
            standardised[index] = np.asarray(item.embedding, dtype=np.float64)
    if missing:
        from .engine import Engine

        emit(phase_event("computing missing features", 0.1, done=0, total=len(missing)))
        engine = Engine.from_artifact(base_path, expected_sha256=base.sha256)
        for index, prediction in zip(missing, engine.predict_paths([items[i].path for i in missing])):
            standardised[index] = prediction.embedding
    return standardised * scale + mean, len(missing)


def _model_with_base_body(base, classes: list[str]):
    """The base's network for ``classes``: its body's weights, a head to be installed."""
    from .artifact import build_model

    model = build_model({**base.metadata, "classes": list(classes)})
    body = {key: value for key, value in base.network_state().items() if not key.startswith(HEAD_KEYS)}
    missing, unexpected = model.load_state_dict(body, strict=False)
    stray = [key for key in missing if not key.startswith(HEAD_KEYS)]
    if unexpected or stray:
        raise RefitUnavailable(f"the base artifact does not match its architecture: {unexpected or stray}")
    return model.eval()
