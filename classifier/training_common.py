"""What every training recipe shares: the result type, the validation split and the artifact's metadata.

Imported by train.py (fine-tuning with progressive resizing) and head_training.py (frozen features), so
neither imports the other's module at its top.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from . import transforms
from .run_records import StageSummary


@dataclass
class TrainResult:
    artifact_path: str
    metadata: dict
    evaluation: dict
    stages: list[StageSummary]  # one per stage, in order (run_records.py)
    duration_s: float
    device: str
    sha256: str = ""
    # Calibrated probabilities of the evaluated images (test, else validation), in classes' order.
    test_probabilities: Any = field(default=None, repr=False)
    # The fastai Learner of the run, for notebooks and tests; not serialised.
    learner: Any = field(default=None, repr=False)


def stratified_split(labels: list[str], valid_pct: float, seed: int) -> tuple[list[int], list[int]]:
    """Per-class shuffled split. Classes with one image stay in training; a
    class with two or more gives at least one to validation and keeps at
    least one for training."""
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    train_idx, valid_idx = [], []
    for label in sorted(by_class):
        indices = by_class[label][:]
        rng.shuffle(indices)
        n_valid = 0 if len(indices) < 2 else min(len(indices) - 1, max(1, round(len(indices) * valid_pct)))
        valid_idx += indices[:n_valid]
        train_idx += indices[n_valid:]
    if not valid_idx:
        raise ValueError("cannot make a validation set: every class has fewer than 2 images")
    return sorted(train_idx), sorted(valid_idx)


def _library_versions() -> dict:
    import fastai
    import PIL
    import sklearn
    import torch
    import torchvision

    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "fastai": fastai.__version__,
        "scikit-learn": sklearn.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
    }


def metadata_for(
    config,
    classes,
    stages,
    calibration,
    evaluation,
    fingerprint,
    pretrained: dict | None,
    device,
    duration,
    n_train,
    n_valid,
    backbone=None,
) -> dict:
    """The artifact's metadata. ``pretrained``: where the ImageNet weights came from (package, version,
    file, sha256, licence), or None; ``backbone``: a backbones.Backbone, whose input statistics apply."""
    from .artifact import FORMAT_VERSION

    return {
        "format_version": FORMAT_VERSION,
        "classes": list(classes),
        "input_size": config.sizes[-1],
        "normalisation": {
            "mean": list(backbone.mean if backbone else transforms.NORMALISE_MEAN),
            "std": list(backbone.std if backbone else transforms.NORMALISE_STD),
            "channels": transforms.CHANNELS,
            "greyscale_replicated": True,
            "contrast": config.contrast,
        },
        "arch": config.arch,
        "training_config": config.to_dict(),
        "history": stages,  # the key stored artifacts have always used
        "data_fingerprint": fingerprint,
        "n_train": n_train,
        "n_valid": n_valid,
        "library_versions": _library_versions(),
        "temperature": calibration["temperature"],
        "calibration": calibration,
        "evaluation": evaluation,
        "pretrained_used": pretrained is not None,
        "pretrained_source": pretrained["file"] if pretrained else None,
        "pretrained": pretrained,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": str(device),
        "duration_s": duration,
    }
