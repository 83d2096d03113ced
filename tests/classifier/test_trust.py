"""Prediction sets (classifier.conformal) and out-of-scope scores (classifier.ood): the math, and the
artifact a real frozen-feature training writes (issue 24, items 2 and 3)."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest

from classifier import conformal, ood

CLASSES = ["a", "b", "c", "d"]


def _simulate(rng, n: int, hard_class: int | None = None):
    """(probabilities, labels) of an imperfect 4-class model: noisy logits around the true class; the
    model is much less sure of ``hard_class`` than of the others."""
    labels = rng.integers(0, len(CLASSES), n)
    logits = rng.normal(0, 1.0, (n, len(CLASSES)))
    signal = np.where(labels == hard_class, 0.3, 2.0) if hard_class is not None else np.full(n, 1.5)
    logits[np.arange(n), labels] += signal
    exp = np.exp(logits - logits.max(1, keepdims=True))
    return exp / exp.sum(1, keepdims=True), labels


def _coverage(sets, labels) -> np.ndarray:
    return np.array([CLASSES[label] in found for found, label in zip(sets, labels)], float)


def test_p_values_are_the_n_plus_1_formula_with_crepes_and_without(monkeypatch):
    rng = np.random.default_rng(0)
    probabilities, labels = _simulate(rng, 60)
    calibration = conformal.fit_conformal(probabilities, labels, CLASSES)
    test, _ = _simulate(rng, 30)
    with_library = conformal.p_values(test, calibration, CLASSES)

    reference = np.asarray(calibration["pooled_scores"])
    expected = [[((reference >= round(1 - p, 6)).sum() + 1) / (len(reference) + 1) for p in row] for row in test]
    real_import = builtins.__import__

    def no_crepes(name, *args, **kwargs):
        if name == "crepes":
            raise ImportError("crepes hidden by the test")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_crepes)
    without = conformal.p_values(test, calibration, CLASSES)
    assert calibration["library"].startswith("crepes")
    assert np.allclose(with_library, expected) and np.allclose(without, expected)


def test_split_conformal_reaches_the_coverage_thanks_to_the_finite_sample_correction():
    """n = 25 pooled calibration images at 90 %: the (n + 1) rank gives 24/26 = 0.923 expected coverage;
    the uncorrected quantile (rank ceil(0.9 n) = 23) would give 23/26 = 0.885, below what was promised."""
    rng = np.random.default_rng(1)
    covered, sizes = [], []
    for _ in range(300):
        probabilities, labels = _simulate(rng, 25)
        calibration = conformal.fit_conformal(probabilities, labels, CLASSES)
        test, truth = _simulate(rng, 40)
        sets = conformal.prediction_sets(test, calibration, CLASSES, 0.9)
        covered.append(_coverage(sets, truth).mean())
        sizes.append(np.mean([len(found) for found in sets]))
    assert calibration["mode"] == "pooled"
    assert 0.9 <= np.mean(covered) <= 0.9 + 1 / 26 + 0.01
    assert 1.0 < np.mean(sizes) < len(CLASSES)  # informative: neither every class nor a forced singleton


def test_a_class_with_enough_calibration_images_is_covered_on_its_own():
    """A class the model is unsure of is under-covered by a pooled threshold; Mondrian (its own scores,
    >= MIN_PER_CLASS images) restores the coverage for that class."""
    rng = np.random.default_rng(2)
    probabilities, labels = _simulate(rng, 400, hard_class=0)
    mondrian = conformal.fit_conformal(probabilities, labels, CLASSES)
    pooled = dict(mondrian, class_scores={})
    test, truth = _simulate(rng, 4000, hard_class=0)
    hard = truth == 0

    assert mondrian["mode"] == "class-conditional" and set(mondrian["class_scores"]) == set(CLASSES)
    own = _coverage(conformal.prediction_sets(test, mondrian, CLASSES, 0.9), truth)
    shared = _coverage(conformal.prediction_sets(test, pooled, CLASSES, 0.9), truth)
    assert shared[hard].mean() < 0.85 <= 0.88 <= own[hard].mean()


def test_a_class_with_few_calibration_images_uses_the_pooled_scores():
    rng = np.random.default_rng(3)
    probabilities, labels = _simulate(rng, 70)
    labels[labels == 3] = 0
    labels[:5] = 3  # five images of "d": fewer than MIN_PER_CLASS
    calibration = conformal.fit_conformal(probabilities, labels, CLASSES)
    assert "d" not in calibration["class_scores"] and calibration["class_counts"]["d"] == 5
    assert calibration["mode"] == "class-conditional where enough, pooled otherwise"
    assert calibration["thresholds"]["d"] == conformal._threshold(np.asarray(calibration["pooled_scores"]), 0.9)


def test_too_few_calibration_images_admit_every_class():
    """With 5 images no rank reaches 90 % (ceil(6 x 0.9) = 6 > 5): the honest set is every class."""
    probabilities = np.full((5, 4), 0.25)
    calibration = conformal.fit_conformal(probabilities, np.arange(5) % 4, CLASSES)
    assert calibration["thresholds"]["a"] is None
    assert conformal.prediction_set([0.97, 0.01, 0.01, 0.01], calibration, CLASSES, 0.9) == CLASSES


def test_a_set_is_never_empty_the_most_probable_class_stands_in():
    """Calibration images all answered at 0.999: a 0.99 answer is less sure than 90 % of them, so no class
    passes; the set is the answer itself, not "none of the categories"."""
    probabilities = np.full((40, 4), 0.000333)
    probabilities[np.arange(40), np.arange(40) % 4] = 0.999
    calibration = conformal.fit_conformal(probabilities, np.arange(40) % 4, CLASSES)
    assert conformal.p_values([[0.99, 0.004, 0.003, 0.003]], calibration, CLASSES).max() <= 0.1
    assert conformal.prediction_set([0.004, 0.99, 0.003, 0.003], calibration, CLASSES, 0.9) == ["b"]
    assert conformal.prediction_set([0.0003, 0.999, 0.0004, 0.0003], calibration, CLASSES, 0.9) == ["b"]


def test_knn_scores_are_the_kth_neighbour_distance_and_the_threshold_the_corrected_rank():
    rng = np.random.default_rng(4)
    train, held_out = rng.normal(size=(50, 8)), rng.normal(size=(39, 8))
    held_out_scores = ood.knn_scores(ood.normalise(train).astype(np.float16), held_out, 3)
    report, bank = ood.fit_knn(train, held_out_scores, k=3)
    queries = rng.normal(size=(5, 8))
    unit = ood.normalise(train)
    distances = np.linalg.norm(ood.normalise(queries)[:, None] - unit[None], axis=2)
    expected = np.sort(distances, 1)[:, 2]
    assert np.allclose(ood.knn_scores(bank, queries, 3), expected, atol=2e-3)  # the bank is float16
    scores = np.sort(ood.knn_scores(bank, held_out, 3))
    assert report["threshold"] == pytest.approx(scores[37])  # ceil(40 x 0.95) = 38th smallest
    assert bank.dtype == np.float16 and report["bank_size"] == 50


def test_the_bank_is_capped(monkeypatch):
    monkeypatch.setattr(ood, "MAX_BANK", 16)
    report, bank = ood.fit_knn(np.random.default_rng(5).normal(size=(40, 4)), np.zeros(0))
    assert bank.shape == (16, 4) and report["threshold"] is None


@pytest.fixture(scope="module")
def trust_run(tmp_path_factory):
    """The product's frozen-feature training (64 px, few images) on three synthetic textures."""
    from classifier.config import TrainConfig
    from classifier.train import train
    from tests.classifier.conftest import make_dataset

    root = tmp_path_factory.mktemp("trust")
    items = make_dataset(root / "train", {"dots": 12, "noise": 12, "stripes": 12}, seed=5)
    test_items = make_dataset(root / "test", {"dots": 3, "noise": 3, "stripes": 3}, seed=6)
    config = TrainConfig(seed=2, sizes=(64,), epochs=(1,), batch_sizes=(16,))
    return train(items, config, str(root / "model.safetensors"), test_items=test_items), test_items


