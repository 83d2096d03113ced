"""Benchmark: labels needed for the same accuracy, by review order (issue 25).

Simulated curators on the real micrographs (`../shared/sem-real*`, bench/real_data.py): for each source
split (seed), the training side is an unlabelled pool whose labels stay hidden from the sampler and are
revealed only for the images it asks for; after every round of 10 labels (up to 160, or the whole pool) the
product's head is fitted (`head_training._fit` with `pooled_dims=1280`: standardisation + logistic regression,
C=0.01 unless --head-c, weighted by `series_weights` over the labelled images' series, mixed 50/50 with the
cosine class means of the pooled features; scored by `head_training._logits`) and scored on the
unseen-source test side. Orders: random, margin only (smallest top-1 - top-2 probability, after a
random first batch), and `classifier.active.select_batch` (typical-and-diverse first, then margin with
diversity).

With --cv, grouped cross-validation instead of one source split per seed (the protocol of
bench/bench_real_cv.py: `StratifiedGroupKFold(5, shuffle=True, random_state=seed)` over the source series of
all 248 images): per fold the other 4 folds are the pool and the fold is the test side; each round's test
predictions are pooled over the 5 folds and scored once per seed (a single source split's test side, 53-67
images from few sources, is too thin to show a curve).

Features are the frozen EfficientNet-Lite0 texture features averaged over the 8 dihedral views, computed
once for all images and cached in `<work>/features.npz` (a few minutes on a 2-core CPU).

    .venv/bin/python bench/bench_active.py --work /tmp/bench-active [--quick] [--cv] [--seeds 0,...,9]
      [--min-per-class 3] [--head-c 0.01] [--pca 32] [--plot bench/active_learning_curve.png]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import real_data  # noqa: E402

BATCH = 16  # images per feature pass
CHECKPOINTS = (10, 20, 40, 80, 160)
STEP = 10  # labels per review round: the sampler sees a model retrained after every round
ORDERS = ("random", "margin", "select_batch")
POOLED_DIMS = 1280  # EfficientNet-Lite0's pooled features: the class means' part of the head


def features(images, work: Path, backbone: str = "efficientnet_lite0") -> np.ndarray:
    """(N, D) raw features of every image, in `images` order, the 8 views averaged; computed once, then read
    from the cache. The backbone's own input size (Lite0 224 px, Lite2 260 px) from the 256-px derivatives."""
    name = "features.npz" if backbone == "efficientnet_lite0" else f"features-{backbone}.npz"
    return _cached(images, work, name, lambda paths: _extract(paths, backbone))


def per_view_features(images, work: Path) -> np.ndarray:
    """(N, 8, D) Lite0 features of each dihedral view of each image, cached like ``features``."""
    return _cached(images, work, "features-views.npz", lambda paths: view_features_of(paths, "efficientnet_lite0"))


def _cached(images, work: Path, name: str, compute) -> np.ndarray:
    cache = work / name
    keys = np.array([str(image.path) for image in images])
    if cache.exists():
        stored = np.load(cache)
        if np.array_equal(stored["keys"], keys):
            return stored["features"]
    derived = real_data.derivatives(images, work / "derivatives")
    matrix = compute([derived[image.path] for image in images])
    work.mkdir(parents=True, exist_ok=True)
    np.savez(cache, keys=keys, features=matrix)
    return matrix


def _extract(paths: list[str], name: str) -> np.ndarray:
    return view_features_of(paths, name).mean(1)


