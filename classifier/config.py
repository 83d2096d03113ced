"""Training configuration: one dataclass, stored verbatim in every artifact."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .backbones import DEFAULT_BACKBONE

IMBALANCE_MODES = ("weighted_loss", "sqrt_weighted_loss", "weighted_sampler", "none")


@dataclass
class TrainConfig:
    """Progressive-resizing schedule and everything else a training run needs.

    Defaults follow the reference recipe (64 -> 128 -> 224 px); batch sizes
    shrink as images grow so memory per batch stays roughly constant.
    """

    # A pretrained backbone of backbones.py (the frozen-feature recipe, head_training.py), or a
    # torchvision/timm architecture fine-tuned with progressive resizing (train.py).
    arch: str = DEFAULT_BACKBONE
    sizes: tuple[int, ...] = (64, 128, 224)
    # Epochs per stage; with a budget, the shape that the planner scales to fit it (budget.py).
    epochs: tuple[int, ...] = (15, 10, 10)
    lrs: tuple[float, ...] = (3e-3, 1e-3, 5e-4)
    batch_sizes: tuple[int, ...] = (128, 64, 32)
    pretrained: bool = True
    weights_path: str | None = None
    # Wall-clock budget in seconds for the whole run (None: train exactly `epochs`).
    budget_s: float | None = None
    seed: int = 42
    valid_pct: float = 0.2
    # No class weights by default: inverse-frequency weights (50:1 with one rare image) made
    # the model collapse onto rare classes on real data (bench/RESULTS.md, ablation).
    imbalance: str = "none"
    lr_find: bool = False  # the CLI's --lr-find: pick each stage's rate with fastai's lr_find
    # Freeze the pretrained body for the first stage (only when weights were loaded).
    freeze_first_stage: bool = True
    label_smoothing: float = 0.0
    # Inverse L2 strength of the frozen-feature recipe's logistic regression (scikit-learn's C): 0.01
    # beat 0.03, 0.1 and 1 under grouped cross-validation on real images (bench/RESULTS.md).
    head_c: float = 0.01
    # Restore, per stage, the weights of the epoch with the lowest validation loss.
    select_best_epoch: bool = True
    # After training, re-estimate BatchNorm statistics on the training images at eval transforms.
    recalibrate_bn: bool = False
    # Train-time random crop: fraction of the image area kept, and aspect range.
    crop_scale: tuple[float, float] = (0.35, 1.0)
    max_zoom: float = 1.1
    max_lighting: float = 0.2
    # "sem": flips on both axes + dihedral, small rotations, zoom, brightness/contrast;
    # "fastai": fastai's default aug_transforms() (horizontal flips, warp), the reference recipe.
    augmentation: str = "sem"
    # Per-image contrast before the model (transforms.CONTRAST_MODES); stored in the artifact.
    contrast: str = "none"
    # None = automatic: 0 workers on CPU (decoding 256-px PNGs is cheaper than
    # process hand-off on 2 cores), several on CUDA.
    num_workers: int | None = None
    num_threads: int | None = None
    channels_last: bool | None = None  # None = on for CUDA
    device: str | None = None  # None = cuda when available
    # Inputs are raw instrument files: decode, crop the data bar and make
    # derivatives before training (the CLI sets this).
    raw_inputs: bool = False
    derivative_cache: str | None = None

    def __post_init__(self) -> None:
        self.sizes = tuple(int(s) for s in self.sizes)
        n = len(self.sizes)
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, kind in (("epochs", int), ("lrs", float), ("batch_sizes", int)):
            values = getattr(self, name)
            if _is_default(values, defaults[name]) and len(defaults[name]) > n:
                values = defaults[name][-n:]  # fewer stages than the default schedule: keep its last stages
            setattr(self, name, _per_stage(values, n, kind, name))
        self.crop_scale = tuple(float(v) for v in self.crop_scale)
        if self.imbalance not in IMBALANCE_MODES:
            raise ValueError(f"imbalance must be one of {IMBALANCE_MODES}, not {self.imbalance!r}")
        if self.augmentation not in ("sem", "fastai"):
            raise ValueError(f"augmentation must be 'sem' or 'fastai', not {self.augmentation!r}")
        if self.contrast not in ("none", "stretch"):
            raise ValueError(f"contrast must be 'none' or 'stretch', not {self.contrast!r}")
        if self.budget_s is not None:
            self.budget_s = float(self.budget_s)
            if not self.budget_s > 0:
                raise ValueError("budget_s must be a positive number of seconds")
        if not 0 < self.valid_pct < 1:
            raise ValueError("valid_pct must be between 0 and 1")
        if n == 0 or any(s < 16 for s in self.sizes):
            raise ValueError("sizes must be a non-empty list of sizes >= 16 px")

    @property
    def stages(self) -> int:
        return len(self.sizes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _is_default(values, default) -> bool:
    try:
        return tuple(values) == tuple(default)
    except TypeError:
        return False


def _per_stage(values, n: int, kind, name: str) -> tuple:
    """Accept one value for all stages or one per stage."""
    if isinstance(values, (int, float)):
        values = [values]
    values = [kind(v) for v in values]
    if len(values) == 1:
        values = values * n
    if len(values) != n:
        raise ValueError(f"{name}: expected 1 or {n} values (one per stage), got {len(values)}")
    return tuple(values)
