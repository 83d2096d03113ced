"""Ablation: how the frozen-feature head's temperature is fitted, under grouped cross-validation (issue 21).

Same folds as `bench/bench_real_cv.py` (StratifiedGroupKFold, 5 folds, source groups, all 248 images of
`../shared/sem-real*`); the features are computed once (`bench/bench_active.py`'s cache: Lite0 texture
features, 8 dihedral views averaged) and each head is fitted per fold with the product's own functions
(`classifier.head_training`). Per variant and seed: accuracy, macro recall, ECE (15 bins) and the
ECE a perfectly calibrated model with the same confidences would show on 248 images (labels drawn from
its own probabilities; the estimator's floor on this little data).

    .venv/bin/python bench/ablate_calibration.py --work /tmp/bench-active [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench_active, bench_real_cv, real_data  # noqa: E402
from classifier import head_training  # noqa: E402
from classifier.calibration import expected_calibration_error, fit_temperature, softmax  # noqa: E402
from classifier.metrics import evaluate  # noqa: E402


def held_out_series(x, y, groups, seed, c):
    """The temperature as the product fitted it before (until f9dd8b7): the first fold of a
    StratifiedGroupKFold(5) as validation, the head refitted on everything afterwards."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_classes = int(y.max()) + 1
    weights = head_training.series_weights(y, groups)
    splitter = StratifiedGroupKFold(5, shuffle=True, random_state=seed)
    train_idx, valid_idx = next(splitter.split(np.zeros(len(y)), y, groups))
    first = head_training._fit(x[train_idx], y[train_idx], weights[train_idx], n_classes, c, seed)
    known = valid_idx[np.isin(y[valid_idx], y[train_idx])]
    temperature = fit_temperature(head_training._logits(first, x[known]), y[known])
    return head_training._fit(x, y, weights, n_classes, c, seed), temperature


def cross_fitted(x, y, groups, seed, c, pooled_dims=None, folds=5):
    """The temperature fitted on out-of-fold logits of every training image (series held out)."""
    head = head_training.fit_head(x[:, None], y, groups, int(y.max()) + 1, c, seed, pooled_dims, folds)
    return head, head["temperature"]


def bias_and_temperature(balanced: bool):
    """Temperature and one bias per class fitted on the out-of-fold logits (Alexandari et al. 2020, BCTS);
    ``balanced`` weighs each class the same in the NLL (favours macro recall)."""

    def variant(x, y, groups, seed, c):
        from scipy.optimize import minimize

        n_classes = int(y.max()) + 1
        weights = head_training.series_weights(y, groups)
        logits, scored = head_training.out_of_fold_logits(x, y, groups, weights, n_classes, c, seed, 5)
        z, t = logits[scored], y[scored]
        w = (1.0 / np.bincount(t, minlength=n_classes))[t] if balanced else np.ones(len(t))
        w = w / w.sum()

        def loss(params):
            scaled = z / np.exp(params[0]) + params[1:]
            scaled = scaled - scaled.max(1, keepdims=True)
            log_p = scaled - np.log(np.exp(scaled).sum(1, keepdims=True))
            return -(w * log_p[np.arange(len(t)), t]).sum() + 1e-3 * (params[1:] ** 2).sum()

        params = minimize(loss, np.zeros(n_classes + 1), method="L-BFGS-B").x
        head = head_training._fit(x, y, weights, n_classes, c, seed)
        temperature = float(np.exp(params[0]))
        head["bias"] = head["bias"] + params[1:] * temperature  # logits / T + b == (logits + b T) / T
        return head, temperature

    return variant


def _oof(x, y, groups, seed, c):
    n_classes = int(y.max()) + 1
    weights = head_training.series_weights(y, groups)
    logits, scored = head_training.out_of_fold_logits(x, y, groups, weights, n_classes, c, seed, 5)
    return head_training._fit(x, y, weights, n_classes, c, seed), logits[scored], y[scored]


def brier_temperature(x, y, groups, seed, c):
    """T minimising the Brier score of the out-of-fold logits (less swayed by confidently wrong series)."""
    from scipy.optimize import minimize_scalar

    head, z, t = _oof(x, y, groups, seed, c)
    onehot = np.eye(z.shape[1])[t]

    def brier(log_t):
        return ((softmax(z, np.exp(log_t)) - onehot) ** 2).sum(1).mean()

    return head, float(np.exp(minimize_scalar(brier, bounds=(-3, 3), method="bounded").x))


def matched_temperature(x, y, groups, seed, c):
    """T at which the out-of-fold mean confidence equals the out-of-fold accuracy."""
    head, z, t = _oof(x, y, groups, seed, c)
    return head, match_confidence(z, t)