def view_features_of(paths: list[str], name: str) -> np.ndarray:
    """(N, 8, D) raw features of each dihedral view of each derivative, as the engine computes them (the
    folded body, the views in one pass)."""
    import torch

    from classifier import transforms
    from classifier.backbones import get_backbone, load_pretrained_body
    from classifier.feature_head import build_classifier, view_features, with_folded_batchnorm

    backbone = get_backbone(name)
    body, _ = load_pretrained_body(backbone)
    # embed() would standardise with the unfitted buffers (zeros/ones); the raw features are wanted here
    model = with_folded_batchnorm(build_classifier(backbone, 2, body), backbone)
    chunks = []
    for start in range(0, len(paths), BATCH):
        arrays = [transforms.eval_array(path, backbone.input_size) for path in paths[start : start + BATCH]]
        batch = transforms.normalise_batch(torch.from_numpy(np.stack(arrays)), backbone.mean, backbone.std)
        with torch.inference_mode():
            chunks.append(view_features(model.features, batch, 8).transpose(0, 1).float().numpy())
        print(f"features {start + len(arrays)}/{len(paths)}", flush=True)
    return np.concatenate(chunks)


class Pool:
    """One split: raw pool features with hidden labels, and the test side; classes as indices of all images'
    classes. ``train`` and ``test`` are positions in ``images``; ``test`` is kept (``test_index``) so that
    predictions of several folds can be pooled."""

    def __init__(self, images, matrix, train, test, seed: int, dims: int = 0, fold: int | None = None):
        # a shuffled pool, so that no order inherits the manifest's grouping by source
        rng = np.random.default_rng(seed if fold is None else [seed, fold])
        train = [train[i] for i in rng.permutation(len(train))]
        self.classes = sorted({image.category for image in images})
        pool = matrix[train].astype(np.float64)
        mean, scale = pool.mean(0), pool.std(0)
        scale[scale < 1e-6] = 1.0
        # label-free statistics of the whole pool: what the sampler's embedding may use
        self.embeddings = (pool - mean) / scale
        self.sampler_dims = dims  # select_batch's cold start clusters a PCA of these, as the portal does
        # select_batch's class_names: all classes (False), or only the classes the model would know (True)
        self.model_classes = False
        self.x, self.y = pool, np.array([self.classes.index(images[i].category) for i in train])
        self.groups = [images[i].group for i in train]  # series: known at import, unlike the labels
        self.test_index = np.asarray(test, dtype=int)
        self.x_test = matrix[self.test_index].astype(np.float64)
        self.y_test = np.array([self.classes.index(images[i].category) for i in test], dtype=int)


def source_pool(images, matrix, seed: int, dims: int = 0) -> Pool:
    """One source split (`real_data.split_by_source`): its training side is the pool."""
    train, test = real_data.split_by_source(images, seed)
    position = {image.path: i for i, image in enumerate(images)}
    return Pool(images, matrix, [position[i.path] for i in train], [position[i.path] for i in test], seed, dims)


def fold_pools(images, matrix, seed: int, dims: int = 0) -> list[Pool]:
    """Grouped cross-validation (`bench_real_cv.folds`: StratifiedGroupKFold over the source series, 5 folds
    shuffled by the seed): per fold, the other folds are the pool and the fold is the test side."""
    from bench import bench_real_cv

    return [
        Pool(images, matrix, list(train), list(test), seed, dims, fold)
        for fold, (train, test) in enumerate(bench_real_cv.folds(images, seed))
    ]


def fit_predict(pool: Pool, labelled: np.ndarray, seed: int, c: float):
    """The product's head on the labelled images: (pool probabilities (N, C), test predictions).

    `head_training._fit` with `pooled_dims=1280` (logistic regression mixed 50/50 with the cosine class
    means of the pooled features) and `series_weights` over the labelled images' series (a series is known
    at import, its label only once asked), scored by `head_training._logits`, the module's own arithmetic.
    No temperature: the product cross-fits one, which needs several labelled series per class, and a
    temperature does not change which class is predicted."""
    from classifier.calibration import softmax
    from classifier.head_training import _fit, _logits, series_weights

    x, y = pool.x[labelled], pool.y[labelled]
    present = np.unique(y)
    probabilities = np.zeros((len(pool.x), len(pool.classes)))
    if len(present) < 2:  # nothing to separate: the only class seen is the answer
        probabilities[:, present[0]] = 1.0
        return probabilities, np.full(len(pool.x_test), present[0])
    weights = series_weights(y, [pool.groups[i] for i in np.flatnonzero(labelled)])
    head = _fit(x, y, weights, len(pool.classes), c, seed, pooled_dims=POOLED_DIMS)
    probabilities = softmax(_logits(head, pool.x), 1.0)
    return probabilities, _logits(head, pool.x_test).argmax(1)


