"""Benchmark: prediction sets and out-of-scope detection on real micrographs (issue 24, items 2 and 3).

Data: all 248 images of `../shared/sem-real*` (bench/real_data.py), grouped 5-fold cross-validation by
source (bench/bench_real_cv.py's folds: a source series is never on both sides), 3 seeds. Features: the
frozen EfficientNet-Lite0 texture features averaged over the 8 dihedral views, computed once and cached
(bench/bench_active.py's helper). Per fold, the product's own functions on the training side:
`head_training.fit_head` (logistic regression mixed with the class means, temperature cross-fitted on
out-of-fold logits, whole series held out) and `trust_metadata` (the conformal calibration on the
out-of-fold probabilities, the kNN bank and its threshold from out-of-fold distances); then, on the fold's
test side (unseen sources):

- prediction sets at 80 / 90 / 95 % coverage (`classifier.conformal.prediction_sets`): empirical
  coverage (true class in the set), mean set size, share of singletons, pooled over the 5 folds;
- out-of-scope scores (`classifier.ood.KnnScorer`) of the real test images and of an out-of-scope set
  made here from what is installed (matplotlib's sample photos and data rendered as images, rendered
  charts as screenshots, blank, noise and gradient frames, heavily defocused real micrographs): AUROC
  (out-of-scope vs real), the false-abstain rate (real test images over the threshold) and the share
  of each out-of-scope kind detected;
- the outlier classifier (classifier.ood.fit_outlier_classifier, trained per fold as a training run trains
  it: against the made outliers of classifier.outliers and 12 of the fold's training series defocused, 2
  views each): its false abstains, and detection alone and OR-ed with the kNN distance (the product's call).
  The made set holds the kinds it trained on (in-sample for it); ``--holdout DIR`` adds images of kinds it
  never saw, the honest measure. The one used in bench/RESULTS.md: scikit-image's sample images, which are
  not installed here, taken from its wheel without installing it:

      .venv/bin/pip download --no-deps scikit-image==0.26.0 -d /tmp/skw
      unzip -q /tmp/skw/scikit_image-*.whl 'skimage/data/*' -d /tmp/skd
      # then copy as kind-name files, e.g. photo-camera.png, texture-brick.png (the 24 of RESULTS.md:
      # photo: astronaut camera chelsea coffee coins moon motorcycle_left clock_motion rocket;
      # document: page text; texture: brick grass gravel; imaging: cell ihc microaneurysms phantom
      # retina hubble_deep_field; graphic: chessboard_GRAY logo color horse)
- the colour rule (`classifier.colour`, SEMImage.colourfulness above SEM_COLOUR_OUT_OF_SCOPE's default 15)
  on the original files, as ingestion measures it: the share of each kind it flags, alone and OR-ed with
  the detector, and its false-abstain rate on every real file of ../shared (sem-real*, sem-vendor-tiff).
  `--colour-only` measures just this part (seconds; no features, no folds).

    .venv/bin/python bench/bench_trust.py --work /tmp/bench-trust [--seeds 0,1,2] [--threads 2] [--colour-only]
        [--holdout /tmp/skood]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

POOLED_DIMS = 1280  # Lite0's pooled features lead the feature vector: the class means use them

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_active  # noqa: E402
import bench_real_cv  # noqa: E402
import real_data  # noqa: E402

COVERAGES = (0.8, 0.9, 0.95)
RULES = ("knn", "classifier", "either")
SERIES_UNKNOWN = False  # --series-unknown: the training side in one sample, as an import without series
SET_TITLES = {"made": "made set (kinds seen in training)", "holdout": "holdout set (kinds never seen)"}
COLOUR_THRESHOLD = 15.0  # SEM_COLOUR_OUT_OF_SCOPE's default


def out_of_scope_images(folder: Path, real) -> list[real_data.RealImage]:
    """The out-of-scope set, written as PNG files (kind in `category`, one group per file): the product's
    made outliers (classifier.outliers: the training-time outliers of the outlier classifier, so a kind
    seen in training) and 12 real micrographs defocused, one per source."""
    from classifier import outliers

    chosen = [
        image
        for image in real
        if image.path
        in set(outliers.one_per_group([image.path for image in real], [image.group for image in real], 12))
    ]
    made = outliers.made_outliers() + outliers.defocused(
        [image.path for image in chosen], [image.path.stem[:40] for image in chosen]
    )
    return _written(folder, made, "ood")


def _written(folder: Path, made, prefix: str) -> list[real_data.RealImage]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for kind, name, array in made:
        path = folder / f"{kind}-{name}.png"
        if not path.exists():
            Image.fromarray(array).save(path)
        images.append(real_data.RealImage(path, kind, f"{prefix}/{kind}/{name}"))
    return images


def holdout_images(folder: Path | None) -> list[real_data.RealImage]:
    """Out-of-scope images of kinds the outlier classifier never saw: every image file in ``folder``, its
    kind the file name up to the first '-' (see the module's docstring for scikit-image's samples)."""
    if folder is None:
        return []
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".tif", ".tiff"})
    return [real_data.RealImage(p, p.name.split("-")[0], f"holdout/{p.name}") for p in files]


def training_outliers(folder: Path, real) -> tuple[list[real_data.RealImage], list[real_data.RealImage]]:
    """What a training run gives the outlier classifier, as files: the made outliers (all but defocused) and
    every real image's derivative defocused (a fold takes those of 12 of its training series, as
    head_training.outlier_sources does)."""
    from PIL import Image

    from classifier import outliers

    made = _written(folder, outliers.made_outliers(), "made")
    derived = real_data.derivatives(real, folder / "derivatives")
    blurred = []
    for image in real:
        path = folder / f"defocused-{Path(derived[image.path]).stem}.png"
        if not path.exists():
            array = outliers.defocused([derived[image.path]], [""])[0][2]
            Image.fromarray(array).save(path)
        blurred.append(real_data.RealImage(path, "defocused", image.group))
    return made, blurred


def colour_flags(paths) -> np.ndarray:
    """Whether the colour rule puts each file out of scope: the colourfulness of its decoded original,
    measured by the ingestion's own decode (the greyscale derivatives have lost the colour)."""
    from classifier.imageio import load_grey8_and_colourfulness

    return np.array([load_grey8_and_colourfulness(path)[1] > COLOUR_THRESHOLD for path in paths])


