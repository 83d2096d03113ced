"""Data-bar detection on synthetic SEM images: banners of different heights, and no banner at all."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from classifier.databar import crop_databar
from classifier.synthetic import CATEGORIES, draw_databar, make_image
from portal.services.ingestion.ingest import ingest_file
from tests.portal.sem_builders import pillow_bytes

TEXTURED = ("Films_Coated_Surface", "Porous_Sponge", "Patterned_surface", "Tips")


@pytest.mark.parametrize("bar_height", [12, 24, 40, 60, 90, 120])
@pytest.mark.parametrize("category", TEXTURED)
def test_banner_of_any_height_is_found(category, bar_height):
    image = make_image(category, seed=bar_height, size=(512, 384), databar=False)
    drawn = draw_databar(image, rng=bar_height, bar_height=bar_height)
    cropped, rows = crop_databar(image)
    assert drawn == bar_height
    assert abs(rows - bar_height) <= 2
    assert cropped.size == (512, 384 - rows)


@pytest.mark.parametrize("category", CATEGORIES)
def test_random_banners_are_removed_completely_in_every_category(category):
    """All banner rows must go (the model must never see banner text); on dark substrates the detector
    may take a few image rows with it, but not many."""
    for seed in range(12):
        image = make_image(category, seed, size=(512, 384), databar=False)
        drawn = draw_databar(image, rng=seed)  # random height, 6-14 % of the image
        rows = crop_databar(image)[1]
        assert drawn - 1 <= rows <= drawn + 0.05 * 384, (seed, drawn, rows)


@pytest.mark.parametrize("category", TEXTURED)
def test_no_banner_nothing_cropped_on_textured_images(category):
    assert [crop_databar(make_image(category, seed, databar=False))[1] for seed in range(20)] == [0] * 20


def test_no_banner_false_positive_rate_is_low_over_all_categories():
    """Dark, empty substrates with bright objects near the bottom can look like a banner; keep that rare."""
    crops = [
        crop_databar(make_image(category, seed, databar=False))[1] for category in CATEGORIES for seed in range(20)
    ]
    false_positive_rate = sum(rows > 0 for rows in crops) / len(crops)
    assert false_positive_rate <= 0.10


def test_noise_and_gradient_images_have_no_banner():
    rng = np.random.default_rng(7)
    noise = rng.normal(128, 30, (384, 512)).clip(0, 255).astype(np.uint8)
    gradient = np.tile(np.linspace(0, 255, 384, dtype=np.float32)[:, None], (1, 512)).astype(np.uint8)
    for array in (noise, gradient):
        assert crop_databar(Image.fromarray(array))[1] == 0


@pytest.mark.django_db
def test_ingestion_crops_the_bar_for_the_derivative_only(sample, user):
    image = make_image("Porous_Sponge", seed=3, size=(512, 384), databar=False)
    draw_databar(image, rng=3, bar_height=48)
    data = pillow_bytes(image, "PNG")
    stored = ingest_file(io.BytesIO(data), filename="bar.png", sample=sample, uploaded_by=user).image
    assert abs(stored.databar_rows - 48) <= 2
    with stored.derivative.open("rb") as handle:
        derivative = Image.open(handle)
        derivative.load()
    expected_width = round(512 * 256 / (384 - stored.databar_rows))
    assert derivative.size == (expected_width, 256)
    with stored.original.open("rb") as handle:
        assert handle.read() == data  # the original keeps its data bar
