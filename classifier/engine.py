"""Batched inference from an artifact, without fastai's per-item overhead.

One engine per process (``get_engine``): the artifact is verified and loaded
once (BatchNorm folded into the convolutions: by torch.fx for the fine-tuned torchvision architectures,
by the backbone's declared convolution/BatchNorm pairs for a pretrained backbone's feature head, whose
TF-padded convolutions torch.fx cannot trace; ``_folded``), then batches go through the eval
preset of ``transforms`` and the model under ``torch.inference_mode()`` with
channels-last tensors. Returns calibrated
probability vectors plus per-image uncertainty (confidence, margin, entropy).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import transforms
from .backbones import is_backbone
from .calibration import softmax


@dataclass
class ImagePrediction:
    probabilities: list[float]
    top_class: str
    top_index: int
    confidence: float
    margin: float
    entropy: float
    # The head's input (standardised features) from the same forward pass, for similarity search and
    # out-of-scope scores; None for fine-tuned architectures. Not part of to_dict().
    embedding: np.ndarray | None = None
    # Distance to the training embeddings (classifier.ood) and whether it is past the artifact's
    # threshold; None / False for an artifact without a detector (fine-tuned architectures, older ones).
    ood_score: float | None = None
    out_of_scope: bool = False

    def to_dict(self) -> dict:
        return {
            "probabilities": self.probabilities,
            "top_class": self.top_class,
            "top_index": self.top_index,
            "confidence": self.confidence,
            "margin": self.margin,
            "entropy": self.entropy,
            "ood_score": self.ood_score,
            "out_of_scope": self.out_of_scope,
        }


def prediction_from_probabilities(probabilities: np.ndarray, classes: Sequence[str]) -> ImagePrediction:
    order = np.argsort(probabilities)[::-1]
    top = int(order[0])
    second = float(probabilities[order[1]]) if len(order) > 1 else 0.0
    clipped = np.clip(probabilities, 1e-12, 1.0)
    return ImagePrediction(
        probabilities=[float(p) for p in probabilities],
        top_class=classes[top],
        top_index=top,
        confidence=float(probabilities[top]),
        margin=float(probabilities[top]) - second,
        entropy=float(-(clipped * np.log(clipped)).sum()),
    )


def select_device(device: str | None = None):
    import torch

    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_logits(
    model,
    arrays: Iterable[np.ndarray],
    *,
    device,
    channels_last: bool = True,
    mean=transforms.NORMALISE_MEAN,
    std=transforms.NORMALISE_STD,
) -> np.ndarray:
    """Raw logits for one batch of uint8 (H, W) arrays of equal size."""
    return model_outputs(model, arrays, device=device, channels_last=channels_last, mean=mean, std=std)[0]


def model_outputs(
    model,
    arrays: Iterable[np.ndarray],
    *,
    device,
    channels_last: bool = True,
    mean=transforms.NORMALISE_MEAN,
    std=transforms.NORMALISE_STD,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(logits, embeddings) for one batch; embeddings only from a feature_head model, whose own
    ``logits_and_embedding`` gives both from one pass (its logits are not just the linear layer's)."""
    import torch

    batch = torch.from_numpy(np.stack(list(arrays))).to(device, non_blocking=True)
    inputs = transforms.normalise_batch(batch, mean, std)
    if channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        if not hasattr(model, "logits_and_embedding"):
            return model(inputs).float().cpu().numpy(), None
        logits, embeddings = model.logits_and_embedding(inputs)
        return logits.float().cpu().numpy(), embeddings.float().cpu().numpy()


def predict_logits_for_paths(
    model,
    paths: Sequence,
    size: int,
    *,
    device,
    batch_size: int = 32,
    channels_last: bool = True,
    mean=transforms.NORMALISE_MEAN,
    std=transforms.NORMALISE_STD,
    contrast: str = "none",
) -> np.ndarray:
    """Logits for files, decoded with the eval preset; used by training for
    calibration and evaluation so they see what the engine will see."""
    outputs = []
    for start in range(0, len(paths), batch_size):
        arrays = [transforms.eval_array(p, size, contrast) for p in paths[start : start + batch_size]]
        outputs.append(model_logits(model, arrays, device=device, channels_last=channels_last, mean=mean, std=std))
    n_out = outputs[0].shape[1] if outputs else 0
    return np.concatenate(outputs) if outputs else np.zeros((0, n_out), dtype=np.float32)


