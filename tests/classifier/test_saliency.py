"""classifier.saliency: the Grad-CAM of a synthetic image lights up the region that drives the class.

Each image is textured in one region and flat elsewhere, and the class is "textured": a heat map that
ignored where the texture is (a uniform map, a wrong layer, views mapped back the wrong way) puts
about the region's share of the mass there, not most of it.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from classifier import saliency
from classifier.transforms import normalise_batch

SIDE = 224
REGIONS = {
    "left": (slice(None), slice(0, SIDE // 2)),
    "right": (slice(None), slice(SIDE // 2, None)),
    "top": (slice(0, SIDE // 2), slice(None)),
    "top-left quadrant": (slice(0, SIDE // 2), slice(0, SIDE // 2)),
    "bottom-right quadrant": (slice(SIDE // 2, None), slice(SIDE // 2, None)),
}


def textured(region: str, seed: int = 0) -> np.ndarray:
    """A flat grey image with random texture in one region."""
    image = np.full((SIDE, SIDE), 128, np.uint8)
    rows, cols = REGIONS[region]
    patch = image[rows, cols]
    image[rows, cols] = np.random.default_rng(seed).integers(0, 256, patch.shape, dtype=np.uint8)
    return image


def share(cam: np.ndarray, region: str) -> float:
    rows, cols = REGIONS[region]
    return float(cam[rows, cols].sum() / cam.sum())


def texture_cnn():
    """A fastai-shaped CNN (body of conv stages, pooling head) whose class 0 is "textured": a Laplacian
    and its negative, rectified, respond to texture; a flat region gives zero."""
    import torch.nn as nn

    laplacian = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]]) / 3
    edges = nn.Conv2d(3, 2, 3, padding=1, padding_mode="replicate", bias=False)
    smooth = nn.Conv2d(2, 4, 3, padding=1, padding_mode="replicate", bias=False)
    body = nn.Sequential(nn.Sequential(edges, nn.ReLU()), nn.Sequential(smooth, nn.ReLU()))
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        edges.weight.copy_(torch.stack([torch.stack([laplacian] * 3), torch.stack([-laplacian] * 3)]))
        smooth.weight.fill_(1 / 18)
        head[2].weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4]))
        head[2].bias.copy_(torch.tensor([0.0, 0.5]))
    return nn.Sequential(body, head)


@pytest.mark.parametrize("region", ["left", "right", "top"])
def test_the_cam_of_a_cnn_lights_up_the_textured_half(region):
    explainer = saliency.make_explainer(texture_cnn(), {"classes": ["textured", "flat"], "input_size": SIDE})
    assert explainer.layer_name == "0.1"  # the body's last convolutional stage

    explanation = saliency.explain_array(explainer, textured(region))

    assert explanation.class_name == "textured"
    assert explanation.cam.shape == (SIDE, SIDE)
    assert share(explanation.cam, region) > 0.85, share(explanation.cam, region)


@pytest.fixture(scope="module")
def feature_head():
    """The real default network (EfficientNet-Lite0 from its package, texture features, 8 views) whose
    linear head scores how far an image's features moved from a flat image's towards a noisy one's."""
    from classifier.backbones import get_backbone, load_pretrained_body
    from classifier.feature_head import build_classifier

    backbone = get_backbone("efficientnet_lite0")
    body, _provenance = load_pretrained_body(backbone)
    model = build_classifier(backbone, 2, body=body, tta_views=1).eval()
    noise = np.random.default_rng(1).integers(0, 256, (1, SIDE, SIDE), dtype=np.uint8)
    with torch.no_grad():
        features = [
            model.features(normalise_batch(torch.from_numpy(array), backbone.mean, backbone.std))[0]
            for array in (noise, np.full((1, SIDE, SIDE), 128, np.uint8))
        ]
        direction = features[0] - features[1]
        model.feature_mean.copy_(features[1])  # a flat image scores 0 for both classes
        model.linear.weight.copy_(torch.stack([direction, -direction]))
        model.linear.bias.zero_()
    metadata = {
        "classes": ["textured", "flat"],
        "input_size": SIDE,
        "normalisation": {"mean": backbone.mean, "std": backbone.std},
        "tta_views": 8,
    }
    return saliency.make_explainer(model, metadata, views=8)


@pytest.mark.parametrize("region", ["top-left quadrant", "bottom-right quadrant"])
def test_the_feature_heads_cam_maps_the_eight_views_back(feature_head, region):
    """A quadrant lands in another quadrant in most dihedral views: views mapped back wrongly would
    spread the averaged map over several quadrants."""
    explanation = saliency.explain_array(feature_head, textured(region))

    assert (explanation.class_name, explanation.views) == ("textured", 8)
    assert explanation.target_layer == "features.body.blocks.3"
    assert share(explanation.cam, region) > 0.7, share(explanation.cam, region)


def test_undo_dihedral_inverts_each_view():
    from classifier.feature_head import dihedral_views

    original = np.arange(12 * 12, dtype=np.float32).reshape(12, 12)
    views = dihedral_views(torch.from_numpy(original)[None, None])
    restored = saliency.undo_dihedral(np.stack([view[0, 0].numpy() for view in views]))
    assert len(restored) == 8
    for view in restored:
        np.testing.assert_array_equal(view, original)


def test_a_network_without_a_known_target_layer_is_refused():
    import torch.nn as nn

    with pytest.raises(saliency.SaliencyError, match="not Linear networks"):
        saliency.target_layer(nn.Linear(4, 2))


def test_the_png_has_the_derivatives_aspect_and_is_clear_outside_the_models_square():
    cam = np.zeros((SIDE, SIDE), np.float32)
    cam[:, : SIDE // 2] = 1.0  # the left half of the square

    picture = Image.open(io.BytesIO(saliency.heat_map_png(cam, (341, 256))))

    assert (picture.mode, picture.size) == ("RGBA", (341, 256))
    alpha = np.asarray(picture)[..., 3]
    offset = (341 - 256) // 2
    assert alpha[:, :offset].max() == 0 and alpha[:, offset + 256 :].max() == 0  # outside the square
    assert alpha[:, offset + 10 : offset + 100].min() == 255  # the CAM's hot half is opaque
    assert alpha[:, offset + 160 : offset + 250].max() == 0  # its cold half is see-through
    assert Image.open(io.BytesIO(saliency.heat_map_png(cam, (3000, 2000)))).size == (1024, 683)
