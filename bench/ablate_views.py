"""Ablation: how many dihedral views inference needs (issue 21, item 2: inference at least as fast as the
resnet34 path it replaced).

The product trains its head on features averaged over the 8 views of each image; the artifact then
averages `tta_views` views at inference, and the body's cost grows with them (bench_backbone_inference.py).
Same folds as `bench/bench_real_cv.py` (StratifiedGroupKFold over the source series of all 248 images of
`../shared/sem-real*`, 5 folds, predictions pooled per seed). Per fold the product's `fit_head` (mixture,
cross-fitted temperature) on the training side's 8-view features; the test side scored with the mean of
its first k views (k = 1, 2, 4, 8). The per-view features are computed once and cached
(`<work>/features-views.npz`, the folded body and one pass for the views, as the engine runs).

    OMP_NUM_THREADS=1 .venv/bin/python bench/ablate_views.py --work /tmp/bench-active [--seeds 0,...,9]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench_active, bench_real_cv, real_data  # noqa: E402
from classifier import head_training  # noqa: E402
from classifier.calibration import softmax  # noqa: E402
from classifier.metrics import evaluate  # noqa: E402

VIEW_COUNTS = (1, 2, 4, 8)


def run(images, views: np.ndarray, seed: int, c: float) -> dict:
    classes = sorted({image.category for image in images})
    y_all = np.array([classes.index(image.category) for image in images])
    probabilities = {k: np.zeros((len(images), len(classes))) for k in VIEW_COUNTS}
    for train_idx, test_idx in bench_real_cv.folds(images, seed):
        present = sorted(set(y_all[train_idx].tolist()))
        local = np.array([present.index(v) for v in y_all[train_idx]])
        groups = [images[i].group for i in train_idx]
        head = head_training.fit_head(views[train_idx], local, groups, len(present), c, seed, pooled_dims=1280)
        for k in VIEW_COUNTS:
            logits = head_training._logits(head, views[test_idx, :k].mean(1))
            probabilities[k][np.ix_(test_idx, present)] = softmax(logits, head["temperature"])
    truth = [image.category for image in images]
    return {k: evaluate(truth, p, classes) for k, p in probabilities.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-active"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--c", type=float, default=0.01)
    args = parser.parse_args()
    images = real_data.load_images()
    views = bench_active.per_view_features(images, args.work).astype(np.float64)
    seeds = [int(s) for s in args.seeds.split(",")]
    results = []
    for seed in seeds:
        results.append(run(images, views, seed, args.c))
        row = ", ".join(f"{k}: {results[-1][k]['accuracy']:.3f}" for k in VIEW_COUNTS)
        print(f"seed {seed} accuracy by views at inference: {row}", flush=True)
    print("| views at inference | accuracy (mean ± sd) | macro recall | ECE | paired accuracy − 8 views |")
    print("|---|---|---|---|---|")
    for k in VIEW_COUNTS:
        acc = np.array([r[k]["accuracy"] for r in results])
        rec = np.array([r[k]["macro_avg"]["recall"] for r in results])
        ece = np.array([r[k]["ece"] for r in results])
        diff = acc - np.array([r[8]["accuracy"] for r in results])
        print(
            f"| {k} | {acc.mean():.3f} ± {acc.std(ddof=1):.3f} | {rec.mean():.3f} ± {rec.std(ddof=1):.3f} "
            f"| {ece.mean():.3f} | {diff.mean():+.3f} ± {diff.std(ddof=1):.3f} ({(diff >= 0).sum()}/{len(diff)} ≥ 0) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
