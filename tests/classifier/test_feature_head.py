"""The default model's head: logistic regression mixed with cosine class means, and its cross-fitting."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.backbones import build_body, get_backbone
from classifier.feature_head import ABSENT, build_classifier, prototype_settings
from classifier.head_training import _fit, _logits, class_means, fit_head, install_head, out_of_fold_logits

LITE0 = get_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def random_model_and_features():
    """A Lite0 body with random weights (no package needed), 4 classes of which the last has no image."""
    import torch

    torch.manual_seed(0)
    body = build_body(LITE0)
    model = build_classifier(LITE0, 4, body, tta_views=2, prototypes=prototype_settings(body.num_features)).eval()
    images = torch.rand(12, 3, 64, 64)
    with torch.inference_mode():
        raw = model.raw_features(images).double().numpy()
    return model, images, raw, np.arange(12) % 3


def test_the_module_computes_what_the_fitted_head_computes(random_model_and_features):
    """The torch module (what the engine runs) and the numpy head (what calibration is fitted on) agree,
    and a category without training images gets no probability from either part of the mixture."""
    import torch

    model, images, raw, labels = random_model_and_features
    head = _fit(raw, labels, None, 4, 0.01, 0, pooled_dims=model.prototypes["dims"])
    install_head(model, head)
    with torch.inference_mode():
        from_module = model(images).double().numpy()
    from_head = _logits(head, raw)
    assert np.allclose(from_module, from_head, atol=1e-3)
    assert np.exp(from_head)[:, 3].max() < 1e-6
    assert np.allclose(np.exp(from_head).sum(1), 1.0, atol=1e-6)  # log-probabilities of a mixture


def test_class_means_are_unit_directions_and_absent_classes_are_shut_out():
    pooled = np.array([[3.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 5.0]])
    means = class_means(pooled, np.array([0, 0, 2, 2]), 3)
    assert np.allclose(means["centres"], [[1, 0], [0, 0], [0, 1]])
    assert list(means["offset"]) == [0.0, ABSENT, 0.0]


def test_out_of_fold_scores_never_come_from_a_head_that_saw_the_series():
    """Two series per class, each series' images identical, the series' directions random: a head that had
    seen an image's series scores it perfectly; held out by series, only the other series of its class is
    known, which says nothing about it here."""
    rng = np.random.default_rng(1)
    series_centres = rng.normal(size=(6, 16)) * 3
    groups = [f"s{i // 4}" for i in range(24)]  # 6 series of 4 images; series 2k and 2k+1 are class k
    labels = np.array([i // 8 for i in range(24)])
    features = np.stack([series_centres[i // 4] for i in range(24)])
    logits, scored = out_of_fold_logits(features, labels, groups, 3, 1.0, 0, folds=2)
    seen = _fit(features, labels, None, 3, 1.0, 0)
    assert (_logits(seen, features).argmax(1) == labels).all()
    assert scored.sum() == 24
    assert (logits.argmax(1) == labels).mean() < 0.75


def test_without_series_folds_hold_out_whole_clusters_of_similar_images(monkeypatch):
    """Every image in one sample (an import that did not say the series): 10 tight series of 8 images. The
    folds must keep each series on one side, as the real series would, not split its images."""
    from classifier import head_training

    monkeypatch.setattr(head_training, "PSEUDO_SERIES_SIZE", 8)
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(10, 32)) * 3
    series = np.repeat(np.arange(10), 8)
    features = centres[series] + rng.normal(size=(80, 32)) * 0.05
    labels = series % 2
    one_sample = ["sample-1"] * 80
    for train_idx, held_idx in head_training._folds(labels, one_sample, 5, 0, features):
        assert not set(series[train_idx]) & set(series[held_idx])  # no series on both sides
    # without features (or too few images for 5 clusters): folds of images, series split across them
    image_folds = head_training._folds(labels, one_sample, 5, 0)
    assert any(set(series[a]) & set(series[b]) for a, b in image_folds)
    assert head_training.pseudo_series(features[:30], 5, 0) is None
    # the Training page's words for what was held out
    assert head_training.held_out_unit(one_sample, 5, features) == "clusters of similar images"
    assert head_training.held_out_unit(one_sample, 5, features[:30]) == "images"
    assert head_training.held_out_unit([f"s{i}" for i in series], 5, features) == "series"


def test_fit_head_reports_a_temperature_from_every_scored_image():
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(3), 10)
    groups = [f"{label}-{i % 3}" for i, label in enumerate(labels)]  # 3 series per class
    features = (rng.normal(size=(30, 20)) + labels[:, None] * 0.8)[:, None, :]
    head = fit_head(features, labels, groups, 3, 0.1, 0, pooled_dims=8)
    assert len(head["oof_index"]) == len(head["oof_labels"]) == head["calibration"]["n"] == 30
    assert 0.05 < head["temperature"] < 20
    assert np.allclose(head["oof_probabilities"].sum(1), 1.0)


def test_the_engine_returns_the_mixture_not_the_linear_layer_alone(random_model_and_features):
    """The engine's batch path (classification, evaluation, calibration) gives the module's own logits
    and the standardised embedding, from one pass."""
    import torch

    from classifier.engine import model_outputs

    model, _, raw, labels = random_model_and_features
    install_head(model, _fit(raw, labels, None, 4, 0.01, 0, pooled_dims=model.prototypes["dims"]))
    arrays = [np.random.default_rng(i).integers(0, 256, (64, 64), dtype=np.uint8) for i in range(3)]
    logits, embeddings = model_outputs(model, arrays, device="cpu", channels_last=False)
    from classifier import transforms

    inputs = transforms.normalise_batch(
        torch.from_numpy(np.stack(arrays)), transforms.NORMALISE_MEAN, transforms.NORMALISE_STD
    )
    with torch.inference_mode():
        expected = model(inputs).numpy()
        linear_only = model.linear(model.embed(inputs)).numpy()
    assert np.allclose(logits, expected, atol=1e-4)
    assert not np.allclose(logits, linear_only, atol=1e-2)
    assert np.allclose(np.exp(logits).sum(1), 1.0, atol=1e-5)
    assert embeddings.shape == (3, raw.shape[1])


def _body_with_random_norms():
    """A Lite0 body whose BatchNorm layers all have non-trivial statistics: folding a norm into the
    wrong convolution then changes the features (with fresh norms it would be the identity)."""
    import torch

    torch.manual_seed(1)
    body = build_body(LITE0).eval()
    for norm in body.modules():
        if isinstance(norm, torch.nn.BatchNorm2d):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.data.uniform_(0.5, 1.5)
            norm.bias.data.uniform_(-0.5, 0.5)
    return body


def test_batchnorm_folds_into_the_efficientnet_convolutions_and_the_features_stay_the_same():
    import torch

    from classifier.feature_head import with_folded_batchnorm

    model = build_classifier(LITE0, 3, _body_with_random_norms(), tta_views=2).eval()
    folded = with_folded_batchnorm(model, LITE0)
    norms = [m for m in folded.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms == []
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    images = torch.rand(2, 3, 96, 96)
    with torch.inference_mode():
        expected, got = model.raw_features(images), folded.raw_features(images)
    assert torch.allclose(expected, got, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_a_wrong_fold_is_refused_and_the_body_kept():
    import dataclasses

    import torch

    from classifier.backbones import fold_body_batchnorm

    body = _body_with_random_norms()
    wrong = dataclasses.replace(LITE0, batchnorm_pairs=(("InvertedResidual", (("conv_pw", "bn2"),)),))
    assert fold_body_batchnorm(wrong, body) is body
    assert fold_body_batchnorm(LITE0, body) is not body
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())
