"""Embeddings stored by the classification service from a real feature-head engine (issue 24, item 1)."""

from __future__ import annotations

import numpy as np
import pytest

from portal.models import Embedding, ModelVersion, Prediction, SEMImage
from portal.services.curation import similar
from portal.services.learning import artifacts, classification_batch, promotion
from tests.worker_fixtures import MODEL_FOLDERS, TrainedArtifact, category_name, install_model

INPUT_SIZE = 64  # small inputs keep the real EfficientNet-Lite0 forward pass quick on CPU


@pytest.fixture(scope="module")
def feature_head_artifact(tmp_path_factory) -> TrainedArtifact:
    """A real frozen-feature model: the installed ImageNet EfficientNet-Lite0 body, texture statistics and a
    seeded linear head (fitting the head is not under test; the engine's embeddings are)."""
    import torch

    from classifier.artifact import save_artifact
    from classifier.backbones import get_backbone, load_pretrained_body
    from classifier.feature_head import build_classifier

    classes = [category_name(folder) for folder in MODEL_FOLDERS]
    backbone = get_backbone("efficientnet_lite0")
    torch.manual_seed(0)
    model = build_classifier(backbone, len(classes), load_pretrained_body(backbone)[0], tta_views=2)
    metadata = {"arch": backbone.name, "classes": classes, "input_size": INPUT_SIZE, "tta_views": 2}
    path = tmp_path_factory.mktemp("feature-head") / "model.pth"
    sha256 = save_artifact(path, model.state_dict(), metadata)
    return TrainedArtifact(path, sha256, classes, {}, metadata)


@pytest.fixture
def feature_model(db, feature_head_artifact, nffa_categories):
    return install_model(feature_head_artifact, 1, status=ModelVersion.Status.PRODUCTION)


def test_a_batch_stores_the_embedding_of_the_same_forward_pass(feature_model, sample, user, upload_images):
    images = upload_images(sample, user, 2)

    outcome = classification_batch.classify_images([image.pk for image in images])

    assert sorted(outcome.classified) == sorted(image.pk for image in images)
    engine = artifacts.load_engine(feature_model)
    for image in SEMImage.objects.filter(pk__in=outcome.classified):
        stored = Embedding.objects.get(image=image, model_version=feature_model)
        expected = engine.predict_paths([image.derivative.path])[0]
        assert stored.dimension == expected.embedding.size == len(stored.vector) // 2 > 1000
        assert np.allclose(similar.decode(stored.vector), expected.embedding, rtol=2e-3, atol=2e-3)
        assert Prediction.objects.get(image=image, model_version=feature_model).confidence == pytest.approx(
            expected.confidence, abs=1e-5
        )


def test_a_rolled_back_model_keeps_its_embeddings_and_search_uses_them(
    feature_model, feature_head_artifact, sample, user, upload_images, settings, monkeypatch
):
    settings.SEM_RECLASSIFY_AFTER_PROMOTION = True
    monkeypatch.setattr(similar, "_index", None)  # this process's matrix from an earlier test's rows
    images = upload_images(sample, user, 2, labelled=True)
    classification_batch.classify_images([image.pk for image in images])
    before = dict(Embedding.objects.values_list("image_id", "vector"))
    newer = install_model(feature_head_artifact, 2, status=ModelVersion.Status.CANDIDATE)
    promotion.promote(newer)
    classification_batch.classify_images([image.pk for image in images])  # writes v2's predictions and embeddings
    assert Embedding.objects.filter(model_version=newer).count() == 2

    promotion.rollback()
    outcome = classification_batch.classify_images([image.pk for image in images])  # restored, not recomputed

    assert sorted(outcome.classified) == sorted(before)
    assert dict(Embedding.objects.filter(model_version=feature_model).values_list("image_id", "vector")) == before
    model, found = similar.similar_images(user, images[0])
    assert model.pk == feature_model.pk
    assert [other.pk for other, _ in found] == [images[1].pk]