def test_the_artifact_carries_the_calibration_and_the_detector_and_the_engine_uses_them(trust_run, tmp_path):
    from PIL import Image

    from classifier.artifact import load_artifact, read_metadata
    from classifier.engine import Engine

    result, test_items = trust_run
    metadata = read_metadata(result.artifact_path)
    assert metadata["conformal"]["n"] == metadata["calibration"]["n"] > 0
    assert metadata["conformal"]["mode"] == "pooled"  # a few held-out images per class
    assert metadata["out_of_scope"]["n_held_out"] == 36  # every training image, against the other folds
    # no series given and too few images for clusters: folds of images, and the metadata says so
    assert metadata["out_of_scope"]["held_out_by"] == metadata["conformal"]["held_out_by"] == "images"
    bank = load_artifact(result.artifact_path).state_dict[ood.BANK_KEY]
    assert str(bank.dtype) == "torch.float16" and bank.shape[0] == metadata["out_of_scope"]["bank_size"]

    engine = Engine.from_artifact(result.artifact_path, expected_sha256=result.sha256)
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((96, 96), 127, np.uint8)).save(blank)
    predictions = engine.predict_paths([path for path, _ in test_items] + [str(blank)])
    scores = np.array([p.ood_score for p in predictions])
    assert scores[-1] > metadata["out_of_scope"]["threshold"] and predictions[-1].out_of_scope
    assert sum(p.out_of_scope for p in predictions[:-1]) <= 3  # nine held-out images set the threshold
    sets = conformal.prediction_sets(
        [p.probabilities for p in predictions[:-1]], metadata["conformal"], engine.classes, 0.9
    )
    assert all(found for found in sets)  # with the classes this separable every set holds at least one


