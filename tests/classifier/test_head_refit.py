"""A head refitted on a base model's stored embeddings (issue 25, item 3): the base's body, a new head."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.config import TrainConfig
from classifier.head_refit import EmbeddedItem, RefitUnavailable, can_refit, refit_head

CONFIG = TrainConfig(seed=2, sizes=(64,), epochs=(1,), batch_sizes=(16,))


@pytest.fixture(scope="module")
def base_and_data(tmp_path_factory):
    """A real frozen-feature model trained on two of three synthetic textures; the third arrives later."""
    from classifier.engine import Engine
    from classifier.train import train
    from tests.classifier.conftest import make_dataset

    root = tmp_path_factory.mktemp("refit")
    train_items = make_dataset(root / "train", {"dots": 10, "noise": 10, "stripes": 10}, seed=11)
    test_items = make_dataset(root / "test", {"dots": 3, "noise": 3, "stripes": 3}, seed=12)
    first_two = [item for item in train_items if item[1] != "stripes"]
    base = train(first_two, CONFIG, str(root / "base.safetensors"), classes=["dots", "noise", "stripes"])
    engine = Engine.from_artifact(base.artifact_path, expected_sha256=base.sha256)
    embeddings = {path: p.embedding for path, p in zip(*_paths_and_predictions(engine, train_items + test_items))}
    return base, train_items, test_items, embeddings, root


def _paths_and_predictions(engine, items):
    paths = [path for path, _ in items]
    return paths, engine.predict_paths(paths)


def _embedded(items, embeddings, dtype=np.float16):
    """As the portal hands them over: float16, as stored."""
    return [EmbeddedItem(path, label, embeddings[path].astype(dtype)) for path, label in items]


def test_a_refit_learns_the_new_labels_on_the_base_body(base_and_data, tmp_path):
    """The base never saw a stripes label and never answers it; the refit on the stored embeddings of all
    three textures answers the held-out stripes images, through the engine like any artifact."""
    from classifier.artifact import load_artifact
    from classifier.engine import Engine

    base, train_items, test_items, embeddings, _ = base_and_data
    classes = ["dots", "noise", "stripes"]
    groups = [f"{label}-{index % 3}" for index, (_, label) in enumerate(train_items)]
    result = refit_head(
        base.artifact_path,
        base.sha256,
        _embedded(train_items, embeddings),
        _embedded(test_items, embeddings),
        classes,
        groups,
        tmp_path / "refit.safetensors",
        config=CONFIG,
    )

    engine = Engine.from_artifact(result.artifact_path, expected_sha256=result.sha256)
    answers = [p.top_class for p in engine.predict_paths([path for path, _ in test_items])]
    assert answers == [label for _, label in test_items]
    assert result.evaluation["split"] == "test" and result.evaluation["accuracy"] == 1.0
    assert result.metadata["refit_of"]["sha256"] == base.sha256
    assert result.metadata["refit_of"]["computed_embeddings"] == 0
    assert result.metadata["out_of_scope"]["n_held_out"] == len(train_items)
    # the outlier classifier is fitted again on the base's outliers (their features travel in the artifact)
    outliers = load_artifact(base.artifact_path).extra_tensors()["ood.outliers"]
    assert result.metadata["out_of_scope"]["outlier_classifier"]["n_outliers"] == outliers.shape[0] > 0
    refit, original = load_artifact(result.artifact_path).state_dict, load_artifact(base.artifact_path).state_dict
    body = [key for key in original if key.startswith("features.")]
    assert body and all(refit[key].equal(original[key]) for key in body)  # the body is the base's, unchanged
    assert not refit["linear.weight"].equal(original["linear.weight"])


def test_missing_embeddings_are_computed_by_the_base_engine(base_and_data, tmp_path):
    """Half the images not yet embedded by the base: the same head as from all stored embeddings, up to
    the float16 rounding of the stored ones."""
    import torch

    from classifier.artifact import load_artifact

    base, train_items, test_items, embeddings, _ = base_and_data
    classes = ["dots", "noise", "stripes"]
    stored = _embedded(train_items, embeddings, np.float32)
    partly = [item if index % 2 else EmbeddedItem(item.path, item.label) for index, item in enumerate(stored)]
    args = (base.artifact_path, base.sha256)
    full = refit_head(*args, stored, [], classes, None, tmp_path / "a.safetensors", config=CONFIG)
    mixed = refit_head(*args, partly, [], classes, None, tmp_path / "b.safetensors", config=CONFIG)

    assert mixed.metadata["refit_of"]["computed_embeddings"] == len(train_items) // 2
    assert mixed.evaluation["split"] == "cross-validated"
    a, b = (load_artifact(r.artifact_path).state_dict for r in (full, mixed))
    assert torch.allclose(a["linear.weight"], b["linear.weight"], atol=1e-3)


def test_only_a_frozen_feature_model_of_the_same_architecture_can_be_refitted(base_and_data, tmp_path):
    base, train_items, _, embeddings, _ = base_and_data
    assert can_refit(base.metadata) == ""
    assert "not a frozen-feature model" in can_refit({"recipe": "fine_tune", "arch": "resnet34"})
    assert "architecture changed" in can_refit(base.metadata, "efficientnet_lite2")
    wrong_size = [EmbeddedItem(path, label, np.zeros(7, np.float16)) for path, label in train_items]
    with pytest.raises(RefitUnavailable, match="7 values"):
        refit_head(
            base.artifact_path,
            base.sha256,
            wrong_size,
            [],
            ["dots", "noise", "stripes"],
            None,
            tmp_path / "x.safetensors",
            config=CONFIG,
        )


def test_the_refit_answers_from_the_base_embeddings_as_from_the_images(base_and_data, tmp_path):
    """Predictions from the base's stored (float16) embeddings are those from decoding and running the body."""
    from classifier.engine import Engine

    base, train_items, test_items, embeddings, _ = base_and_data
    result = refit_head(
        base.artifact_path,
        base.sha256,
        _embedded(train_items, embeddings),
        [],
        ["dots", "noise", "stripes"],
        None,
        tmp_path / "refit.safetensors",
        config=CONFIG,
    )
    engine = Engine.from_artifact(result.artifact_path, expected_sha256=result.sha256)
    paths = [path for path, _ in test_items]
    from_images = engine.predict_paths(paths)
    stored = np.stack([embeddings[path].astype(np.float16) for path in paths])
    from_embeddings = engine.predict_base_embeddings(stored)

    assert [p.top_class for p in from_embeddings] == [p.top_class for p in from_images]
    assert np.allclose([p.probabilities for p in from_embeddings], [p.probabilities for p in from_images], atol=2e-3)
    embedded = np.array([p.embedding for p in from_embeddings]), np.array([p.embedding for p in from_images])
    assert np.allclose(*embedded, rtol=2e-3, atol=2e-3)  # to float16 rounding
    assert np.allclose([p.ood_score for p in from_embeddings], [p.ood_score for p in from_images], atol=2e-3)
    base_engine = Engine.from_artifact(base.artifact_path, expected_sha256=base.sha256)
    with pytest.raises(ValueError, match="not a head refit"):
        base_engine.predict_base_embeddings(stored)


def test_a_heat_map_loads_an_artifact_that_carries_extra_tensors(base_and_data):
    """The trained artifact holds the out-of-scope bank beside the network; Grad-CAM loads the network alone."""
    from classifier import saliency
    from classifier.artifact import load_artifact

    base, _, test_items, _, _ = base_and_data
    assert load_artifact(base.artifact_path).extra_tensors()  # the bank is in the file
    explainer = saliency.load_explainer(base.artifact_path, base.sha256)
    explanation = saliency.explain_path(explainer, test_items[0][0])
    assert explanation.cam.shape[0] > 1 and np.isfinite(explanation.cam).all()
