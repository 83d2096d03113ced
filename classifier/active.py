"""Which images a curator should label next: the review queue's order (issue 25).

One pure function, `select_batch`, over embeddings (e.g. the model's standardised features, `embed()`),
in two phases:

* Cold start (some category has fewer than ``min_per_class`` curated labels, or no model probabilities
  yet): TypiClust (Hacohen et al., "Active learning on a budget", ICML 2022). With few labels, uncertainty
  scores come from a model that has barely seen the data and pick outliers; typical points of
  not-yet-covered regions teach a linear head more. KMeans into (labelled + batch) clusters; repeatedly
  take the cluster with the fewest labelled members (the largest first) and from it the unlabelled point of
  highest typicality, the inverse mean distance to its k nearest neighbours within the cluster.
* Enough labels: smallest margin (top-1 minus top-2 probability), made diverse so that one batch is not
  twenty tiles of one series: the 5 x batch most uncertain images are clustered into ``batch_size``
  groups and the most uncertain of each group is taken.

The result is a list of (index into ``embeddings``, reason for the curator), most useful first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

# Neighbours for typicality (the paper's 20); fewer in a small cluster.
TYPICALITY_NEIGHBOURS = 20
# Margin candidates per batch slot: enough choice for diversity, few enough to stay uncertain.
CANDIDATES_PER_SLOT = 5
# KMeans beyond this many clusters costs more than it helps; the cold start rarely needs it.
MAX_CLUSTERS = 500
# The cold start's space in the portal: a PCA of the embeddings (label-free) to this many dimensions, as
# TypiClust clusters a compact self-supervised space; on 10,000 images of 2,048 dimensions it makes the
# cold start's KMeans about 3 times cheaper (bench/RESULTS.md, "Active learning").
SAMPLER_DIMS = 32


def select_batch(
    embeddings,
    labelled_mask,
    labels=None,
    probabilities=None,
    batch_size: int = 20,
    min_per_class: int = 5,
    seed: int = 0,
    class_names: Sequence | None = None,
    sampler_dims: int = 0,
) -> list[tuple[int, str]]:
    """The next ``batch_size`` images to review, as [(index, reason)], most useful first.

    embeddings: (N, D) array, one row per image (labelled or not).
    labelled_mask: (N,) booleans, True where a curator has labelled the image.
    labels: length-N sequence with each labelled image's category (a name from ``class_names``, or a
        column index of ``probabilities`` when no names are given); entries of unlabelled images are
        ignored. None: counts unknown, so the cold start is used.
    probabilities: (N, C) class probabilities from the current model, or None before any model.
    class_names: the C categories, in the columns' order; used for the per-category counts and reasons.
    sampler_dims: the cold start clusters the first this many principal components of the embeddings
        (`compact`; 0: the embeddings as given); the margin phase clusters its few candidates as given.
    Returns fewer than ``batch_size`` pairs only when fewer images are unlabelled.
    """
    from .blas import one_blas_thread

    embeddings = np.asarray(embeddings, dtype=np.float64)
    labelled = np.asarray(labelled_mask, dtype=bool)
    batch_size = min(batch_size, int((~labelled).sum()))
    if batch_size <= 0:
        return []
    with one_blas_thread():  # PCA and k-means of a web request: see blas.py
        if _needs_cold_start(labelled, labels, probabilities, min_per_class, class_names):
            return _typical_and_diverse(compact(embeddings, sampler_dims, seed), labelled, batch_size, seed)
        names = list(class_names) if class_names is not None else [str(i) for i in range(probabilities.shape[1])]
        return _uncertain_and_diverse(embeddings, labelled, np.asarray(probabilities), batch_size, seed, names)


def compact(embeddings, dims: int = SAMPLER_DIMS, seed: int = 0) -> np.ndarray:
    """The embeddings projected on their first ``dims`` principal components (unchanged when they have no
    more dimensions, or no more rows, than that): the space `select_batch` clusters in the portal."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if not dims or embeddings.shape[1] <= dims or len(embeddings) <= dims:
        return embeddings
    from sklearn.decomposition import PCA

    return PCA(dims, random_state=seed).fit_transform(embeddings)


