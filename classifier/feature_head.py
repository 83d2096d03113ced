"""The small-data model: a frozen ImageNet body, texture statistics and a linear head.

On a few hundred real micrographs, a head on frozen pretrained features generalises to unseen sources
better than fine-tuning the body (bench/RESULTS.md, "Pretrained backbone"; Kumar et al., ICLR 2022,
find the same out of distribution). The features are the body's pooled pre-logits plus the per-channel
mean and standard deviation of a few intermediate feature maps (texture statistics). They are
standardised with the training images' statistics, stored as buffers, so the whole classifier is one
torch module: the artifact stores its state dict and the engine runs it like any other network.

Dihedral views (the 8 rotations and flips; an SEM image has no "up") enlarge the training set, and at
inference their features are averaged (test-time augmentation), which the module does itself.
"""

from __future__ import annotations

from .backbones import Backbone

VIEWS = 8  # the dihedral group: 4 rotations, each also mirrored


def dihedral_views(x, views: int = VIEWS):
    """The first ``views`` dihedral transforms of a (N, C, H, W) batch, as a list of batches."""
    import torch

    out = []
    for turns in range(4):
        rotated = torch.rot90(x, turns, (2, 3))
        out += [rotated, torch.flip(rotated, (3,))]
    return out[:views]


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
    """Frozen features -> standardisation (stored statistics) -> one linear layer (logits).

    ``tta_views`` > 1 averages the standardised features of that many dihedral views of each image."""

    def __init__(self, features: TextureFeatures, n_classes: int, tta_views: int = VIEWS):
        import torch
        import torch.nn as nn

        super().__init__()
        self.features = features
        dim = features.dim
        self.register_buffer("feature_mean", torch.zeros(dim))
        self.register_buffer("feature_scale", torch.ones(dim))
        self.linear = nn.Linear(dim, n_classes)
        self.tta_views = tta_views

    def embed(self, x):
        """Standardised features of a batch (the views averaged): the head's input, and the embedding
        that similarity search and out-of-scope scores use."""
        import torch

        views = dihedral_views(x, self.tta_views) if self.tta_views > 1 else [x]
        stacked = torch.stack([self.features(view) for view in views]).mean(0)
        return (stacked - self.feature_mean) / self.feature_scale

    def forward(self, x):
        return self.linear(self.embed(x))


def build_classifier(backbone: Backbone, n_classes: int, body=None, tta_views: int = VIEWS):
    """The classifier for ``backbone``; a fresh (random) body unless one with weights is given."""
    from .backbones import build_body

    features = TextureFeatures(body if body is not None else build_body(backbone), backbone.texture_blocks)
    return FeatureHeadClassifier(features, n_classes, tta_views)