def match_confidence(z, t):
    accuracy = (z.argmax(1) == t).mean()
    low, high = np.log(0.05), np.log(20.0)
    for _ in range(50):  # mean confidence falls as T grows: bisection on log T
        middle = (low + high) / 2
        if softmax(z, np.exp(middle)).max(1).mean() > accuracy:
            low = middle
        else:
            high = middle
    return float(np.exp((low + high) / 2))


def no_temperature(x, y, groups, seed, c):
    weights = head_training.series_weights(y, groups)
    n_classes = int(y.max()) + 1
    return head_training._fit(x, y, weights, n_classes, c, seed), 1.0


VARIANTS = {
    "held-out series (before)": held_out_series,
    "cross-fitted": cross_fitted,
    "cross-fitted, Brier T": brier_temperature,
    "cross-fitted, confidence matched to accuracy": matched_temperature,
    "cross-fitted T and class biases": bias_and_temperature(False),
    "cross-fitted T and class biases, balanced NLL": bias_and_temperature(True),
    "T = 1": no_temperature,
    "mixture with class means, cross-fitted (the default)": lambda x, y, g, s, c: cross_fitted(x, y, g, s, c, 1280),
    "mixture, cross-fitted over 10 folds": lambda x, y, g, s, c: cross_fitted(x, y, g, s, c, 1280, 10),
    "mixture, cross-fitted over 3 folds": lambda x, y, g, s, c: cross_fitted(x, y, g, s, c, 1280, 3),
}


def calibrated_floor(probabilities: np.ndarray, rng, draws: int = 200) -> float:
    """Mean ECE when the labels are drawn from the probabilities themselves (perfect calibration)."""
    cumulative = probabilities.cumsum(1)
    values = []
    for _ in range(draws):
        labels = (rng.random((len(probabilities), 1)) > cumulative).sum(1).clip(0, probabilities.shape[1] - 1)
        values.append(expected_calibration_error(probabilities, labels))
    return float(np.mean(values))


def run(images, matrix, seed: int, variant, c: float) -> dict:
    classes = sorted({image.category for image in images})
    y_all = np.array([classes.index(image.category) for image in images])
    probabilities = np.zeros((len(images), len(classes)))
    temperatures = []
    for train_idx, test_idx in bench_real_cv.folds(images, seed):
        present = sorted(set(y_all[train_idx].tolist()))
        local = np.array([present.index(v) for v in y_all[train_idx]])
        groups = [images[i].group for i in train_idx]
        head, temperature = variant(matrix[train_idx], local, groups, seed, c)
        temperatures.append(temperature)
        logits = head_training._logits(head, matrix[test_idx])
        probabilities[np.ix_(test_idx, present)] = softmax(logits, temperature)
    evaluation = evaluate([image.category for image in images], probabilities, classes)
    return {
        "accuracy": evaluation["accuracy"],
        "macro_recall": evaluation["macro_avg"]["recall"],
        "ece": evaluation["ece"],
        "confidence": float(probabilities.max(1).mean()),
        "floor": calibrated_floor(probabilities, np.random.default_rng(seed)),
        "temperatures": temperatures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-active"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--c", type=float, default=0.01)
    parser.add_argument("--only", default="", help="run the variants whose name contains this")
    args = parser.parse_args()
    images = real_data.load_images()
    matrix = bench_active.features(images, args.work).astype(np.float64)
    print("| variant | seed | accuracy | macro recall | ECE | mean confidence | calibrated floor | temperatures |")
    print("|---|---|---|---|---|---|---|---|")
    for name, variant in VARIANTS.items():
        if args.only not in name:
            continue
        rows = []
        for seed in [int(s) for s in args.seeds.split(",")]:
            row = run(images, matrix, seed, variant, args.c)
            rows.append(row)
            temps = ", ".join(f"{t:.2f}" for t in row["temperatures"])
            print(
                f"| {name} | {seed} | {row['accuracy']:.3f} | {row['macro_recall']:.3f} | {row['ece']:.3f} "
                f"| {row['confidence']:.3f} | {row['floor']:.3f} | {temps} |",
                flush=True,
            )
        means = {k: np.mean([r[k] for r in rows]) for k in ("accuracy", "macro_recall", "ece", "confidence", "floor")}
        print(
            f"| {name} | mean | {means['accuracy']:.3f} | {means['macro_recall']:.3f} | {means['ece']:.3f} "
            f"| {means['confidence']:.3f} | {means['floor']:.3f} | |",
            flush=True,
        )


if __name__ == "__main__":
    main()
