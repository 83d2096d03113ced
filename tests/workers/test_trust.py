"""Out of scope and prediction sets end to end: uploads classified by a real worker with a model the
product's frozen-feature training made (issue 24, items 2 and 3)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from PIL import Image

from portal.models import ModelVersion, Prediction, SEMImage
from tests.worker_fixtures import (
    TrainedArtifact,
    install_model,
    synthetic_derivatives,
    train_artifact,
)

pytestmark = pytest.mark.worker


@pytest.fixture(scope="module")
def trust_artifact(tmp_path_factory) -> TrainedArtifact:
    """classifier.train's default recipe (EfficientNet-Lite0 features, logistic head, temperature, conformal
    calibration, kNN detector) at 64 px on synthetic micrographs of four categories."""
    from classifier.config import TrainConfig

    root = tmp_path_factory.mktemp("trust-model")
    items = synthetic_derivatives(root, seeds=range(2000, 2010))
    config = TrainConfig(seed=0, sizes=(64,), epochs=(1,), batch_sizes=(16,))
    return train_artifact(items, config, root / "model.safetensors", test_items=items[::5])


def _png(array: np.ndarray) -> io.BytesIO:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    buffer.seek(0)
    return buffer


def test_a_blank_and_a_noise_frame_come_back_out_of_scope_and_first_for_review(
    celery_worker, trust_artifact, nffa_categories, sample, user, upload_images
):
    from portal.services.curation import review
    from portal.services.delivery.webhooks import image_data
    from portal.services.ingestion.ingest import ingest_file

    install_model(trust_artifact, 1, status=ModelVersion.Status.PRODUCTION)
    in_scope = upload_images(sample, user, 4, seed=50)
    rng = np.random.default_rng(0)
    frames = {
        "blank": np.full((144, 192), 30, np.uint8),
        "noise": rng.integers(0, 256, (144, 192), dtype=np.uint8),
    }
    outside = {
        name: ingest_file(_png(array), filename=f"{name}.png", sample=sample, uploaded_by=user).image
        for name, array in frames.items()
    }
    ids = [image.pk for image in in_scope] + [image.pk for image in outside.values()]

    celery_worker.wait_until(
        lambda: not SEMImage.objects.filter(pk__in=ids, status=SEMImage.Status.PENDING).exists(),
        timeout=180,
        what="every upload classified",
    )

    for name, image in outside.items():
        image.refresh_from_db()
        prediction = Prediction.objects.get(image=image)
        assert image.status == SEMImage.Status.OUT_OF_SCOPE, name
        assert prediction.out_of_scope and image_data(image)["out_of_scope"] is True
        assert image.predicted_category is not None  # the model's guess is kept, not trusted
    noise = Prediction.objects.get(image=outside["noise"])
    # a detector (the kNN distance or the outlier classifier), not the blank rule, caught the noise frame
    assert noise.out_of_scope and not SEMImage.objects.get(pk=outside["noise"].pk).blank
    in_scope = list(SEMImage.objects.filter(pk__in=[image.pk for image in in_scope]))
    # eight held-out training images set the threshold here: most, not all, in-scope uploads pass it
    assert sum(image.status == SEMImage.Status.CLASSIFIED for image in in_scope) >= 2
    for image in in_scope:
        assert image.predicted_set_size == len(image.predicted_set) and image.predicted_set_label
    flagged = SEMImage.objects.filter(pk__in=ids, status=SEMImage.Status.OUT_OF_SCOPE).count()
    head = review.queue(user, len(ids))
    assert {image.status for image in head[:flagged]} == {SEMImage.Status.OUT_OF_SCOPE}
    assert {image.pk for image in outside.values()} <= {image.pk for image in head[:flagged]}


def test_a_colour_photo_comes_back_out_of_scope_with_the_colour_reason_and_its_grey_copy_without_it(
    celery_worker, trust_artifact, nffa_categories, sample, user, client
):
    """SEM detectors give greyscale (SEM_COLOUR_OUT_OF_SCOPE): the colour photo and the same photo in grey
    have the same model-input derivative, so the same detector score; only the colour one is flagged for
    its colour."""
    import matplotlib
    from django.urls import reverse

    from portal.services.curation import review, review_order
    from portal.services.delivery.webhooks import image_data
    from portal.services.ingestion.ingest import ingest_file

    install_model(trust_artifact, 1, status=ModelVersion.Status.PRODUCTION)
    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    grey = np.asarray(Image.open(photo).convert("L"))
    with open(photo, "rb") as handle:
        colour = ingest_file(handle, filename="grace_hopper.jpg", sample=sample, uploaded_by=user).image
    grey = ingest_file(_png(grey), filename="grace_hopper_grey.png", sample=sample, uploaded_by=user).image
    celery_worker.wait_until(
        lambda: not SEMImage.objects.filter(pk__in=[colour.pk, grey.pk], status=SEMImage.Status.PENDING).exists(),
        timeout=180,
        what="both uploads classified",
    )

    colour.refresh_from_db()
    grey.refresh_from_db()
    assert colour.colourfulness > 3 * settings.SEM_COLOUR_OUT_OF_SCOPE and grey.colourfulness == 0.0
    assert colour.status == SEMImage.Status.OUT_OF_SCOPE and Prediction.objects.get(image=colour).out_of_scope
    assert image_data(colour)["out_of_scope"] is True and colour.predicted_category is not None
    scores = [Prediction.objects.get(image=image).ood_score for image in (colour, grey)]
    assert scores[0] == pytest.approx(scores[1])  # the detector saw the same derivative
    reason = f"colour image (colourfulness {colour.colourfulness:.0f}): SEM detectors give greyscale"
    assert review_order.explain(colour).startswith(f"out of scope: {reason}")
    assert "colour" not in review_order.explain(grey)
    # the grey copy is out of scope all the same: the outlier classifier (this photo is among its made
    # outliers, so this checks the wiring; bench/bench_trust.py measures photos it never saw)
    assert grey.status == SEMImage.Status.OUT_OF_SCOPE
    assert review_order.explain(grey) == "out of scope: unlike every image the model learnt from"
    head = review.queue(user, 2)
    assert head[0].status == SEMImage.Status.OUT_OF_SCOPE
    assert colour.pk in [image.pk for image in head if image.status == SEMImage.Status.OUT_OF_SCOPE]
    client.force_login(user)
    assert reason in client.get(reverse("web:image_detail", args=[colour.pk])).content.decode()
    assert "colour image" not in client.get(reverse("web:image_detail", args=[grey.pk])).content.decode()