def _needs_cold_start(labelled, labels, probabilities, min_per_class: int, class_names) -> bool:
    if probabilities is None or labels is None:
        return True
    categories = list(class_names) if class_names is not None else list(range(np.shape(probabilities)[1]))
    counts = Counter(label for label, known in zip(labels, labelled) if known)
    return any(counts[category] < min_per_class for category in categories)


def _typical_and_diverse(embeddings, labelled, batch_size: int, seed: int) -> list[tuple[int, str]]:
    """TypiClust: one typical image per uncovered cluster, the largest clusters first."""
    n_clusters = min(int(labelled.sum()) + batch_size, MAX_CLUSTERS, len(embeddings))
    clusters = _kmeans(embeddings, n_clusters, seed)
    sizes = np.bincount(clusters, minlength=n_clusters)
    covered = np.bincount(clusters[labelled], minlength=n_clusters)
    taken = labelled.copy()
    picks = []
    for _ in range(batch_size):
        open_ = np.bincount(clusters[~taken], minlength=n_clusters) > 0
        # fewest labelled members first; among those the largest cluster (lexsort: last key is primary)
        order = np.lexsort((-sizes, covered))
        cluster = next(c for c in order if open_[c])
        members = np.flatnonzero(clusters == cluster)
        index = _most_typical(embeddings, members, taken)
        unlabelled_left = int((~taken[members]).sum()) - 1
        if covered[cluster] == 0:
            reason = f"typical of an uncovered cluster ({unlabelled_left} similar unlabelled images)"
        else:
            reason = f"typical of a cluster with {covered[cluster]} labelled ({unlabelled_left} similar unlabelled)"
        picks.append((int(index), reason))
        taken[index] = True
        covered[cluster] += 1
    return picks


def _most_typical(embeddings, members, taken) -> int:
    """The unlabelled member with the smallest mean distance to its nearest neighbours in the cluster."""
    from sklearn.neighbors import NearestNeighbors

    points = embeddings[members]
    k = min(TYPICALITY_NEIGHBOURS, len(members) - 1)
    if k < 1:
        return int(members[0])
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    typicality = 1.0 / (distances[:, 1:].mean(1) + 1e-12)  # column 0 is the point itself
    typicality[taken[members]] = -np.inf
    return int(members[int(np.argmax(typicality))])


def _uncertain_and_diverse(embeddings, labelled, probabilities, batch_size: int, seed: int, names):
    """Smallest margins, at most one per cluster of the 5 x batch most uncertain images."""
    unlabelled = np.flatnonzero(~labelled)
    top = np.sort(probabilities[unlabelled], axis=1)[:, ::-1]
    margins = top[:, 0] - (top[:, 1] if top.shape[1] > 1 else 0.0)
    order = np.argsort(margins, kind="stable")
    candidates = order[: CANDIDATES_PER_SLOT * batch_size]
    if len(candidates) > batch_size:
        clusters = _kmeans(embeddings[unlabelled[candidates]], batch_size, seed)
        # candidates are sorted by margin, so the first of each cluster is its most uncertain
        _, first = np.unique(clusters, return_index=True)
        chosen = np.sort(first)
        # identical embeddings can leave KMeans with fewer clusters: fill up by margin alone
        rest = np.setdiff1d(np.arange(len(candidates)), chosen)[: batch_size - len(chosen)]
        candidates = candidates[np.sort(np.concatenate([chosen, rest]))]
    return [(int(unlabelled[i]), _unsure_reason(probabilities[unlabelled[i]], names)) for i in candidates]


def _unsure_reason(row, names) -> str:
    best, second = np.argsort(row)[::-1][:2] if len(row) > 1 else (0, 0)
    # Percentages as the portal's pages say them (portal.rates.percent: "48 %" with a no-break space);
    # the classifier package does not import the portal.
    return f"model unsure: {names[best]} {row[best] * 100:.0f}\u00a0% / {names[second]} {row[second] * 100:.0f}\u00a0%"


def _kmeans(points, n_clusters: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    n_clusters = max(1, min(n_clusters, len(points)))
    return KMeans(n_clusters=n_clusters, n_init=3, random_state=seed).fit_predict(points)
