"""Where the model looked: a Grad-CAM heat map of one image for one artifact (pure ML, no Django).

Grad-CAM (Selvaraju et al., ICCV 2017) through the maintained ``grad-cam`` package: the target layer's
activations weighted by the spatial mean of the class score's gradients, ReLU, scaled to 0..1 per view.

Target layer (``target_layer``):

- the frozen-feature head (EfficientNet-Lite, ``feature_head.py``): the output of body block 3, 14 x 14
  for a 224 px input. The head reads the body in four places: the pooled ``conv_head`` output and the
  mean and standard deviation of blocks 3, 4 and 5. A CAM at ``conv_head`` (or the last block) would
  explain only the pooled path and miss the texture statistics, which carry most of the decision; block
  3's output is the last layer that every path goes through, so its gradients account for all of them,
  at twice ``conv_head``'s 7 x 7 resolution.
- a fine-tuned torchvision CNN (fastai body + head, ``network.py``: resnet and the like): the body's
  last convolutional stage (``layer4`` of a resnet).
- anything else (a timm body inside fastai): refused with ``SaliencyError``.

Views: an artifact with ``tta_views`` > 1 averages the features of the dihedral views. The views are
explained as one batch by the same network with ``tta_views`` = 1, each view's CAM is mapped back by the
inverse dihedral transform, and the CAMs are averaged (``grad-cam``'s own augmentation smoothing does the
same with flips). For the linear head alone this is exact (the averaged model's logits are the mean of
the views' logits); the class-means part of the mixture (feature_head.py) is a softmax of cosine
similarities, so with it the per-view explanation approximates the averaged model's.

The CAM covers what the model classifies: the centred square of the derivative (the eval preset of
``transforms``). ``heat_map_png`` places it there on a transparent canvas of the derivative's size.
"""

from __future__ import annotations

import io
import os
import threading
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import transforms

# The PNG's long side at most: the viewer stretches it over the image, and the CAM itself is 14 x 14
# (feature head) or 7 x 7 (resnet) cells, so more pixels would only add bytes.
PNG_MAX_SIDE = 1024
COLOUR_MAP = "turbo"


class SaliencyError(Exception):
    """The artifact cannot be explained (an architecture without a supported target layer)."""


@dataclass
class Explanation:
    cam: np.ndarray  # float32 (S, S) in 0..1 over the model's input square
    class_index: int
    class_name: str
    target_layer: str
    views: int
    seconds: float


@dataclass
class Explainer:
    """An artifact's network (BatchNorm not folded: the hooks need the named layers) and its target layer."""

    model: object
    metadata: dict
    layer: object
    layer_name: str
    views: int


def make_explainer(model, metadata: dict, views: int = 1, layer=None, layer_name: str = "") -> Explainer:
    """Prepare ``model`` (eval mode, weights frozen) for Grad-CAM at its target layer (or ``layer``).

    The layer's output becomes a leaf that requires gradients: backward then runs only from the class
    score down to it, with no weight gradients and nothing recorded below it (the high-resolution
    early blocks are most of the cost)."""
    if layer is None:
        layer, layer_name = target_layer(model)
    model.eval().requires_grad_(False)
    if hasattr(model, "tta_views"):
        model.tta_views = 1  # the views go through as a batch, each explained (module docstring)
    layer.register_forward_hook(lambda _module, _inputs, output: output.detach().requires_grad_(True))
    return Explainer(model, metadata, layer, layer_name or type(layer).__name__, views)


def target_layer(model) -> tuple[object, str]:
    """(module, its name) whose output Grad-CAM weighs; SaliencyError for an unsupported network."""
    import torch.nn as nn

    from .feature_head import FeatureHeadClassifier

    if isinstance(model, FeatureHeadClassifier):
        return model.features.body.blocks[3], "features.body.blocks.3"
    if isinstance(model, nn.Sequential) and isinstance(model[0], nn.Sequential):
        stages = [index for index, stage in enumerate(model[0]) if _has_conv(stage)]
        if stages:
            return model[0][stages[-1]], f"0.{stages[-1]}"
    raise SaliencyError(
        f"heat maps support the EfficientNet feature head and fastai/torchvision CNNs (resnet, ...), "
        f"not {type(model).__name__} networks"
    )


def _has_conv(module) -> bool:
    import torch.nn as nn

    return any(isinstance(child, nn.Conv2d) for child in module.modules())


def load_explainer(path, sha256: str | None = None) -> Explainer:
    """The artifact's own network, prepared for Grad-CAM: not the engine's copy, whose BatchNorm is
    folded into the convolutions (a traced graph without the named layers the hooks need)."""
    from .artifact import build_model, load_artifact

    artifact = load_artifact(path, sha256)
    model = build_model(artifact.metadata)
    model.load_state_dict(artifact.network_state())  # the out-of-scope bank is not the network's
    return make_explainer(model, artifact.metadata, int(artifact.metadata.get("tta_views") or 1))


