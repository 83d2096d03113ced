"""Benchmark: the portal's default training against the linear probe, grouped cross-validation on real images.

Data: all 248 images of `../shared/sem-real` + `../shared/sem-real-2`. Folds: scikit-learn's
`StratifiedGroupKFold` (5 folds, shuffled by the seed) over the source groups of bench/real_data.py, so a
source series is never on both sides of a fold; predictions are pooled over the 5 folds and scored once
per seed (a single source split is too thin: one bead series can be 26 of 64 test images). Side by side
on the same folds, per seed:

- `majority`: always the largest class of the fold's training side.
- `linear-probe`: `../shared/tools/linear_probe.py`'s recipe, its own functions imported (originals,
  contrast stretch, 224 px squash, frozen Lite0 pooled features, LogisticRegression balanced).
- `portal`: the worker's exact path: `portal.services.learning.training.training_config()` (the settings'
  defaults, the default time budget) passed to `classifier.train.train` on derivatives made by the
  ingestion service's own functions; pooled probabilities from the engine's evaluation path.
- `reference` (with --reference): `../shared/tools/reference_recipe.py`, leak-free; more than an hour per
  fold on a 2-core CPU.

Prints accuracy, macro recall, macro-F1, ECE and wall time per recipe and seed, mean ± sd, and the
portal − probe differences.

    .venv/bin/python bench/bench_real_cv.py [--seeds 0,1,2] [--portal-seeds 0] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import real_data  # noqa: E402

TOOLS = real_data.SHARED / "tools"
FOLDS = 5


def folds(images, seed: int):
    from sklearn.model_selection import StratifiedGroupKFold

    labels = [image.category for image in images]
    groups = [image.group for image in images]
    splitter = StratifiedGroupKFold(FOLDS, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(images)), labels, groups))


def score(recipe: str, seed: int, y_true: list[str], probabilities: np.ndarray, classes: list[str], wall: float):
    from classifier.metrics import evaluate

    evaluation = evaluate(y_true, probabilities, classes)
    return {
        "recipe": recipe,
        "seed": seed,
        "accuracy": evaluation["accuracy"],
        "macro_recall": evaluation["macro_avg"]["recall"],
        "macro_f1": evaluation["macro_avg"]["f1"],
        "ece": evaluation["ece"] if recipe == "portal" else None,
        "wall_s": wall,
        "n": len(y_true),
    }


def one_hot(predicted: list[str], classes: list[str]) -> np.ndarray:
    out = np.zeros((len(predicted), len(classes)))
    out[np.arange(len(predicted)), [classes.index(p) for p in predicted]] = 1.0
    return out


def run_majority(images, splits, classes, seed):
    predicted = [None] * len(images)
    for train_idx, test_idx in splits:
        largest = Counter(images[i].category for i in train_idx).most_common(1)[0][0]
        for i in test_idx:
            predicted[i] = largest
    return score("majority", seed, [i.category for i in images], one_hot(predicted, classes), classes, 0.0)


def probe_features(images, threads: int) -> tuple[np.ndarray, float]:
    """linear_probe.py's features of every image, once (they do not depend on the fold)."""
    import torch

    sys.path.insert(0, str(TOOLS))
    import linear_probe

    torch.set_num_threads(threads)
    started = time.monotonic()
    model = linear_probe.backbone(0, None)
    chunks = []
    with torch.no_grad():
        for start in range(0, len(images), 32):
            x = torch.stack([linear_probe.tensor(image.path, 224) for image in images[start : start + 32]])
            chunks.append(model.forward_head(model.forward_features(x), pre_logits=True))
    return torch.cat(chunks).numpy(), time.monotonic() - started


def run_probe(images, splits, classes, seed, features, feature_s):
    from sklearn.linear_model import LogisticRegression

    labels = np.array([image.category for image in images])
    predicted = np.empty(len(images), dtype=object)
    started = time.monotonic()
    for train_idx, test_idx in splits:
        model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=3000).fit(
            features[train_idx], labels[train_idx]
        )
        predicted[test_idx] = model.predict(features[test_idx])
    wall = feature_s + time.monotonic() - started
    return score("linear-probe", seed, list(labels), one_hot(list(predicted), classes), classes, wall)


def run_portal(images, splits, classes, seed, derived, threads, work: Path):
    """The worker's training function per fold; the fold's test images scored by the engine's path."""
    from classifier.config import TrainConfig
    from classifier.train import train
    from portal.services.learning.training import training_config

    config = TrainConfig.from_dict(training_config({"seed": seed, "num_threads": threads}))
    probabilities = np.zeros((len(images), len(classes)))
    walls, budgets = [], []
    for fold, (train_idx, test_idx) in enumerate(splits):
        fold_classes = sorted({images[i].category for i in train_idx})
        test_idx = [i for i in test_idx if images[i].category in fold_classes]
        started = time.monotonic()
        result = train(
            real_data.items([images[i] for i in train_idx], derived),
            config,
            str(work / f"portal-{seed}-{fold}.safetensors"),
            test_items=real_data.items([images[i] for i in test_idx], derived),
            classes=fold_classes,
            groups=[images[i].group for i in train_idx],  # the portal passes each image's sample
        )
        walls.append(time.monotonic() - started)
        budgets.append(walls[-1] / config.budget_s if config.budget_s else None)
        for row, i in zip(result.test_probabilities, test_idx):
            probabilities[i, [classes.index(c) for c in fold_classes]] = row
        print(f"  portal seed {seed} fold {fold}: {walls[-1]:.0f} s, views {result.stages[0].get('views')}")
    y_true = [image.category for image in images]
    row = score("portal", seed, y_true, probabilities, classes, sum(walls))
    row["max_budget_used"] = max(b for b in budgets if b is not None) if config.budget_s else None
    row["arch"] = config.arch
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--portal-seeds", default=None, help="seeds for the portal (default: all)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="append one JSON line per run")
    args = parser.parse_args()
    if not real_data.available():
        sys.exit("../shared/sem-real and ../shared/sem-real-2 are needed")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-real-cv-"))
    images = real_data.load_images()
    derived = real_data.derivatives(images, work / "derivatives")  # also sets up Django
    classes = sorted({image.category for image in images})
    features, feature_s = probe_features(images, args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    portal_seeds = [int(s) for s in args.portal_seeds.split(",")] if args.portal_seeds else seeds
    rows = []
    for seed in seeds:
        splits = folds(images, seed)
        runs = [
            run_majority(images, splits, classes, seed),
            run_probe(images, splits, classes, seed, features, feature_s),
        ]
        if seed in portal_seeds:
            runs.append(run_portal(images, splits, classes, seed, derived, args.threads, work))
        for row in runs:
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as handle:
                    handle.write(json.dumps(row) + "\n")
        rows += runs
    print()
    print(f"grouped {FOLDS}-fold cross-validation, {len(images)} images, {len({i.group for i in images})} sources")
    print(real_data.summary_table(rows, "recipe", "wall_s"))
    for seed in portal_seeds:
        by = {r["recipe"]: r for r in rows if r["seed"] == seed}
        p, q = by["portal"], by["linear-probe"]
        print(
            f"seed {seed}: portal − probe: accuracy {p['accuracy'] - q['accuracy']:+.3f}, "
            f"macro recall {p['macro_recall'] - q['macro_recall']:+.3f}; portal ECE {p['ece']:.3f}"
        )


if __name__ == "__main__":
    main()