def real_files() -> list[Path]:
    """Every real SEM file of ../shared: the benchmark's images and the vendor test TIFFs."""
    vendor = sorted(path for path in (real_data.SHARED / "sem-vendor-tiff").glob("*.tif*"))
    return [image.path for image in real_data.load_images()] + vendor


def colour_report(ood_images, ood_colour, real_colour) -> str:
    kinds = defaultdict(list)
    for image, flagged in zip(ood_images, ood_colour):
        kinds[image.category].append(bool(flagged))
    lines = ["| colour rule (colourfulness > 15) | share flagged |", "|---|---|"]
    lines += [f"| {kind} ({len(flags)}) | {np.mean(flags):.2f} |" for kind, flags in sorted(kinds.items())]
    lines.append(f"| all out-of-scope images ({len(ood_colour)}) | {np.mean(ood_colour):.3f} |")
    lines.append(f"| false abstain: real SEM files ({len(real_colour)}) | {np.mean(real_colour):.3f} |")
    return "\n".join(lines)


def run_fold(matrix, labels, groups, train_idx, test_idx, classes, seed, outlier_data):
    """One fold through the product's functions: (test probabilities, trust metadata, scorer)."""
    from classifier.calibration import softmax
    from classifier.config import TrainConfig
    from classifier.head_training import _logits, fit_head, trust_metadata
    from classifier.ood import BANK_KEY, OUTLIER_WEIGHT_KEY, OutOfScopeScorer
    from classifier.outliers import one_per_group

    config = TrainConfig()
    train_idx = np.asarray(train_idx)
    y = labels[train_idx]
    fold_groups = ["one sample"] * len(train_idx) if SERIES_UNKNOWN else [groups[i] for i in train_idx]
    features = matrix[train_idx][:, None, :]  # (N, views, D): the views are already averaged
    head = fit_head(features, y, fold_groups, len(classes), config.head_c, seed, POOLED_DIMS)
    made, defocused = outlier_data
    # as head_training.outlier_sources: the made outliers and 12 training series defocused (by position)
    chosen = one_per_group([int(i) for i in train_idx], fold_groups, 12)
    outliers = np.r_[made, defocused[chosen]]
    trust, tensors = trust_metadata(head, features, y, fold_groups, classes, seed, outliers)
    weight = tensors[OUTLIER_WEIGHT_KEY].numpy() if OUTLIER_WEIGHT_KEY in tensors else None
    scorer = OutOfScopeScorer(tensors[BANK_KEY].float().numpy(), trust["out_of_scope"], weight)
    probabilities = softmax(_logits(head, matrix[test_idx]), head["temperature"])
    return probabilities, trust, scorer


