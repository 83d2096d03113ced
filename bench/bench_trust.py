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
- the colour rule (`classifier.colour`, SEMImage.colourfulness above SEM_COLOUR_OUT_OF_SCOPE's default 15)
  on the original files, as ingestion measures it: the share of each kind it flags, alone and OR-ed with
  the detector, and its false-abstain rate on every real file of ../shared (sem-real*, sem-vendor-tiff).
  `--colour-only` measures just this part (seconds; no features, no folds).

    .venv/bin/python bench/bench_trust.py --work /tmp/bench-trust [--seeds 0,1,2] [--threads 2] [--colour-only]
"""

from __future__ import annotations

import argparse
import gzip
import io
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
COLOUR_THRESHOLD = 15.0  # SEM_COLOUR_OUT_OF_SCOPE's default
SIZE = 768  # side of the made images (the real ones are 0.5-4 megapixels; derivatives are 256 px)


def out_of_scope_images(folder: Path, real) -> list[real_data.RealImage]:
    """The out-of-scope set, written as PNG files (kind in `category`, one group per file)."""
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for kind, name, array in _photos() + _renders() + _synthetic() + _defocused(real):
        path = folder / f"{kind}-{name}.png"
        if not path.exists():
            from PIL import Image

            Image.fromarray(array).save(path)
        made.append(real_data.RealImage(path, kind, f"ood/{kind}/{name}"))
    return made


def _mpl_sample(name: str) -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / name


def _photos():
    """Optical photos (two shipped with matplotlib), whole and as four crops each."""
    from PIL import Image

    out = []
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"):
        photo = np.asarray(Image.open(_mpl_sample(name)).convert("RGB"))
        h, w = photo.shape[:2]
        crops = {"full": photo, "tl": photo[: h // 2, : w // 2], "br": photo[h // 2 :, w // 2 :]}
        crops |= {"centre": photo[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4], "rot": np.rot90(photo).copy()}
        out += [("photo", f"{Path(name).stem}-{key}", np.ascontiguousarray(a)) for key, a in crops.items()]
    return out


def _renders():
    """Screenshots and maps: matplotlib's logo, charts rendered by Agg, elevation maps in false colour
    (like EDX maps), an MRI slice."""
    from PIL import Image

    out = [("screenshot", "logo", np.asarray(Image.open(_mpl_sample("logo2.png")).convert("RGB")))]
    out += [("screenshot", f"chart-{i}", _chart(i)) for i in range(4)]
    for name in ("topobathy.npz", "jacksboro_fault_dem.npz"):
        data = np.load(_mpl_sample(name))
        field = np.asarray(data[data.files[0]], float)
        for cmap in ("viridis", "terrain"):
            out.append(("map", f"{Path(name).stem}-{cmap}", _colour(field, cmap)))
    with gzip.open(_mpl_sample("s1045.ima.gz")) as handle:
        mri = np.frombuffer(handle.read(), np.uint16).reshape(256, 256).astype(float)
    out.append(("map", "mri", (255 * mri / mri.max()).astype(np.uint8)))
    return out


def _chart(index: int) -> np.ndarray:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(index)
    figure, axes = plt.subplots(figsize=(6, 4.5), dpi=100)
    x = np.linspace(0, 10, 200)
    if index == 0:
        axes.plot(x, np.sin(x) + rng.normal(0, 0.1, x.size))
    elif index == 1:
        axes.bar(range(8), rng.uniform(1, 5, 8))
    elif index == 2:
        axes.scatter(rng.normal(size=300), rng.normal(size=300), s=6)
    else:
        axes.hist(rng.normal(size=2000), bins=40)
        axes.set_title("EDX spectrum counts")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def _colour(field: np.ndarray, cmap: str) -> np.ndarray:
    import matplotlib

    span = np.nanmax(field) - np.nanmin(field)
    scaled = (np.nan_to_num(field) - np.nanmin(field)) / (span or 1.0)
    return (matplotlib.colormaps[cmap](scaled)[..., :3] * 255).astype(np.uint8)


def _synthetic():
    """Blank, noise and gradient frames."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    out = [("blank", f"level-{v}", np.full((SIZE, SIZE), v, np.uint8)) for v in (0, 128, 255)]
    out.append(("blank", "dark-noisy", np.clip(rng.normal(8, 2, (SIZE, SIZE)), 0, 255).astype(np.uint8)))
    out.append(("noise", "gaussian", np.clip(rng.normal(128, 40, (SIZE, SIZE)), 0, 255).astype(np.uint8)))
    out.append(("noise", "uniform", rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)))
    out.append(("noise", "salt-pepper", (rng.random((SIZE, SIZE)) < 0.5).astype(np.uint8) * 255))
    out.append(("noise", "colour", rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)))
    for name, ramp in (("horizontal", x), ("vertical", y), ("diagonal", (x + y) / 2)):
        out.append(("gradient", name, (255 * ramp).astype(np.uint8)))
    radial = np.hypot(x - 0.5, y - 0.5) / np.hypot(0.5, 0.5)
    out.append(("gradient", "radial", (255 * radial).astype(np.uint8)))
    return out


