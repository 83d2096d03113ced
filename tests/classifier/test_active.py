"""The review order (classifier.active): typical and diverse at the cold start, uncertain and diverse after."""

import numpy as np
import pytest

from classifier.active import select_batch

CLASSES = ["a", "b", "c", "d", "e"]


def blobs(sizes=(40, 30, 25, 20, 15), dim=8, seed=0):
    """Well-separated Gaussian clusters of different sizes: (points, cluster of each point)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 20, (len(sizes), dim))
    points = np.concatenate([centres[i] + rng.normal(0, 1, (n, dim)) for i, n in enumerate(sizes)])
    return points, np.repeat(np.arange(len(sizes)), sizes)


def test_cold_start_covers_every_cluster_before_repeating():
    points, cluster = blobs()
    picks = select_batch(points, np.zeros(len(points), bool), None, None, batch_size=5, min_per_class=3, seed=0)
    assert sorted(cluster[i] for i, _ in picks) == [0, 1, 2, 3, 4]
    assert all(reason.startswith("typical of an uncovered cluster") for _, reason in picks)


def test_cold_start_goes_to_clusters_the_labels_do_not_cover():
    points, cluster = blobs()
    labelled = np.zeros(len(points), bool)
    labelled[[0, 40]] = True  # one image each of clusters 0 and 1
    labels = [CLASSES[c] for c in cluster]
    picks = select_batch(points, labelled, labels, None, batch_size=3, min_per_class=3, seed=1)
    assert sorted(cluster[i] for i, _ in picks) == [2, 3, 4]
    assert not any(labelled[i] for i, _ in picks)


def test_cold_start_picks_the_dense_centre_not_an_outlier():
    points, cluster = blobs(sizes=(50,), dim=4)
    centre = points.mean(0)
    points = np.concatenate([points, centre[None] + 15])  # a far-away stray point in the same cluster
    picks = select_batch(points, np.zeros(len(points), bool), None, None, batch_size=1, min_per_class=1, seed=0)
    chosen = picks[0][0]
    distances = np.linalg.norm(points[:50] - centre, axis=1)
    assert np.linalg.norm(points[chosen] - centre) <= np.quantile(distances, 0.25)


def test_a_category_below_the_minimum_keeps_the_cold_start():
    points, cluster = blobs()
    labelled = np.ones(len(points), bool)
    labelled[:10] = False
    labels = [CLASSES[c] for c in cluster]
    labels[-15:] = ["d"] * 15  # no "e" labelled at all
    probabilities = np.full((len(points), 5), 0.2)
    picks = select_batch(points, labelled, labels, probabilities, 3, 1, 0, class_names=CLASSES)
    assert all(reason.startswith("typical") for _, reason in picks)


def margin_setup():
    """Every point labelled except five per cluster; probabilities whose margin we control."""
    points, cluster = blobs()
    rng = np.random.default_rng(3)
    labelled = np.ones(len(points), bool)
    unlabelled = np.concatenate([np.flatnonzero(cluster == c)[:5] for c in range(5)])
    labelled[unlabelled] = False
    margins = rng.uniform(0.5, 0.9, len(points))
    # cluster 0 holds the five lowest margins of all: a margin-only batch would take them all
    margins[unlabelled[:5]] = [0.01, 0.02, 0.03, 0.04, 0.05]
    for c in range(1, 5):
        margins[unlabelled[5 * c]] = 0.1 + 0.02 * c  # each other cluster: one fairly unsure point
    top = (1 + margins) / 2
    probabilities = np.stack([top, 1 - top, np.zeros_like(top)], 1)
    labels = [CLASSES[c % 3] for c in cluster]
    return points, cluster, labelled, labels, probabilities, margins


def test_margin_phase_takes_low_margins_from_distinct_clusters():
    points, cluster, labelled, labels, probabilities, margins = margin_setup()
    picks = select_batch(points, labelled, labels, probabilities, 5, 1, 0, class_names=CLASSES[:3])
    indices = [i for i, _ in picks]
    assert sorted(cluster[indices]) == [0, 1, 2, 3, 4]
    assert margins[indices[0]] == pytest.approx(0.01)  # the most uncertain of cluster 0 leads
    assert all(margins[i] <= 0.2 for i in indices)  # none of the confident ones
    assert picks[0][1] == "model unsure: a 50\u00a0% / b 50\u00a0%"  # 0.505 / 0.495


def test_batch_is_clipped_to_the_unlabelled_images():
    points, cluster, labelled, labels, probabilities, _ = margin_setup()
    labelled[:] = True
    labelled[[3, 50]] = False
    picks = select_batch(points, labelled, labels, probabilities, 10, 1, 0, class_names=CLASSES[:3])
    assert sorted(i for i, _ in picks) == [3, 50]
    labelled[:] = True
    assert select_batch(points, labelled, labels, probabilities, 10, 1, 0, class_names=CLASSES[:3]) == []


def test_same_seed_same_batch():
    points, _ = blobs()
    mask = np.zeros(len(points), bool)
    assert select_batch(points, mask, None, None, 7, 3, 4) == select_batch(points, mask, None, None, 7, 3, 4)


def test_the_cold_start_in_a_compact_space_still_covers_every_cluster():
    """sampler_dims: the portal clusters the first principal components (classifier.active.compact)."""
    from classifier.active import compact

    points, cluster = blobs(dim=64)
    assert compact(points, 4).shape == (len(points), 4)
    assert np.array_equal(compact(points, 128), points)  # no more dimensions than asked: unchanged
    picks = select_batch(points, np.zeros(len(points), bool), None, None, 5, 3, seed=0, sampler_dims=4)
    assert sorted(cluster[i] for i, _ in picks) == [0, 1, 2, 3, 4]
