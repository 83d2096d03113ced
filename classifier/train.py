"""fastai training with progressive resizing, calibration and a saved artifact.

One DataBlock per stage (64 -> 128 -> 224 px by default), ``fit_one_cycle`` per
stage with the weights carried over, best-epoch selection on the validation
set, then temperature scaling, evaluation and an atomically written artifact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import transforms
from .backbones import is_backbone
from .config import TrainConfig
from .fit_callbacks import (  # noqa: F401  (TrainingCancelled is part of this module's interface)
    TRAINING_SHARE,
    BestWeights,
    ProgressEventsCallback,
    ProgressTracker,
    TrainingCancelled,
    finite,
)
from .run_records import StageSummary, stage_summary
from .stage_budget import plan_for_budget, replan_config
from .training_common import TrainResult, metadata_for, stratified_split  # noqa: F401  (part of this module's interface)

log = logging.getLogger(__name__)

# The fine-tuning recipe's fixed choices: no caller ever set them otherwise, so they are not options.
WEIGHT_DECAY = 1e-2
MAX_ROTATE_DEGREES = 10.0

ProgressFn = Callable[[dict], None]
StopFn = Callable[[], bool]


def train(
    items: list[tuple[str, str]],
    config: TrainConfig,
    out_path: str,
    *,
    test_items: list[tuple[str, str]] | None = None,
    classes: list[str] | None = None,
    groups: list[str] | None = None,
    fingerprint: str | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    outliers: list[str] | None = None,
) -> TrainResult:
    """Train on (image path, category) pairs and write the artifact to ``out_path``.

    ``groups``: the sample (physical series) of each item, when known; the frozen-feature recipe weighs
    series equally within a class and calibrates on whole series. ``outliers``: derivatives of images a
    curator marked "not SEM / not classifiable"; the frozen-feature recipe's out-of-scope detector learns
    from them beside the made outliers (classifier.outliers).

    Sets torch's CPU thread count for the run and restores the caller's afterwards."""
    import torch

    threads = torch.get_num_threads()
    try:
        return _train(
            items,
            config,
            out_path,
            test_items=test_items,
            classes=classes,
            groups=groups,
            fingerprint=fingerprint,
            progress=progress,
            should_stop=should_stop,
            outliers=outliers,
        )
    finally:
        torch.set_num_threads(threads)


def _train(
    items, config, out_path, *, test_items, classes, groups, fingerprint, progress, should_stop, outliers
) -> TrainResult:
    started = time.monotonic()
    emit = progress or (lambda event: None)
    stop = should_stop or (lambda: False)
    device = _prepare_runtime(config)
    if config.raw_inputs:
        items, test_items = _derivatives_for_raw(items, test_items, config)
    classes = list(classes) if classes else sorted({label for _, label in items})
    _check_labels(items, classes, "items")
    _check_labels(test_items or [], classes, "test_items")
    if is_backbone(config.arch):  # a pretrained backbone of backbones.py: the frozen-feature recipe
        from .head_training import train_feature_head

        return train_feature_head(
            items,
            config,
            out_path,
            device=device,
            test_items=test_items,
            classes=classes,
            groups=groups,
            fingerprint=fingerprint or _fingerprint(items),
            emit=emit,
            stop=stop,
            started=started,
            outliers=outliers,
        )
    train_idx, valid_idx = stratified_split([label for _, label in items], config.valid_pct, config.seed)

    body_state, weights_source = _pretrained_body(config)
    from .network import create_network

    model = create_network(config.arch, len(classes), body_state)
    stage_sizes = _stage_batch_sizes(config, len(train_idx))
    stage_dls = [
        _dataloaders(items, train_idx, valid_idx, classes, size, stage_sizes[stage], config, device)
        for stage, size in enumerate(config.sizes)
    ]
    plan = None
    if config.budget_s:
        plan = plan_for_budget(
            model, stage_dls, config, device, len(test_items or []), spent_s=time.monotonic() - started
        )
        config = dataclasses.replace(config, epochs=plan.epochs)
        emit({"event": "plan", "stages": config.stages, "fraction": 0.0, **plan.to_dict()})
    tracker = ProgressTracker(emit, stop, config, stage_sizes, len(train_idx))
    stages: list[StageSummary] = []
    learner = None
    with tempfile.TemporaryDirectory(prefix="semcls-") as workdir:
        for stage, size in enumerate(config.sizes):
            if plan and stage:
                before = config.epochs
                config = replan_config(
                    plan, config, stages, stage, budget_left=plan.budget_s - (time.monotonic() - started)
                )
                tracker.config = config
                if config.epochs != before:
                    emit({"event": "plan", "stages": config.stages, "fraction": tracker.fraction, **plan.to_dict()})
            dls = stage_dls[stage]
            if learner is None:
                learner = _make_learner(dls, model, items, train_idx, classes, config, device, workdir, tracker)
            else:
                learner.dls = dls
            stages.append(_fit_stage(learner, stage, size, config, body_state is not None, tracker))

    if config.recalibrate_bn:
        recalibrate_batchnorm(
            learner.model, [items[i][0] for i in train_idx], config.sizes[-1], device, contrast=config.contrast
        )
    learner.model.eval()
    tracker.emit_simple("evaluating", TRAINING_SHARE)
    calibration, evaluation = _calibrate_and_evaluate(
        learner.model, items, valid_idx, test_items, classes, config.sizes[-1], device, config.contrast
    )
    duration = time.monotonic() - started
    pretrained = {"source": "file", "file": os.path.basename(weights_source)} if weights_source else None
    metadata = metadata_for(
        config,
        classes,
        stages,
        calibration,
        evaluation,
        fingerprint or _fingerprint(items),
        pretrained,
        device,
        duration,
        len(train_idx),
        len(valid_idx),
    )
    metadata["budget"] = {**plan.to_dict(), "used_s": duration} if plan else None
    from .artifact import save_artifact

    sha256 = save_artifact(out_path, learner.model.state_dict(), metadata)
    tracker.emit_simple("done", 1.0, artifact_path=os.fspath(out_path), sha256=sha256)
    return TrainResult(
        os.fspath(out_path), metadata, evaluation, stages, duration, str(device), sha256, learner=learner
    )


# ---------------------------------------------------------------- runtime


def _prepare_runtime(config: TrainConfig):
    """Seed everything, pick the device, set CPU threads; returns torch.device."""
    import torch
    from fastai.torch_core import set_seed

    set_seed(config.seed, reproducible=True)
    from .engine import select_device

    device = select_device(config.device)
    if device.type == "cpu":
        threads = config.num_threads or default_cpu_threads()
        torch.set_num_threads(threads)
        log.info("training on CPU with %d torch threads", threads)
    return device


def default_cpu_threads() -> int:
    """Every core this process may run on: a training run owns the host's cores while it runs (a
    worker's second pool process that classifies uploads meanwhile takes its share from the OS).
    Sizing by the cores busy at the start gave a whole run one thread when an upload batch happened
    to be classified at that moment."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _use_channels_last(config: TrainConfig, device) -> bool:
    return config.channels_last if config.channels_last is not None else device.type == "cuda"