def test_held_out_scores_are_against_the_other_folds_only():
    """An image's twin in its own fold must not count (it would be distance 0): the threshold has to see
    the distances of a new series, not of the training images themselves."""
    rng = np.random.default_rng(7)
    originals = rng.normal(size=(10, 6))
    embeddings = np.concatenate([originals, originals])  # image i and i + 10 are twins
    together = [(np.r_[5:10, 15:20], np.r_[0:5, 10:15]), (np.r_[0:5, 10:15], np.r_[5:10, 15:20])]
    apart = [(np.r_[10:20], np.r_[0:10]), (np.r_[0:10], np.r_[10:20])]
    assert ood.held_out_knn_scores(embeddings, together).min() > 0.3
    assert ood.held_out_knn_scores(embeddings, apart).max() < 0.05  # float16 bank: not exactly 0


def test_the_outlier_classifier_learns_the_outside_and_its_threshold_is_the_held_out_rank():
    """Micrographs in one region of feature space, made outliers in another: an unseen outlier of the same
    kind passes the threshold, which is the corrected rank of the training images' held-out scores."""
    rng = np.random.default_rng(11)
    inside = rng.normal(size=(60, 16)) + np.r_[4.0, np.zeros(15)]
    outside = rng.normal(size=(20, 16)) + np.r_[0.0, 4.0, np.zeros(14)]
    folds = [(np.setdiff1d(np.arange(60), held), held) for held in np.array_split(np.arange(60), 5)]
    report, weight = ood.fit_outlier_classifier(inside, outside, folds)
    held_out = np.zeros(60)
    for train_idx, held_idx in folds:
        _, fold_weight = ood.fit_outlier_classifier(inside[train_idx], outside, [])
        held_out[held_idx] = ood.linear_scores(fold_weight, inside[held_idx])
    assert report["threshold"] == pytest.approx(np.sort(held_out)[57], abs=1e-5)  # ceil(61 x 0.95) = 58th
    assert report["n_outliers"] == 20 and weight.shape == (17,)
    unseen_outliers = rng.normal(size=(10, 16)) + np.r_[0.0, 4.0, np.zeros(14)]
    unseen_micrographs = rng.normal(size=(10, 16)) + np.r_[4.0, np.zeros(15)]
    assert (ood.linear_scores(weight, unseen_outliers) > report["threshold"]).all()
    assert (ood.linear_scores(weight, unseen_micrographs) < report["threshold"]).mean() >= 0.9
    assert ood.fit_outlier_classifier(inside, np.zeros((0, 16)), folds) == (None, None)


