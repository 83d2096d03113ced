"""Network construction shared by training and inference.

torchvision body + fastai head (concat pooling, BN, dropout, two linear
layers), i.e. what fastai's ``vision_learner`` builds, but created here so that
(a) inference rebuilds it without a Learner and (b) pretrained weights come
only from local files: nothing here can trigger a download.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

# Env var naming a local ImageNet weights file (a torchvision state dict).
WEIGHTS_ENV = "SEM_PRETRAINED_WEIGHTS"


def create_network(arch: str, n_classes: int, body_state: dict | None = None):
    import torch.nn as nn
    from fastai.torch_core import apply_init
    from fastai.vision.learner import create_body, create_head, num_features_model

    timm_name = _timm_name(arch)
    if timm_name:
        body = _timm_body(timm_name, body_state)
        n_features = body.model.num_features
    else:
        backbone = _torchvision_model(arch)
        if body_state is not None:
            backbone.load_state_dict(body_state)
        body = create_body(
            backbone, n_in=3, pretrained=body_state is not None, cut=-2 if arch.startswith("res") else None
        )
        n_features = num_features_model(nn.Sequential(*body.children()))
    head = create_head(n_features, n_classes)
    apply_init(head, nn.init.kaiming_normal_)
    return nn.Sequential(body, head)


def fold_batchnorm(model):
    """An inference copy of an eval-mode model with each BatchNorm folded into the convolution
    before it (torch.fx): 1.3-1.5x faster on CPU (bench/bench_inference.py), logits equal to ~1e-3.
    An architecture that torch.fx cannot trace is returned unchanged, and says so."""
    import torch.fx
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model)  # works on a deep copy
    except (torch.fx.proxy.TraceError, TypeError, NotImplementedError, RuntimeError) as error:
        log.warning("cannot fold BatchNorm into the convolutions of this model (%s); using it as it is", error)
        return model


TIMM_PREFIX = "timm/"


def _timm_name(arch: str) -> str | None:
    """The timm model name for ``timm/NAME``, or for a plain name torchvision does not know when timm
    is installed; None for torchvision architectures."""
    import torchvision

    if arch.startswith(TIMM_PREFIX):
        return arch[len(TIMM_PREFIX) :]
    if arch in torchvision.models.list_models(module=torchvision.models):
        return None
    try:
        import timm
    except ImportError:
        return None
    return arch if timm.is_model(arch) else None


def _timm_body(name: str, body_state: dict | None):
    """A timm network giving feature maps, as fastai's create_timm_model builds it; pretrained
    weights only from a local state dict."""
    try:
        import timm
    except ImportError as error:
        raise ValueError(f"architecture {name!r} needs timm: pip install timm") from error
    if not timm.is_model(name):
        raise ValueError(f"unknown timm architecture {name!r}")
    from fastai.vision.learner import TimmBody

    model = timm.create_model(name, pretrained=False, num_classes=0)
    if body_state is not None:
        missing, _unexpected = model.load_state_dict(body_state, strict=False)  # the file's classifier is unused
        if missing:
            raise ValueError(f"the pretrained weights do not fit {name}: {len(missing)} missing tensors")
    return TimmBody(model, pretrained=body_state is not None)


def _torchvision_model(arch: str):
    import torchvision

    try:
        return torchvision.models.get_model(arch, weights=None)
    except ValueError as error:
        raise ValueError(
            f"unknown architecture {arch!r}; use a torchvision name such as resnet18, "
            f"resnet34 or resnet50, or a timm name (timm/NAME) with timm installed"
        ) from error


def find_pretrained_weights(arch: str, weights_path: str | None = None) -> str | None:
    """Local ImageNet weights for ``arch``: the configured file, the env var,
    else torchvision's file name in the torch hub cache. Never downloads."""
    for candidate in (weights_path, os.environ.get(WEIGHTS_ENV)):
        if candidate:
            if Path(candidate).is_file():
                return candidate
            log.warning("pretrained weights file %s does not exist", candidate)
    try:
        import torch
        import torchvision

        weights = torchvision.models.get_model_weights(arch).DEFAULT
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
        return str(cached) if cached.is_file() else None
    except (ValueError, AttributeError, KeyError):
        return None


def load_pretrained_state(arch: str, weights_path: str | None = None) -> tuple[dict | None, str | None]:
    """(state dict, source path) of local ImageNet weights, or (None, None)."""
    import torch

    path = find_pretrained_weights(arch, weights_path)
    if path is None:
        return None, None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unreadable file: train from scratch rather than crash
        log.warning("cannot read pretrained weights %s (%s); training from scratch", path, error)
        return None, None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state, path