def _num_workers(config: TrainConfig, device) -> int:
    if config.num_workers is not None:
        return config.num_workers
    return min(8, os.cpu_count() or 1) if device.type == "cuda" else 0


def _pretrained_body(config: TrainConfig):
    """Local ImageNet weights or None; offline this never downloads."""
    if not config.pretrained:
        return None, None
    from .network import load_pretrained_state

    state, source = load_pretrained_state(config.arch, config.weights_path)
    if state is None:
        log.warning(
            "pretrained=True but no local ImageNet weights for %s (set weights_path or %s, "
            "or place them in the torch hub cache); training FROM SCRATCH",
            config.arch,
            "SEM_PRETRAINED_WEIGHTS",
        )
    else:
        log.info("using pretrained weights from %s", source)
    return state, source


# ---------------------------------------------------------------- data


def _check_labels(items, classes, name: str) -> None:
    unknown = sorted({label for _, label in items} - set(classes))
    if unknown:
        raise ValueError(f"{name} have labels not in classes: {unknown}")


# A one-cycle schedule needs optimiser steps, not epochs: on a small data set the
# configured batch size shrinks so each epoch still takes this many steps...
MIN_STEPS_PER_EPOCH = 8
# ...but not below this, where BatchNorm statistics get too noisy.
MIN_ADAPTED_BATCH = 8


