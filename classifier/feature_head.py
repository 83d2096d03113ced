"""The small-data model: a frozen ImageNet body, texture statistics and a linear head.

On a few hundred real micrographs, a head on frozen pretrained features generalises to unseen sources
better than fine-tuning the body (bench/RESULTS.md, "Pretrained backbone"; Kumar et al., ICLR 2022,
find the same out of distribution). The features are the body's pooled pre-logits plus the per-channel
mean and standard deviation of a few intermediate feature maps (texture statistics). They are
standardised with the training images' statistics, stored as buffers, so the whole classifier is one
torch module: the artifact stores its state dict and the engine runs it like any other network.

Dihedral views (the 8 rotations and flips; an SEM image has no "up") enlarge the training set, and at
inference their features are averaged (test-time augmentation), which the module does itself.

The answer is an equal mixture of two classifiers on those features: the linear head, and the cosine
similarity of the pooled features to each class's mean direction (a nearest-class-mean classifier, Mensink
et al., TPAMI 2013; SimpleShot, Wang et al. 2019). Under grouped cross-validation on real micrographs
(10 seeds) the mixture scored 0.568 accuracy / 0.373 macro recall against 0.537 / 0.325 for the linear head
alone: the class means do not chase the large series the way a discriminative head does
(bench/RESULTS.md, "Prototypes"). The module returns the mixture's log-probabilities as its logits, so a
temperature and the softmax downstream work unchanged.
"""

from __future__ import annotations

from .backbones import Backbone

VIEWS = 8  # the dihedral group: 4 rotations, each also mirrored
PROTOTYPE_WEIGHT = 0.5  # the class-mean classifier's share of the mixture
PROTOTYPE_SHARPNESS = 80.0  # cosine similarities times this are its logits (20 and 40 scored lower)
ABSENT = -1e4  # the logit of a class with no training image: never predicted
# The views of a batch go through the body channels-last, stacked (3x faster on CPU than a pass per view,
# bench/RESULTS.md), in passes of at most this many images: on a CPU a few images' activations stay in its
# caches (4 images per pass: 1.9x faster than 128 at 4 views, bench/bench_backbone_inference.py); a GPU
# wants wide passes, and the cap bounds the activations' memory.
CPU_IMAGES_PER_PASS = 4
GPU_IMAGES_PER_PASS = 128


def prototype_settings(pooled_dims: int) -> dict:
    """What the artifact records to rebuild the class-mean part (its metadata "prototypes")."""
    return {"weight": PROTOTYPE_WEIGHT, "sharpness": PROTOTYPE_SHARPNESS, "dims": pooled_dims}


def mixture_log_probabilities(logits, pooled, centres, offset, weight: float, sharpness: float):
    """log((1 - weight) softmax(logits) + weight softmax(sharpness cos(pooled, centres) + offset)), torch."""
    import torch
    import torch.nn.functional as F

    similarity = F.normalize(pooled, dim=1) @ centres.T * sharpness + offset
    mixture = (1 - weight) * torch.softmax(logits, 1) + weight * torch.softmax(similarity, 1)
    return torch.log(mixture.clamp_min(1e-12))


def with_folded_batchnorm(model, backbone: Backbone):
    """An inference copy of a FeatureHeadClassifier whose body has its BatchNorm folded into the
    convolutions (1.1-1.3x faster on CPU, bench/RESULTS.md); the artifact keeps the unfolded weights."""
    import copy

    from .backbones import fold_body_batchnorm

    clone = copy.deepcopy(model).eval()
    clone.features.body = fold_body_batchnorm(backbone, clone.features.body)
    return clone


def dihedral_views(x, views: int = VIEWS):
    """The first ``views`` dihedral transforms of a (N, C, H, W) batch, as a list of batches."""
    import torch

    out = []
    for turns in range(4):
        rotated = torch.rot90(x, turns, (2, 3))
        out += [rotated, torch.flip(rotated, (3,))]
    return out[:views]