def test_an_image_is_out_of_scope_when_either_detector_says_so():
    report = {"k": 1, "threshold": 0.5, "outlier_classifier": {"threshold": 0.0}}
    scorer = ood.OutOfScopeScorer(np.eye(3, dtype=np.float16), report, np.r_[0.0, 0.0, 1.0, -0.5])
    embeddings = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    knn, linear = scorer.scores(embeddings), scorer.outlier_scores(embeddings)
    assert knn[0] < 0.5 < knn[1] and linear[2] > 0 > linear[0]
    assert scorer.out_of_scope(knn, linear).tolist() == [False, True, True]
    assert scorer.out_of_scope(knn).tolist() == [False, True, False]  # the kNN alone misses the third
    older = ood.OutOfScopeScorer(np.eye(3, dtype=np.float16), {"k": 1, "threshold": 0.5})  # an artifact before
    assert older.outlier_scores(embeddings) is None


def test_the_trained_artifact_carries_the_outlier_classifier_and_flags_a_grey_photo(trust_run, tmp_path):
    import matplotlib
    from PIL import Image

    from classifier.artifact import load_artifact, read_metadata
    from classifier.engine import Engine
    from classifier.outliers import made_outliers

    result, test_items = trust_run
    classifier = read_metadata(result.artifact_path)["out_of_scope"]["outlier_classifier"]
    # the made outliers and 12 training images defocused (make_dataset: each image its own series)
    assert classifier["n_outliers"] == len(made_outliers()) + 12 and classifier["n_held_out"] == 36
    extras = load_artifact(result.artifact_path).extra_tensors()
    assert extras[ood.OUTLIERS_KEY].shape[0] == classifier["n_outliers"]
    assert extras[ood.OUTLIER_WEIGHT_KEY].shape[0] == extras[ood.BANK_KEY].shape[1] + 1

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    grey = tmp_path / "grey.png"
    Image.open(photo).convert("L").resize((300, 380)).save(grey)
    engine = Engine.from_artifact(result.artifact_path, expected_sha256=result.sha256)
    predictions = engine.predict_paths([path for path, _ in test_items] + [str(grey)])
    assert predictions[-1].out_of_scope
    assert sum(p.out_of_scope for p in predictions[:-1]) <= 3


def test_curated_outliers_join_the_made_ones(trust_run, tmp_path):
    from classifier.artifact import read_metadata
    from classifier.config import TrainConfig
    from classifier.train import train
    from tests.classifier.conftest import make_dataset

    result, _ = trust_run
    items = make_dataset(tmp_path / "train", {"dots": 12, "noise": 12, "stripes": 12}, seed=5)
    marked = make_dataset(tmp_path / "marked", {"other": 5}, seed=9)
    config = TrainConfig(seed=2, sizes=(64,), epochs=(1,), batch_sizes=(16,))
    with_marked = train(items, config, str(tmp_path / "m.safetensors"), outliers=[path for path, _ in marked])
    before = read_metadata(result.artifact_path)["out_of_scope"]["outlier_classifier"]["n_outliers"]
    assert read_metadata(with_marked.artifact_path)["out_of_scope"]["outlier_classifier"]["n_outliers"] == before + 5
