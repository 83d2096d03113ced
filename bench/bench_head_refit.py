"""Benchmark: a head refit on stored embeddings against a full training, on real images (issue 25, item 3).

The lab's situation: production was trained on the labels it had; a review session added more. The
portal then refits production's head on the embeddings production stored when it classified each image
(classifier/head_refit.py) instead of computing every image's features again. Side by side, on the same
grouped folds as `bench/bench_real_cv.py` (StratifiedGroupKFold, 5 folds over the source series of all 248
real images, predictions pooled over the folds), per seed:

- `base (half the labels)`: the worker's training function (`classifier.train.train`, the settings'
  defaults) on half the fold's training series (a StratifiedGroupKFold(2) half): production before the session.
- `head refit (all labels)`: `head_refit.refit_head` on all the fold's training images, from the float16
  embeddings the base's engine returns for them (what the portal stores); the fold scored from the
  base's stored embeddings of its images (`Engine.predict_base_embeddings`, what the backlog does).
- `full training (all labels)`: the worker's training function on all the fold's training images.

Prints accuracy, macro recall, macro-F1, ECE and wall time (the refit's: fitting and saving; the
embeddings are computed once at classification, timed apart), and how often refit and full agree.

    .venv/bin/python bench/bench_head_refit.py [--seeds 0] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import real_data  # noqa: E402
from bench_real_cv import folds, score  # noqa: E402


def half_by_series(images, train_idx, seed: int) -> list[int]:
    """The first half (by source series, stratified) of a fold's training side."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels = [images[i].category for i in train_idx]
    groups = [images[i].group for i in train_idx]
    first, _ = next(
        StratifiedGroupKFold(2, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels, groups)
    )
    return [train_idx[i] for i in first]


def run_seed(images, derived, classes, seed: int, threads: int, work: Path) -> tuple[list[dict], dict]:
    from classifier.config import TrainConfig
    from classifier.engine import Engine
    from classifier.head_refit import EmbeddedItem, refit_head
    from classifier.train import train
    from portal.services.learning.training import training_config

    config = TrainConfig.from_dict(training_config({"seed": seed, "num_threads": threads}))
    probabilities = {name: np.zeros((len(images), len(classes))) for name in ("base", "refit", "full")}
    walls = {"base": 0.0, "refit": 0.0, "full": 0.0, "embeddings": 0.0}
    for fold, (train_idx, test_idx) in enumerate(folds(images, seed)):
        fold_classes = sorted({images[i].category for i in train_idx})
        test_idx = [i for i in test_idx if images[i].category in fold_classes]
        half = half_by_series(images, list(train_idx), seed)
        half_classes = sorted({images[i].category for i in half})

        def items(indices):
            return real_data.items([images[i] for i in indices], derived)

        def groups(indices):
            return [images[i].group for i in indices]

        started = time.monotonic()
        base = train(
            items(half),
            config,
            str(work / f"base-{seed}-{fold}.safetensors"),
            classes=half_classes,
            groups=groups(half),
        )
        walls["base"] += time.monotonic() - started
        started = time.monotonic()
        engine = Engine.from_artifact(base.artifact_path, expected_sha256=base.sha256)
        every = list(train_idx) + test_idx
        predictions = engine.predict_paths([path for path, _ in items(every)])
        walls["embeddings"] += time.monotonic() - started
        stored = {i: p.embedding.astype(np.float16) for i, p in zip(every, predictions)}  # as the portal stores them
        place(
            probabilities["base"],
            [p.probabilities for p in predictions[len(train_idx) :]],
            test_idx,
            half_classes,
            classes,
        )

        started = time.monotonic()
        embedded = [EmbeddedItem(path, label, stored[i]) for (path, label), i in zip(items(train_idx), train_idx)]
        out = work / f"refit-{seed}-{fold}.safetensors"
        refit = refit_head(
            base.artifact_path, base.sha256, embedded, [], fold_classes, groups(train_idx), out, config=config
        )
        walls["refit"] += time.monotonic() - started
        refit_engine = Engine.from_artifact(refit.artifact_path, expected_sha256=refit.sha256)
        answers = refit_engine.predict_base_embeddings(np.stack([stored[i] for i in test_idx]))
        place(probabilities["refit"], [p.probabilities for p in answers], test_idx, fold_classes, classes)

        started = time.monotonic()
        full = train(
            items(train_idx),
            config,
            str(work / f"full-{seed}-{fold}.safetensors"),
            test_items=items(test_idx),
            classes=fold_classes,
            groups=groups(train_idx),
        )
        walls["full"] += time.monotonic() - started
        place(probabilities["full"], full.test_probabilities, test_idx, fold_classes, classes)
        print(f"  seed {seed} fold {fold}: base {len(half)} / all {len(train_idx)} training images", flush=True)
    y_true = [image.category for image in images]
    names = {"base": "base (half the labels)", "refit": "head refit (all labels)", "full": "full training (all labels)"}
    rows = [
        score("portal", seed, y_true, probabilities[key], classes, walls[key]) | {"recipe": names[key]} for key in names
    ]
    agreement = float((probabilities["refit"].argmax(1) == probabilities["full"].argmax(1)).mean())
    return rows, {"seed": seed, "refit_full_agreement": agreement, "embeddings_s": walls["embeddings"]}


def place(target: np.ndarray, rows, indices, row_classes, classes) -> None:
    columns = [classes.index(name) for name in row_classes]
    for row, i in zip(rows, indices):
        target[i, columns] = row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    if not real_data.available():
        sys.exit("../shared/sem-real and ../shared/sem-real-2 are needed")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-head-refit-"))
    images = real_data.load_images()
    derived = real_data.derivatives(images, work / "derivatives")  # also sets up Django
    classes = sorted({image.category for image in images})
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        seed_rows, extra = run_seed(images, derived, classes, seed, args.threads, work)
        for row in seed_rows + [extra]:
            print(json.dumps(row), flush=True)
        rows += seed_rows
    print()
    print(real_data.summary_table(rows, "recipe", "wall_s"))


if __name__ == "__main__":
    main()