def scores(y_true, predictions) -> tuple[float, float]:
    """(accuracy, macro recall over the classes present in ``y_true``)."""
    from sklearn.metrics import recall_score

    accuracy = float(np.mean(predictions == y_true))
    recall = recall_score(y_true, predictions, labels=np.unique(y_true), average="macro", zero_division=0)
    return accuracy, float(recall)


def pooled_scores(pools: list[Pool], predictions: list[np.ndarray]) -> tuple[float, float]:
    """Scores of the test predictions of several pools (the folds), pooled into one set."""
    return scores(np.concatenate([pool.y_test for pool in pools]), np.concatenate(predictions))


def next_batch(order: str, pool: Pool, labelled, probabilities, size: int, seed: int, rng, min_per_class: int):
    """(indices to reveal, whether the order used the model's uncertainty this round)."""
    unlabelled = np.flatnonzero(~labelled)
    if order == "random" or (order == "margin" and probabilities is None):
        return rng.choice(unlabelled, size, replace=False), False
    if order == "margin":
        top = np.sort(probabilities[unlabelled], axis=1)[:, ::-1]
        return unlabelled[np.argsort(top[:, 0] - top[:, 1], kind="stable")[:size]], True
    from classifier.active import select_batch

    labels = [pool.classes[c] if known else None for c, known in zip(pool.y, labelled)]
    names = pool.classes
    if pool.model_classes and probabilities is not None:
        # as the Review page: the model's classes, i.e. those with at least min_per_class labels (fewer
        # than two: no model yet), their probabilities renormalised
        known = np.flatnonzero(np.bincount(pool.y[labelled], minlength=len(names)) >= min_per_class)
        if len(known) >= 2:
            names = [pool.classes[k] for k in known]
            probabilities = probabilities[:, known] / probabilities[:, known].sum(1, keepdims=True).clip(1e-12)
        else:
            probabilities = None
    picks = select_batch(
        pool.embeddings,
        labelled,
        labels,
        probabilities,
        size,
        min_per_class,
        seed,
        class_names=names,
        sampler_dims=pool.sampler_dims,
    )
    return np.array([index for index, _ in picks]), picks[0][1].startswith("model unsure")


def curve(order: str, pool: Pool, seed: int, min_per_class: int, c: float):
    """({labels: test predictions} after every round, up to the last checkpoint or the whole pool; labels at
    hand when the order first used the model's probabilities, or None)."""
    rng = np.random.default_rng(1000 + seed)
    labelled = np.zeros(len(pool.y), bool)
    probabilities, points, switched = None, {}, None
    end = min(CHECKPOINTS[-1], len(pool.y))
    while labelled.sum() < end:
        size = min(STEP, end - int(labelled.sum()))
        chosen, uncertain = next_batch(order, pool, labelled, probabilities, size, seed, rng, min_per_class)
        if uncertain and switched is None:
            switched = int(labelled.sum())  # labels at hand when the order first followed the model
        assert not labelled[chosen].any() and len(chosen) == size
        labelled[chosen] = True  # the curator reveals these labels, and only these
        probabilities, predictions = fit_predict(pool, labelled, seed, c)
        points[int(labelled.sum())] = predictions
    return points, switched