def detector_scores(scorer, raw: np.ndarray) -> dict[str, np.ndarray]:
    """Each detector's score and flags, and the product's call (either detector) for raw features."""
    knn, linear = scorer.scores(raw), scorer.outlier_scores(raw)
    return {
        "knn_score": knn,
        "classifier_score": linear,
        "knn": scorer.out_of_scope(knn),
        "classifier": scorer.out_of_scope(np.full(len(raw), -np.inf), linear),
        "either": scorer.out_of_scope(knn, linear),
    }


def out_of_scope_fold(scorer, real_raw, sets) -> dict:
    """Per fold: false abstains on the real test images; AUROC and detection per out-of-scope set and kind."""
    from sklearn.metrics import roc_auc_score

    real = detector_scores(scorer, real_raw)
    fold = {"false_abstain": {rule: float(real[rule].mean()) for rule in RULES}}
    for name, (images, raw, colour) in sets.items():
        if not len(images):
            continue
        found = detector_scores(scorer, raw)
        truth = np.r_[np.zeros(len(real_raw)), np.ones(len(raw))]
        kinds = np.array([image.category for image in images])
        fold[name] = {
            "auroc": {
                score: float(roc_auc_score(truth, np.r_[real[f"{score}_score"], found[f"{score}_score"]]))
                for score in ("knn", "classifier")
            },
            "detected": {rule: float(found[rule].mean()) for rule in RULES},
            "with_colour": float((found["either"] | colour).mean()),
            "kinds": {
                kind: {rule: float(found[rule][kinds == kind].mean()) for rule in RULES} for kind in sorted(set(kinds))
            },
        }
    return fold


def evaluate_seed(images, matrix, sets, outlier_data, seed: int) -> dict:
    from classifier.conformal import coverage_report, prediction_sets

    classes = sorted({image.category for image in images})
    labels = np.array([classes.index(image.category) for image in images])
    groups = [image.group for image in images]
    sets_found = {coverage: [None] * len(images) for coverage in COVERAGES}
    known = np.zeros(len(images), bool)  # the image's class has training images in its fold
    modes, folds = [], []
    pooled = np.zeros((len(images), len(classes)))
    for train_idx, test_idx in bench_real_cv.folds(images, seed):
        probabilities, trust, scorer = run_fold(
            matrix, labels, groups, train_idx, test_idx, classes, seed, outlier_data
        )
        for coverage in COVERAGES:
            for i, found in zip(test_idx, prediction_sets(probabilities, trust["conformal"], classes, coverage)):
                sets_found[coverage][i] = found
        modes.append(trust["conformal"]["mode"])
        known[test_idx] = np.isin(labels[test_idx], labels[train_idx])
        pooled[test_idx] = probabilities
        folds.append(out_of_scope_fold(scorer, matrix[test_idx], sets))
    truth = [image.category for image in images]
    return {
        "seed": seed,
        "sets": {str(c): coverage_report(sets_found[c], truth) for c in COVERAGES},
        "sets_known_classes": {
            str(c): coverage_report(
                [s for s, k in zip(sets_found[c], known) if k], [t for t, k in zip(truth, known) if k]
            )
            for c in COVERAGES
        },
        "per_class_coverage_90": _per_class(sets_found[0.9], truth),
        "scores": _scores(truth, pooled, classes),
        "conformal_modes": modes,
        "folds": folds,
    }


def _scores(truth, probabilities, classes) -> dict:
    from classifier.metrics import evaluate

    evaluation = evaluate(truth, probabilities, classes)
    return {
        "accuracy": evaluation["accuracy"],
        "macro_recall": evaluation["macro_avg"]["recall"],
        "ece": evaluation["ece"],
    }


def _per_class(sets, truth) -> dict:
    from classifier.conformal import coverage_report

    out = {}
    for name in sorted(set(truth)):
        rows = [(s, t) for s, t in zip(sets, truth) if t == name]
        out[name] = coverage_report([s for s, _ in rows], [t for _, t in rows])["coverage"]
    return out