_lock = threading.Lock()
_cached: dict = {"key": None, "explainer": None}


def get_explainer(path, sha256: str | None = None) -> Explainer:
    """One explainer per worker process, reloaded when the artifact changes (as ``engine.get_engine``)."""
    key = (os.path.abspath(os.fspath(path)), sha256)
    with _lock:
        if _cached["key"] != key:
            _cached.update(key=None, explainer=load_explainer(path, sha256))
            _cached["key"] = key
        return _cached["explainer"]


def explain_path(explainer: Explainer, source, class_index: int | None = None) -> Explanation:
    """The heat map of one image file (decoded with the eval preset, as the engine classifies it)."""
    metadata = explainer.metadata
    contrast = metadata.get("normalisation", {}).get("contrast", "none")
    array = transforms.eval_array(source, int(metadata["input_size"]), contrast)
    return explain_array(explainer, array, class_index)


def explain_array(explainer: Explainer, array: np.ndarray, class_index: int | None = None) -> Explanation:
    """Grad-CAM of a uint8 (S, S) model input for ``class_index``; by default the class the model
    predicts (one more forward pass: a caller that knows the prediction passes it)."""
    started = time.perf_counter()
    batch = _view_batch(explainer, array)
    index = predicted_class(explainer.model, batch) if class_index is None else int(class_index)
    cams = grad_cam(explainer.model, explainer.layer, batch, index)
    return Explanation(
        cam=_rescale(np.mean(undo_dihedral(cams), axis=0)),
        class_index=index,
        class_name=explainer.metadata["classes"][index],
        target_layer=explainer.layer_name,
        views=len(cams),
        seconds=time.perf_counter() - started,
    )


def predicted_class(model, batch) -> int:
    """The prediction from the mean of the views' logits (module docstring); the worker passes the stored
    prediction's class instead when there is one."""
    import torch

    with torch.no_grad():
        return int(model(batch).float().mean(0).argmax())


def _view_batch(explainer: Explainer, array: np.ndarray):
    import torch

    from .feature_head import dihedral_views

    normalisation = explainer.metadata.get("normalisation", {})
    mean = tuple(normalisation.get("mean", transforms.NORMALISE_MEAN))
    std = tuple(normalisation.get("std", transforms.NORMALISE_STD))
    image = transforms.normalise_batch(torch.from_numpy(np.array(array, dtype=np.uint8))[None], mean, std)
    return torch.cat(dihedral_views(image, explainer.views)) if explainer.views > 1 else image


def grad_cam(model, layer, batch, class_index: int) -> np.ndarray:
    """(N, H, W) CAMs in 0..1 of each image of ``batch`` for ``class_index`` (the ``grad-cam`` package)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with GradCAM(model=model, target_layers=[layer]) as cam:
        return cam(input_tensor=batch, targets=[ClassifierOutputTarget(class_index)] * len(batch))


def undo_dihedral(cams: np.ndarray) -> list[np.ndarray]:
    """Map each view's CAM back onto the original image: view 2k is rot90^k, view 2k+1 that mirrored
    (``feature_head.dihedral_views``); the inverse mirrors first, then turns back."""
    restored = []
    for index, cam in enumerate(cams):
        if index % 2:
            cam = cam[:, ::-1]
        restored.append(np.rot90(cam, -(index // 2)))
    return restored


def _rescale(cam: np.ndarray) -> np.ndarray:
    """0..1 (the average of per-view maps each in 0..1 rarely reaches 1); an all-zero CAM stays zero."""
    cam = np.asarray(cam, dtype=np.float32)
    low, high = float(cam.min()), float(cam.max())
    return (cam - low) / (high - low) if high - low > 1e-6 else np.zeros_like(cam)


def heat_map_png(cam: np.ndarray, size: tuple[int, int], max_side: int = PNG_MAX_SIDE) -> bytes:
    """An RGBA PNG of the derivative's aspect (``size`` = its width, height; at most ``max_side``):
    the colour-mapped CAM over the centred square the model classified, its opacity rising with the
    CAM so that what the model ignored stays see-through; transparent outside the square."""
    width, height = _fit(size, max_side)
    side = min(width, height)
    square = Image.fromarray(_colour(cam), mode="RGBA").resize((side, side), Image.Resampling.BILINEAR)
    canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    canvas.paste(square, ((width - side) // 2, (height - side) // 2))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _colour(cam: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    values = np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0)
    rgba = colormaps[COLOUR_MAP](values, bytes=True)
    rgba[..., 3] = np.round(255 * values).astype(np.uint8)  # what the model ignored stays see-through
    return rgba