def _defocused(real, count: int = 12):
    """Real micrographs blurred far out of focus (Gaussian, sigma 4 % of the width): one per source
    group, so they are not twelve tiles of one series."""
    from PIL import Image, ImageFilter

    chosen, seen = [], set()
    for image in sorted(real, key=lambda item: str(item.path)):
        if image.group not in seen and len(chosen) < count:
            seen.add(image.group)
            chosen.append(image)
    out = []
    for image in chosen:
        grey = Image.open(image.path).convert("L")
        blurred = grey.filter(ImageFilter.GaussianBlur(0.04 * grey.width))
        out.append(("defocused", image.path.stem[:40], np.asarray(blurred)))
    return out


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


def run_fold(matrix, labels, groups, train_idx, test_idx, classes, seed, ood_matrix):
    """One fold through the product's functions: (test probabilities, conformal, scorer)."""
    from classifier.calibration import softmax
    from classifier.config import TrainConfig
    from classifier.head_training import _logits, fit_head, trust_metadata
    from classifier.ood import BANK_KEY, KnnScorer

    config = TrainConfig()
    train_idx = np.asarray(train_idx)
    y = labels[train_idx]
    fold_groups = [groups[i] for i in train_idx]
    features = matrix[train_idx][:, None, :]  # (N, views, D): the views are already averaged
    head = fit_head(features, y, fold_groups, len(classes), config.head_c, seed, POOLED_DIMS)
    trust, bank = trust_metadata(head, features, y, fold_groups, classes, seed)
    scorer = KnnScorer(bank[BANK_KEY].float().numpy(), trust["out_of_scope"])
    x_test = matrix[test_idx]
    probabilities = softmax(_logits(head, x_test), head["temperature"])
    real_scores = scorer.scores(x_test)  # the raw features, as the engine gives the detector
    ood_scores = scorer.scores(ood_matrix)
    return probabilities, trust, scorer, real_scores, ood_scores