def _folded(model, arch: str, fold_traceable):
    """The model with BatchNorm folded into the convolutions: torch.fx for torchvision/fastai networks;
    for a pretrained backbone's feature head, the declared pairs (torch.fx cannot trace the TF-padded
    EfficientNet-Lite convolutions)."""
    if not is_backbone(arch):
        return fold_traceable(model)
    from .backbones import get_backbone
    from .feature_head import with_folded_batchnorm

    return with_folded_batchnorm(model, get_backbone(arch))


class Engine:
    """Inference for one artifact. Thread-safe for predictions (no mutable state)."""

    def __init__(
        self,
        model,
        metadata: dict,
        sha256: str,
        device,
        channels_last: bool = True,
        ood_bank=None,
        base_statistics=None,
        outlier_weight=None,
    ) -> None:
        self.model = model
        self.metadata = metadata
        self.sha256 = sha256
        self.device = device
        self.channels_last = channels_last
        self.classes: list[str] = list(metadata["classes"])
        self.input_size: int = int(metadata["input_size"])
        self.temperature: float = float(metadata.get("temperature") or 1.0)
        normalisation = metadata.get("normalisation", {})
        self.mean = tuple(normalisation.get("mean", transforms.NORMALISE_MEAN))
        self.std = tuple(normalisation.get("std", transforms.NORMALISE_STD))
        self.contrast: str = normalisation.get("contrast", "none")  # artifacts before it existed: none
        # A head refit's base model's (feature mean, feature scale): its stored embeddings are the refit's
        # features standardised with these (predict_base_embeddings).
        self.base_statistics = base_statistics
        self.ood = None
        if ood_bank is not None and metadata.get("out_of_scope"):
            from .ood import OutOfScopeScorer

            self.ood = OutOfScopeScorer(ood_bank, metadata["out_of_scope"], outlier_weight)

    @classmethod
    def from_artifact(
        cls,
        path,
        expected_sha256: str | None = None,
        device: str | None = None,
        channels_last: bool = True,
        fold_batchnorm: bool = True,
    ) -> Engine:
        import torch

        from .artifact import build_model, load_artifact
        from .network import fold_batchnorm as fold
        from .ood import BANK_KEY, OUTLIER_WEIGHT_KEY

        artifact = load_artifact(path, expected_sha256)
        model = build_model(artifact.metadata)
        model.load_state_dict(artifact.network_state())
        extras = artifact.extra_tensors()
        torch_device = select_device(device)
        model = model.to(torch_device).eval()
        if fold_batchnorm:
            model = _folded(model, artifact.metadata["arch"], fold)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        bank = extras[BANK_KEY].float().numpy() if BANK_KEY in extras else None
        outlier_weight = extras[OUTLIER_WEIGHT_KEY].float().numpy() if OUTLIER_WEIGHT_KEY in extras else None
        return cls(
            model,
            artifact.metadata,
            artifact.sha256,
            torch_device,
            channels_last,
            ood_bank=bank,
            base_statistics=base_statistics(extras),
            outlier_weight=outlier_weight,
        )

    def predict_logits(self, arrays: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Uncalibrated logits for preprocessed uint8 arrays (input_size square)."""
        chunks = [
            model_logits(
                self.model,
                arrays[i : i + batch_size],
                device=self.device,
                channels_last=self.channels_last,
                mean=self.mean,
                std=self.std,
            )
            for i in range(0, len(arrays), batch_size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, len(self.classes)), np.float32)

    def predict_paths(self, paths: Sequence, batch_size: int = 32) -> list[ImagePrediction]:
        """Decode (reduced-size where possible) and classify files in batches."""
        predictions: list[ImagePrediction] = []
        for start in range(0, len(paths), batch_size):
            arrays = [
                transforms.eval_array(p, self.input_size, self.contrast) for p in paths[start : start + batch_size]
            ]
            predictions.extend(self._from_arrays(arrays))
        return predictions

    def predict_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> list[ImagePrediction]:
        """Classify decoded images (any mode; greyscale conversion as in training)."""
        predictions: list[ImagePrediction] = []
        for start in range(0, len(images), batch_size):
            arrays = [self._image_array(img) for img in images[start : start + batch_size]]
            predictions.extend(self._from_arrays(arrays))
        return predictions

    def _image_array(self, img: Image.Image) -> np.ndarray:
        from .imageio import to_grey8

        grey = to_grey8(img)
        factor = min(grey.size) // self.input_size  # same cheap reduction as load_grey8(reduce_to=...)
        if factor >= 2:
            grey = grey.reduce(factor)
        grey = transforms.adjust_contrast(grey, self.contrast)
        return transforms.to_uint8_array(transforms.eval_crop_resize(grey, self.input_size))

    def own_statistics(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(feature mean, feature scale) its embeddings are standardised with; None for a network that
        returns no embeddings (a fine-tuned architecture)."""
        if not hasattr(self.model, "feature_mean"):
            return None
        return tuple(getattr(self.model, name).float().cpu().numpy() for name in ("feature_mean", "feature_scale"))

    def predict_embeddings(self, embeddings: np.ndarray, statistics) -> list[ImagePrediction]:
        """Predictions from stored embeddings, (N, D) features standardised with ``statistics`` (mean, scale)
        by a model with this body (a head refit's base, or this model itself): to float16 rounding what
        decoding and running the body gives, without either."""
        import torch

        mean, scale = statistics
        raw = torch.from_numpy(np.asarray(embeddings, np.float32) * scale + mean).to(self.device)
        with torch.inference_mode():
            logits, embedded = self.model.head_outputs(raw)
        return self._predictions(logits.float().cpu().numpy(), embedded.float().cpu().numpy())

    def predict_base_embeddings(self, embeddings: np.ndarray) -> list[ImagePrediction]:
        """Predictions of a head refit from the embeddings its base model stored: the refit kept the base's
        body, so they are its features. Only for an engine with ``base_statistics``."""
        if self.base_statistics is None:
            raise ValueError("this model is not a head refit: it has no base embeddings to reuse")
        return self.predict_embeddings(embeddings, self.base_statistics)

    def _from_arrays(self, arrays: list[np.ndarray]) -> list[ImagePrediction]:
        logits, embeddings = model_outputs(
            self.model, arrays, device=self.device, channels_last=self.channels_last, mean=self.mean, std=self.std
        )
        return self._predictions(logits, embeddings)

    def _predictions(self, logits: np.ndarray, embeddings: np.ndarray | None) -> list[ImagePrediction]:
        """Calibrated predictions, with each image's embedding and out-of-scope score when there are embeddings."""
        predictions = [prediction_from_probabilities(p, self.classes) for p in softmax(logits, self.temperature)]
        if embeddings is None:
            return predictions
        scores, flags = [None] * len(predictions), [False] * len(predictions)
        if self.ood:
            raw = self._raw_features(embeddings)
            scores = self.ood.scores(raw)
            flags = self.ood.out_of_scope(scores, self.ood.outlier_scores(raw))
        for prediction, embedding, score, flag in zip(predictions, embeddings, scores, flags):
            prediction.embedding = embedding
            prediction.ood_score = None if score is None else float(score)
            prediction.out_of_scope = bool(flag)
        return predictions

    def _raw_features(self, embeddings: np.ndarray) -> np.ndarray:
        """The body's features from the standardised embeddings: what the out-of-scope bank holds."""
        mean, scale = self.own_statistics()
        return embeddings * scale + mean


# A head refit's artifact keeps its base model's feature statistics beside the network (head_refit.py;
# artifact.EXTRA_TENSOR_PREFIXES): with them the base's stored embeddings are the refit's features.
BASE_MEAN_KEY = "refit_of.feature_mean"
BASE_SCALE_KEY = "refit_of.feature_scale"


def base_statistics(extra_tensors: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """(feature mean, feature scale) of a refit's base, from its artifact's extra tensors; None otherwise."""
    if BASE_MEAN_KEY not in extra_tensors:
        return None
    return tuple(extra_tensors[key].float().numpy() for key in (BASE_MEAN_KEY, BASE_SCALE_KEY))


_cache_lock = threading.Lock()
_cached: dict = {"key": None, "engine": None}


def get_engine(path, sha256: str | None = None) -> Engine:
    """The process-wide engine for ``path``; reloaded when path or sha changes."""
    import os

    key = (os.path.abspath(os.fspath(path)), sha256)
    with _cache_lock:
        if _cached["key"] != key or _cached["engine"] is None:
            _cached["engine"] = Engine.from_artifact(path, expected_sha256=sha256)
            _cached["key"] = key
        return _cached["engine"]


def clear_engine_cache() -> None:
    with _cache_lock:
        _cached.update(key=None, engine=None)