def _stage_batch_sizes(config: TrainConfig, n_train: int) -> list[int]:
    """Configured per-stage batch size, adapted to the data set size, and capped so
    every epoch has >= 1 full batch (fastai drops the last partial training batch)."""
    cap = max(MIN_ADAPTED_BATCH, n_train // MIN_STEPS_PER_EPOCH)
    return [max(1, min(bs, cap, n_train)) for bs in config.batch_sizes]


def _dataloaders(items, train_idx, valid_idx, classes, size, batch_size, config, device):
    from fastai.vision.all import (
        CategoryBlock,
        DataBlock,
        IndexSplitter,
        IntToFloatTensor,
        ItemGetter,
        Normalize,
        TransformBlock,
        aug_transforms,
    )

    from .fastai_transforms import LoadGrey, SemCropResize

    loader, crop = LoadGrey(size, config.contrast), SemCropResize(size, config.crop_scale)
    if config.augmentation == "fastai":
        augment = aug_transforms()  # the reference recipe's defaults
    else:
        augment = aug_transforms(
            do_flip=True,
            flip_vert=True,  # flip_vert adds the dihedral group: 90-degree turns
            max_rotate=MAX_ROTATE_DEGREES,
            min_zoom=1.0,
            max_zoom=config.max_zoom,
            max_lighting=config.max_lighting,
            max_warp=0.0,
            pad_mode="reflection",
        )
    block = DataBlock(
        blocks=(
            TransformBlock(type_tfms=loader, batch_tfms=IntToFloatTensor),
            CategoryBlock(vocab=classes, sort=False),
        ),
        get_x=ItemGetter(0),
        get_y=ItemGetter(1),
        splitter=IndexSplitter(valid_idx),
        item_tfms=[crop],
        batch_tfms=[*augment, Normalize.from_stats(transforms.NORMALISE_MEAN, transforms.NORMALISE_STD)],
    )
    common = dict(
        bs=batch_size,
        num_workers=_num_workers(config, device),
        device=device,
        val_bs=max(batch_size, 32),
        pin_memory=device.type == "cuda",
    )
    if config.imbalance == "weighted_sampler":
        counts = Counter(label for _, label in items)
        weights = np.array([1.0 / counts[label] for _, label in items])
        return block.weighted_dataloaders(items, weights, **common)
    return block.dataloaders(items, **common)


def _class_weights(items, train_idx, classes) -> list[float]:
    """Inverse-frequency weights, mean 1 over the classes present in training."""
    counts = Counter(items[i][1] for i in train_idx)
    raw = [len(train_idx) / (len(counts) * counts[c]) if counts[c] else 0.0 for c in classes]
    return raw


# ---------------------------------------------------------------- learner


def _make_learner(dls, model, items, train_idx, classes, config, device, workdir, tracker):
    import torch
    from fastai.vision.all import CrossEntropyLossFlat, Learner, ProgressCallback, accuracy
    from fastai.vision.learner import default_split

    weight = None
    if config.imbalance in ("weighted_loss", "sqrt_weighted_loss"):
        power = 0.5 if config.imbalance == "sqrt_weighted_loss" else 1.0
        weights = [w**power for w in _class_weights(items, train_idx, classes)]
        weight = torch.tensor(weights, dtype=torch.float32, device=device)
    loss = CrossEntropyLossFlat(weight=weight, label_smoothing=config.label_smoothing)
    # Two parameter groups (body, head), as vision_learner makes them: freeze() then trains only the
    # head (and BatchNorm), and slice(lr/100, lr) gives the pretrained body the smaller rate.
    learner = Learner(
        dls,
        model,
        loss_func=loss,
        metrics=[accuracy],
        wd=WEIGHT_DECAY,
        path=workdir,
        cbs=[ProgressEventsCallback(tracker)],
        splitter=default_split,
    )
    if ProgressCallback in [type(cb) for cb in learner.cbs]:
        learner.remove_cb(ProgressCallback)  # no notebook/terminal bars inside workers
    learner.logger = lambda *args, **kwargs: None
    if _use_channels_last(config, device):
        learner.model = learner.model.to(memory_format=torch.channels_last)
    if device.type == "cuda":  # mixed precision: half the memory, faster on tensor cores
        learner.to_fp16()
    return learner


def _fit_stage(learner, stage, size, config, pretrained_used, tracker) -> StageSummary:
    """One progressive-resizing stage; returns its summary."""
    if pretrained_used and config.freeze_first_stage and stage == 0:
        learner.freeze()
    else:
        learner.unfreeze()
    lr = config.lrs[stage]
    if config.lr_find:
        with learner.removed_cbs(learner.cbs.filter(lambda cb: isinstance(cb, ProgressEventsCallback))):
            suggestion = learner.lr_find(show_plot=False)
        lr = float(suggestion.valley)
    lr_arg = slice(lr / 100, lr) if pretrained_used and stage > 0 else lr
    tracker.start_stage(stage, size, len(learner.dls.train))
    best = BestWeights(restore=config.select_best_epoch)
    stage_started = time.monotonic()
    learner.fit_one_cycle(config.epochs[stage], lr_arg, cbs=[best])
    record = stage_summary(
        stage,
        size,
        tracker.epoch_results,
        best_epoch=best.best_epoch,
        best_valid_loss=finite(best.best_loss),
        duration_s=time.monotonic() - stage_started,
        input_shape=tracker.stage_input_shape,
        lr=lr,
        batch_size=learner.dls.train.bs,
    )
    tracker.end_stage(record)
    return record


# ---------------------------------------------------------------- after training


def recalibrate_batchnorm(model, paths, size, device, batch_size: int = 32, contrast: str = "none") -> None:
    """Re-estimate every BatchNorm's running mean and variance as a plain average over the training
    images at the eval preset (no augmentation), so that eval-mode statistics match the images the
    model will see; the momentum-averaged statistics of a short from-scratch run lag the weights."""
    import torch

    from .engine import predict_logits_for_paths

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or not paths:
        return
    saved = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over all batches
    model.eval()
    for norm in norms:
        norm.train()
    try:
        predict_logits_for_paths(
            model, paths, size, device=device, batch_size=batch_size, channels_last=False, contrast=contrast
        )
    finally:
        for norm, momentum in zip(norms, saved):
            norm.momentum = momentum
        model.eval()


def _calibrate_and_evaluate(model, items, valid_idx, test_items, classes, size, device, contrast="none"):
    """Temperature on validation logits; evaluation of the calibrated model on
    the test items (else the validation set) through the engine's code path."""
    from .calibration import calibration_report, softmax
    from .engine import predict_logits_for_paths
    from .metrics import evaluate
    from .network import fold_batchnorm

    model = fold_batchnorm(model)  # the engine's model, so the evaluation sees what production will
    index = {name: i for i, name in enumerate(classes)}
    valid_paths = [items[i][0] for i in valid_idx]
    valid_labels = np.array([index[items[i][1]] for i in valid_idx])
    valid_logits = predict_logits_for_paths(
        model, valid_paths, size, device=device, channels_last=False, contrast=contrast
    )
    calibration = calibration_report(valid_logits, valid_labels)
    if test_items:
        split = "test"
        logits = predict_logits_for_paths(
            model, [p for p, _ in test_items], size, device=device, channels_last=False, contrast=contrast
        )
        y_true = [label for _, label in test_items]
    else:
        split, logits, y_true = "valid", valid_logits, [items[i][1] for i in valid_idx]
    evaluation = evaluate(y_true, softmax(logits, calibration["temperature"]), classes)
    evaluation["split"] = split
    evaluation["calibration"] = calibration
    return calibration, evaluation


def _fingerprint(items) -> str:
    from .fingerprint import fingerprint_items

    return fingerprint_items(items)


def _derivatives_for_raw(items, test_items, config):
    """Raw instrument files -> cached 256-px derivatives (bar cropped), once."""
    from .preprocess import prepare_raw

    cache = Path(config.derivative_cache or tempfile.mkdtemp(prefix="semcls-derivatives-"))
    cache.mkdir(parents=True, exist_ok=True)

    def convert(pairs):
        converted = []
        for path, label in pairs:
            key = hashlib.sha256(f"{os.path.abspath(path)}:{os.path.getmtime(path)}".encode()).hexdigest()[:24]
            target = cache / f"{key}.png"
            if not target.exists():
                prepare_raw(path).save(target)
            converted.append((str(target), label))
        return converted

    return convert(items), (convert(test_items) if test_items else test_items)