def evaluate_seed(images, matrix, ood_images, ood_matrix, seed: int, ood_colour) -> dict:
    from sklearn.metrics import roc_auc_score

    from classifier.conformal import coverage_report, prediction_sets

    classes = sorted({image.category for image in images})
    labels = np.array([classes.index(image.category) for image in images])
    groups = [image.group for image in images]
    sets = {coverage: [None] * len(images) for coverage in COVERAGES}
    known = np.zeros(len(images), bool)  # the image's class has training images in its fold
    modes, folds = [], []
    for train_idx, test_idx in bench_real_cv.folds(images, seed):
        probabilities, trust, scorer, real_scores, ood_scores = run_fold(
            matrix, labels, groups, train_idx, test_idx, classes, seed, ood_matrix
        )
        for coverage in COVERAGES:
            for i, found in zip(test_idx, prediction_sets(probabilities, trust["conformal"], classes, coverage)):
                sets[coverage][i] = found
        modes.append(trust["conformal"]["mode"])
        known[test_idx] = np.isin(labels[test_idx], labels[train_idx])
        auroc = roc_auc_score(
            np.r_[np.zeros(len(real_scores)), np.ones(len(ood_scores))], np.r_[real_scores, ood_scores]
        )
        kinds, combined = defaultdict(list), defaultdict(list)
        for image, flagged, colour in zip(ood_images, scorer.out_of_scope(ood_scores), ood_colour):
            kinds[image.category].append(bool(flagged))
            combined[image.category].append(bool(flagged or colour))
        folds.append(
            {
                "auroc": float(auroc),
                "false_abstain": float(scorer.out_of_scope(real_scores).mean()),
                "detected": float(scorer.out_of_scope(ood_scores).mean()),
                "detected_with_colour": float((scorer.out_of_scope(ood_scores) | ood_colour).mean()),
                "kinds": {kind: float(np.mean(flags)) for kind, flags in kinds.items()},
                "kinds_with_colour": {kind: float(np.mean(flags)) for kind, flags in combined.items()},
                "threshold": trust["out_of_scope"]["threshold"],
                "n_held_out": trust["out_of_scope"]["n_held_out"],
            }
        )
    truth = [image.category for image in images]
    return {
        "seed": seed,
        "sets": {str(c): coverage_report(sets[c], truth) for c in COVERAGES},
        "sets_known_classes": {
            str(c): coverage_report([s for s, k in zip(sets[c], known) if k], [t for t, k in zip(truth, known) if k])
            for c in COVERAGES
        },
        "per_class_coverage_90": _per_class(sets[0.9], truth),
        "conformal_modes": modes,
        "folds": folds,
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
    folds = [fold for run in runs for fold in run["folds"]]
    lines += ["", "| out of scope (per fold, 5 folds x seeds) | mean ± sd |", "|---|---|"]
    for key in ("auroc", "false_abstain", "detected", "detected_with_colour"):
        lines.append(f"| {key} | {mean_sd([fold[key] for fold in folds])} |")
    lines.append(f"| held-out images setting the threshold | {mean_sd([fold['n_held_out'] for fold in folds])} |")
    for kind in sorted(folds[0]["kinds"]):
        lines.append(f"| detected: {kind} | {mean_sd([fold['kinds'][kind] for fold in folds])} |")
    for kind in sorted(folds[0]["kinds_with_colour"]):
        shares = [fold["kinds_with_colour"][kind] for fold in folds]
        lines.append(f"| detected by the detector or the colour rule: {kind} | {mean_sd(shares)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the per-seed results as JSON")
    parser.add_argument("--colour-only", action="store_true", help="only the colour rule (no features, no folds)")
    args = parser.parse_args()
    images = real_data.load_images()
    ood_images = out_of_scope_images(args.work / "out-of-scope", images)
    ood_colour = colour_flags([image.path for image in ood_images])
    print(colour_report(ood_images, ood_colour, colour_flags(real_files())))
    if args.colour_only:
        return
    import torch

    torch.set_num_threads(args.threads)
    matrix = bench_active.features(images, args.work)
    ood_matrix = bench_active.features(ood_images, args.work / "ood")
    runs = [evaluate_seed(images, matrix, ood_images, ood_matrix, int(s), ood_colour) for s in args.seeds.split(",")]
    for run in runs:
        print(json.dumps({k: run[k] for k in ("seed", "sets", "per_class_coverage_90", "conformal_modes")}))
    if args.out:
        args.out.write_text(json.dumps(runs, indent=1))
    print(f"{len(images)} real images, {len(ood_images)} out-of-scope images")
    print(report(runs))


if __name__ == "__main__":
    main()
