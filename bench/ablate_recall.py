"""Ablation: heads on the frozen features for macro recall, under grouped cross-validation (issue 21).

Same folds, features and scoring as `bench/ablate_calibration.py` (StratifiedGroupKFold over the source
series of all 248 images of `../shared/sem-real*`; Lite0 texture features, 8 views averaged, computed once).
The product's logistic-regression head (`classifier.head_training._fit`) against class-prototype heads
and their blends; accuracy and macro recall (the temperature does not change either).

    .venv/bin/python bench/ablate_recall.py --work /tmp/bench-active [--seeds 0,...,9]
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

POOLED = 1280  # Lite0's pooled pre-logits come first in the feature vector


def logistic(x, y, groups, seed, c):
    head = head_training._fit(x, y, head_training.series_weights(y, groups), int(y.max()) + 1, c, seed)
    return lambda x_test: softmax(head_training._logits(head, x_test))


def prototypes(x, y, groups, dims=slice(0, POOLED), per_series=True, sharpness=20.0, centred=False):
    """Cosine similarity to one prototype per class: the mean of its series' means (each series counts
    once) or of its images; a softmax of the similarities."""
    centre = x[:, dims].mean(0) if centred else 0.0  # SimpleShot's CL2N: centre, then L2-normalise
    unit = _unit(x[:, dims] - centre)
    rows = []
    for label in range(int(y.max()) + 1):
        members = np.flatnonzero(y == label)
        if per_series:
            series = sorted({groups[i] for i in members})
            rows.append(np.mean([unit[[i for i in members if groups[i] == s]].mean(0) for s in series], 0))
        else:
            rows.append(unit[members].mean(0))
    centres = _unit(np.array(rows))
    return lambda x_test: softmax(_unit(x_test[:, dims] - centre) @ centres.T * sharpness)


def _unit(matrix):
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True).clip(1e-12)


def blend(weight: float, **prototype_options):
    def variant(x, y, groups, seed, c):
        first = logistic(x, y, groups, seed, c)
        second = prototypes(x, y, groups, **prototype_options)
        return lambda x_test: (1 - weight) * first(x_test) + weight * second(x_test)

    return variant


def standardised_prototypes(x, y, groups, seed, c):
    mean, scale = x.mean(0), x.std(0).clip(1e-6)
    inner = prototypes((x - mean) / scale, y, groups, dims=slice(None), per_series=False)
    return lambda x_test: inner((x_test - mean) / scale)


VARIANTS = {
    "logistic regression (the default)": logistic,
    "image prototypes, pooled": lambda x, y, g, s, c: prototypes(x, y, g, per_series=False),
    "image prototypes, pooled, centred": lambda x, y, g, s, c: prototypes(x, y, g, per_series=False, centred=True),
    "image prototypes, all features standardised": standardised_prototypes,
    "0.5 LR + 0.5 image prototypes (sharpness 20)": blend(0.5, per_series=False),
    "0.5 LR + 0.5 image prototypes (sharpness 40)": blend(0.5, per_series=False, sharpness=40.0),
    "0.5 LR + 0.5 image prototypes (sharpness 80)": blend(0.5, per_series=False, sharpness=80.0),
    "0.3 LR + 0.7 image prototypes (sharpness 20)": blend(0.7, per_series=False),
    "0.3 LR + 0.7 image prototypes (sharpness 40)": blend(0.7, per_series=False, sharpness=40.0),
    "0.5 LR + 0.5 centred prototypes (sharpness 20)": blend(0.5, per_series=False, centred=True),
    "0.5 LR + 0.5 centred prototypes (sharpness 40)": blend(0.5, per_series=False, centred=True, sharpness=40.0),
}


def run(images, matrix, seed: int, variant, c: float) -> dict:
    classes = sorted({image.category for image in images})
    y_all = np.array([classes.index(image.category) for image in images])
    probabilities = np.zeros((len(images), len(classes)))
    for train_idx, test_idx in bench_real_cv.folds(images, seed):
        present = sorted(set(y_all[train_idx].tolist()))
        local = np.array([present.index(v) for v in y_all[train_idx]])
        predict = variant(matrix[train_idx], local, [images[i].group for i in train_idx], seed, c)
        probabilities[np.ix_(test_idx, present)] = predict(matrix[test_idx])
    evaluation = evaluate([image.category for image in images], probabilities, classes)
    return {"accuracy": evaluation["accuracy"], "macro_recall": evaluation["macro_avg"]["recall"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-active"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--c", type=float, default=0.01)
    parser.add_argument("--backbone", default="efficientnet_lite0", help="efficientnet_lite2: its 260-px features")
    parser.add_argument("--only", default="", help="run the heads whose name contains this")
    args = parser.parse_args()
    images = real_data.load_images()
    matrix = bench_active.features(images, args.work, args.backbone).astype(np.float64)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"features: {args.backbone}, {matrix.shape[1]} per image")
    print("| head | accuracy (mean ± sd) | macro recall (mean ± sd) | per seed (accuracy / recall) |")
    print("|---|---|---|---|")
    for name, variant in VARIANTS.items():
        if args.only not in name:
            continue
        rows = [run(images, matrix, seed, variant, args.c) for seed in seeds]
        acc = np.array([r["accuracy"] for r in rows])
        rec = np.array([r["macro_recall"] for r in rows])
        per_seed = ", ".join(f"{a:.3f}/{r:.3f}" for a, r in zip(acc, rec))
        print(
            f"| {name} | {acc.mean():.3f} ± {acc.std(ddof=1):.3f} | {rec.mean():.3f} ± {rec.std(ddof=1):.3f} "
            f"| {per_seed} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