def view_features(features, x, views: int):
    """(views, N, D): ``features`` of the first ``views`` dihedral views of the batch ``x``."""
    import torch

    stacked = torch.cat(dihedral_views(x, views)) if views > 1 else x
    stacked = stacked.contiguous(memory_format=torch.channels_last)
    per_pass = CPU_IMAGES_PER_PASS if x.device.type == "cpu" else GPU_IMAGES_PER_PASS
    if torch.is_grad_enabled():  # Grad-CAM (saliency.py) hooks one activation per layer: one pass
        per_pass = len(stacked)
    outputs = torch.cat([features(chunk) for chunk in stacked.split(per_pass)])
    return outputs.view(-1, x.shape[0], outputs.shape[1])


def _module_base():
    import torch.nn as nn

    return nn.Module


class TextureFeatures(_module_base()):
    """A timm EfficientNet body -> [pooled pre-logits, mean and std of the texture blocks' maps]."""

    def __init__(self, body, texture_blocks: tuple[int, ...]):
        super().__init__()
        self.body = body
        self.texture_blocks = tuple(texture_blocks)

    @property
    def dim(self) -> int:
        channels = sum(self.body.blocks[i][-1].conv_pwl.out_channels for i in self.texture_blocks)
        return self.body.num_features + 2 * channels

    def forward(self, x):
        import torch

        body = self.body
        x = body.bn1(body.conv_stem(x))
        statistics = []
        for index, block in enumerate(body.blocks):
            x = block(x)
            if index in self.texture_blocks:
                statistics += [x.mean((2, 3)), x.std((2, 3))]
        pooled = body.forward_head(body.bn2(body.conv_head(x)), pre_logits=True)
        return torch.cat([pooled, *statistics], 1)


class FeatureHeadClassifier(_module_base()):
    """Frozen features -> standardisation (stored statistics) -> one linear layer, mixed with the class
    means of the pooled features when ``prototypes`` (prototype_settings) is given; returns logits.

    ``tta_views`` > 1 averages the features of that many dihedral views of each image. Artifacts saved
    before the class means existed have no ``prototypes``: their module is the linear head alone."""

    def __init__(self, features: TextureFeatures, n_classes: int, tta_views: int = VIEWS, prototypes=None):
        import torch
        import torch.nn as nn

        super().__init__()
        self.features = features
        dim = features.dim
        self.register_buffer("feature_mean", torch.zeros(dim))
        self.register_buffer("feature_scale", torch.ones(dim))
        self.linear = nn.Linear(dim, n_classes)
        self.tta_views = tta_views
        self.prototypes = dict(prototypes) if prototypes else None
        if self.prototypes:
            self.register_buffer("prototype_centres", torch.zeros(n_classes, self.prototypes["dims"]))
            self.register_buffer("prototype_offset", torch.zeros(n_classes))

    def raw_features(self, x):
        """Features of a batch, the views averaged, before standardisation."""
        return view_features(self.features, x, self.tta_views).mean(0)

    def embed(self, x):
        """Standardised features of a batch (the views averaged): the head's input, and the embedding
        that similarity search and out-of-scope scores use."""
        return (self.raw_features(x) - self.feature_mean) / self.feature_scale

    def forward(self, x):
        return self.logits_and_embedding(x)[0]

    def logits_and_embedding(self, x):
        """(logits, embedding) from one pass: what the engine returns with each prediction."""
        return self.head_outputs(self.raw_features(x))

    def head_outputs(self, raw):
        """(logits, embedding) of raw features (the views averaged): everything after the body."""
        embedding = (raw - self.feature_mean) / self.feature_scale
        logits = self.linear(embedding)
        if not self.prototypes:
            return logits, embedding
        pooled = raw[:, : self.prototypes["dims"]]
        weight, sharpness = self.prototypes["weight"], self.prototypes["sharpness"]
        mixture = mixture_log_probabilities(
            logits, pooled, self.prototype_centres, self.prototype_offset, weight, sharpness
        )
        return mixture, embedding


def build_classifier(backbone: Backbone, n_classes: int, body=None, tta_views: int = VIEWS, prototypes=None):
    """The classifier for ``backbone``; a fresh (random) body unless one with weights is given."""
    from .backbones import build_body

    features = TextureFeatures(body if body is not None else build_body(backbone), backbone.texture_blocks)
    return FeatureHeadClassifier(features, n_classes, tta_views, prototypes)
