"""The made outliers (classifier.outliers): what the out-of-scope classifier learns the outside from."""

from __future__ import annotations

from collections import Counter

import numpy as np
from PIL import Image

from classifier import outliers


def test_the_made_outliers_cover_the_kinds_a_lab_uploads_by_mistake_and_are_the_same_every_time():
    made = outliers.made_outliers()
    kinds = Counter(kind for kind, _, _ in made)
    assert set(kinds) == {"photo", "screenshot", "map", "blank", "noise", "gradient"}
    assert kinds["photo"] == 10 and len({name for _, name, _ in made}) == len(made)
    again = outliers.made_outliers()
    assert all(np.array_equal(a, b) for (_, _, a), (_, _, b) in zip(made, again))  # seeded, no download


def test_an_outlier_becomes_a_greyscale_derivative_and_a_defocused_copy_loses_its_structure(tmp_path):
    stripes = np.tile(np.r_[np.zeros(4), np.full(4, 255)].astype(np.uint8), (600, 100))
    path = tmp_path / "stripes.png"
    Image.fromarray(stripes).save(path)
    derivative = Image.open(outliers.as_derivative(np.dstack([stripes] * 3)))
    assert derivative.mode == "L" and min(derivative.size) == 256
    ((kind, name, blurred),) = outliers.defocused([path], ["stripes"])
    assert (
        kind == "defocused" and name == "stripes" and blurred[:, 100:-100].std() < 0.02 * stripes.std()
    )  # edges aside


def test_defocused_outliers_come_one_per_series():
    chosen = outliers.one_per_group(["a1", "a2", "b1", "c1", "c2"], ["a", "a", "b", "c", "c"], 2)
    assert chosen == ["a1", "b1"]


def test_a_matplotlib_without_its_sample_data_makes_fewer_outliers_not_a_failed_training(monkeypatch, tmp_path):
    monkeypatch.setattr(outliers, "_sample", lambda name: tmp_path / name)  # nothing there
    made = outliers.made_outliers()
    assert {kind for kind, _, _ in made} == {"screenshot", "blank", "noise", "gradient"}  # drawn here