def report(runs) -> str:
    mean_sd = real_data.mean_sd
    lines = [
        "| images | coverage asked | empirical coverage | mean set size | singletons | empty |",
        "|---|---|---|---|---|---|",
    ]
    for part, key in (("all", "sets"), ("class seen in training", "sets_known_classes")):
        for coverage in COVERAGES:
            rows = [run[key][str(coverage)] for run in runs]
            cells = [mean_sd([row[k] for row in rows]) for k in ("coverage", "mean_size", "singletons", "empty")]
            lines.append(f"| {part} (n = {rows[0]['n']}) | {coverage:.0%} | " + " | ".join(cells) + " |")
    lines.append("")
    for key in ("accuracy", "macro_recall", "ece"):
        lines.append(f"| test side (pooled per seed): {key} | {mean_sd([run['scores'][key] for run in runs])} |")
    folds = [fold for run in runs for fold in run["folds"]]
    lines += [
        "",
        "| per fold (5 folds x seeds), mean ± sd | kNN distance | outlier classifier | either (the product) |",
    ]
    lines.append("|---|---|---|---|")
    lines.append("| false abstain, real test images | " + _cells(folds, lambda f, r: f["false_abstain"][r]) + " |")
    for name in ("made", "holdout"):
        if name not in folds[0]:
            continue
        title = SET_TITLES[name]
        auroc = [mean_sd([fold[name]["auroc"][score] for fold in folds]) for score in ("knn", "classifier")]
        lines.append(f"| {title}: AUROC | {auroc[0]} | {auroc[1]} | |")
        lines.append(f"| {title}: detected | " + _cells(folds, lambda f, r, n=name: f[n]["detected"][r]) + " |")
        for kind in sorted(folds[0][name]["kinds"]):
            lines.append(
                f"| {title}: {kind} | " + _cells(folds, lambda f, r, n=name, k=kind: f[n]["kinds"][k][r]) + " |"
            )
        colour = mean_sd([fold[name]["with_colour"] for fold in folds])
        lines.append(f"| {title}: detected by either or the colour rule | | | {colour} |")
    return "\n".join(lines)


def _cells(folds, value) -> str:
    return " | ".join(real_data.mean_sd([value(fold, rule) for fold in folds]) for rule in RULES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the per-seed results as JSON")
    parser.add_argument("--colour-only", action="store_true", help="only the colour rule (no features, no folds)")
    parser.add_argument("--holdout", type=Path, help="a folder of out-of-scope images of unseen kinds")
    parser.add_argument("--series-unknown", action="store_true", help="each training side as one sample")
    parser.add_argument("--no-pseudo-series", action="store_true", help="unknown series: folds of images")
    args = parser.parse_args()
    global SERIES_UNKNOWN
    SERIES_UNKNOWN = args.series_unknown
    if args.no_pseudo_series:
        from classifier import head_training

        head_training.pseudo_series = lambda features, folds, seed: None
    images = real_data.load_images()
    ood_images = out_of_scope_images(args.work / "out-of-scope", images)
    holdout = holdout_images(args.holdout)
    ood_colour = colour_flags([image.path for image in ood_images])
    holdout_colour = colour_flags([image.path for image in holdout])
    print(colour_report(ood_images + holdout, np.r_[ood_colour, holdout_colour], colour_flags(real_files())))
    if args.colour_only:
        return
    import torch

    torch.set_num_threads(args.threads)
    matrix = bench_active.features(images, args.work)
    sets = {
        "made": (ood_images, bench_active.features(ood_images, args.work / "ood"), ood_colour),
        "holdout": (
            holdout,
            bench_active.features(holdout, args.work / "holdout") if holdout else None,
            holdout_colour,
        ),
    }
    made, defocused = training_outliers(args.work / "training-outliers", images)
    outlier_data = (_two_views(made, args.work / "training-outliers"), _two_views(defocused, args.work / "defocused"))
    runs = [evaluate_seed(images, matrix, sets, outlier_data, int(s)) for s in args.seeds.split(",")]
    for run in runs:
        print(json.dumps({k: run[k] for k in ("seed", "sets", "per_class_coverage_90", "conformal_modes")}))
    if args.out:
        args.out.write_text(json.dumps(runs, indent=1))
    print(f"{len(images)} real images, {len(ood_images)} made out-of-scope images, {len(holdout)} holdout images")
    print(report(runs))


def _two_views(images, work: Path) -> np.ndarray:
    """Raw features of the first OUTLIER_VIEWS dihedral views averaged, as training computes outliers'."""
    from classifier.head_training import OUTLIER_VIEWS

    views = bench_active.per_view_features(images, work)
    return views[:, :OUTLIER_VIEWS].mean(1)


if __name__ == "__main__":
    main()