def pooled_curves(pools: list[Pool], seed: int, min_per_class: int, c: float) -> list[dict]:
    """One run per order: each fold's curve, its predictions pooled over the folds and scored once per round
    (the rounds every fold reached); with all pool labels likewise."""
    everything = pooled_scores(pools, [fit_predict(pool, np.ones(len(pool.y), bool), seed, c)[1] for pool in pools])
    runs = []
    for order in ORDERS:
        curves, switched = zip(*(curve(order, pool, seed, min_per_class, c) for pool in pools))
        counts = sorted(set.intersection(*(set(points) for points in curves)))
        points = {n: pooled_scores(pools, [points[n] for points in curves]) for n in counts}
        runs.append({"seed": seed, "order": order, "curve": points, "all": everything, "switched": list(switched)})
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument("--quick", action="store_true", help="one split (seed 0): a check of the wiring")
    parser.add_argument(
        "--cv", action="store_true", help="grouped 5-fold cross-validation per seed, predictions pooled over folds"
    )
    parser.add_argument("--min-per-class", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--pca", type=int, default=32, help="the cold start clusters a PCA to this many dims, as the portal (0: none)"
    )
    parser.add_argument("--head-c", type=float, default=0.01, help="the logistic regression's C")
    parser.add_argument(
        "--model-classes",
        action="store_true",
        help="select_batch's class_names are the classes with min-per-class labels or more (the portal passes "
        "the model's classes), not all classes: its cold start ends once those have a model",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        help="PNG path (default bench/active_learning_curve.png, with --cv active_learning_curve_cv.png; "
        "none with --quick)",
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    images = real_data.load_images()
    matrix = features(images, args.work)
    runs = []
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    for seed in seeds:
        started = time.monotonic()
        pools = fold_pools(images, matrix, seed, args.pca) if args.cv else [source_pool(images, matrix, seed, args.pca)]
        for pool in pools:
            pool.model_classes = args.model_classes
        if args.cv:
            seed_runs = pooled_curves(pools, seed, args.min_per_class, args.head_c)
        else:
            seed_runs = source_curves(pools[0], seed, args)
        for run in seed_runs:
            print(seed, run["order"], f"model from {run['switched']}:", rounded(run["curve"]), flush=True)
        print(f"seed {seed}: {time.monotonic() - started:.1f} s", flush=True)
        runs += seed_runs
    table = report(runs)
    print(table)
    if args.plot or not args.quick:  # a one-split check must not overwrite the committed figure
        default = "active_learning_curve_cv.png" if args.cv else "active_learning_curve.png"
        unit = "seeds of grouped 5-fold cross-validation" if args.cv else "source splits"
        plot(runs, args.plot or Path(__file__).with_name(default), unit)


def source_curves(pool: Pool, seed: int, args) -> list[dict]:
    """One run per order on one source split, scored on its test side."""
    everything = scores(pool.y_test, fit_predict(pool, np.ones(len(pool.y), bool), seed, args.head_c)[1])
    runs = []
    for order in ORDERS:
        points, switched = curve(order, pool, seed, args.min_per_class, args.head_c)
        points = {n: scores(pool.y_test, predictions) for n, predictions in points.items()}
        runs.append({"seed": seed, "order": order, "curve": points, "all": everything, "switched": switched})
    return runs


def rounded(points) -> dict:
    return {n: round(accuracy, 3) for n, (accuracy, _) in points.items()}


def report(runs) -> str:
    """Markdown: accuracy and macro recall on the unseen sources, mean ± sd over seeds, per order."""
    counts = sorted({n for run in runs for n in run["curve"] if n in CHECKPOINTS or n == max(run["curve"])})
    lines = [
        "| order | metric | " + " | ".join(str(n) for n in counts) + " | all pool images |",
        "|---|---|" + "---|" * (len(counts) + 1),
    ]
    for order in ORDERS:
        group = [run for run in runs if run["order"] == order]
        for metric, name in enumerate(("accuracy", "macro recall")):
            cells = [real_data.mean_sd([run["curve"][n][metric] for run in group]) for n in counts]
            cells.append(real_data.mean_sd([run["all"][metric] for run in group]))
            lines.append(f"| {order} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + paired_table(runs, counts) + "\n\n" + reach_table(runs)


def paired_table(runs, counts) -> str:
    """Each metric minus random's on the same split (mean ± sd over seeds, seeds ahead): the splits differ
    far more from one another than the orders do, so the paired difference is the fairer comparison."""
    by = {(run["seed"], run["order"]): run for run in runs}
    seeds = sorted({run["seed"] for run in runs})
    lines = [
        "| minus random's | metric | " + " | ".join(str(n) for n in counts) + " |",
        "|---|---|" + "---|" * len(counts),
    ]
    for order in ORDERS[1:]:
        for metric, name in enumerate(("accuracy", "macro recall")):
            cells = []
            for n in counts:
                gaps = [by[s, order]["curve"][n][metric] - by[s, "random"]["curve"][n][metric] for s in seeds]
                cells.append(f"{real_data.mean_sd(gaps)} ({sum(g > 0 for g in gaps)}/{len(gaps)} ahead)")
            lines.append(f"| {order} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def labels_to_reach(run, target: float, stay: bool):
    """The fewest labels (rounds of STEP) after which accuracy is at least ``target`` (with ``stay``: and
    remains so in every later round); None if never."""
    ordered = sorted(run["curve"].items())
    for position, (n, _) in enumerate(ordered):
        later = ordered[position:] if stay else ordered[position : position + 1]
        if all(accuracy >= target - 1e-9 for _, (accuracy, _) in later):
            return n
    return None


def reach_table(runs) -> str:
    """Per seed: labels each order needs to reach random's accuracy at its last round."""
    seeds = sorted({run["seed"] for run in runs})
    by = {(run["seed"], run["order"]): run for run in runs}
    header = "| order | criterion | " + " | ".join(f"seed {s}" for s in seeds) + " | median | mean ± sd (reached) |"
    lines = [header, "|---|---|" + "---|" * (len(seeds) + 2)]
    for order in ORDERS:
        for stay, criterion in ((False, "first reaches"), (True, "reaches and stays")):
            needed = []
            for seed in seeds:
                last = max(by[seed, "random"]["curve"])
                needed.append(labels_to_reach(by[seed, order], by[seed, "random"]["curve"][last][0], stay))
            cells = ["—" if n is None else str(n) for n in needed]
            reached = [n for n in needed if n is not None]
            median = f"{np.median(reached):.0f}" if reached else "—"
            spread = f"{np.mean(reached):.0f} ± {np.std(reached, ddof=1):.0f}" if len(reached) > 1 else "—"
            lines.append(
                f"| {order} | {criterion} | "
                + " | ".join(cells)
                + f" | {median} | {spread} ({len(reached)}/{len(seeds)}) |"
            )
    switched = [run["switched"] for run in runs if run["order"] == "select_batch"]
    per = " (per seed, per fold)" if any(isinstance(s, list) for s in switched) else ""
    lines.append(f"\nselect_batch followed the model from these label counts on{per}: {switched} (None: never).")
    return "\n".join(lines)


def plot(runs, path: Path, unit: str = "source splits") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for order in ORDERS:
        group = [run for run in runs if run["order"] == order]
        counts = sorted(set.intersection(*(set(run["curve"]) for run in group)))
        for metric, axis in enumerate(axes):
            values = np.array([[run["curve"][n][metric] for n in counts] for run in group])
            mean, sd = values.mean(0), values.std(0, ddof=1) if len(group) > 1 else 0 * values.mean(0)
            axis.plot(counts, mean, label=order)
            axis.fill_between(counts, mean - sd, mean + sd, alpha=0.15)
    for axis, name in zip(axes, ("accuracy", "macro recall")):
        axis.set(xlabel="labels", ylabel=f"{name}, unseen sources", xscale="log")
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.suptitle(f"Review order on the real SEM images (mean ± sd over {len({r['seed'] for r in runs})} {unit})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
