"""Ablation on real SEM micrographs: one training change at a time, several source-split seeds.

Every variant trains through `classifier.train.train` (the function the worker calls) on the
ingestion service's derivatives of `../shared/sem-real*`, split by source (bench/real_data.py), and is
scored on the test side through the engine's evaluation path (accuracy, macro recall, macro-F1, ECE).

    # here: make a self-contained bundle (derivatives, 8-bit grey copies for the reference recipe)
    .venv/bin/python bench/ablate_real.py prepare .realbundle
    # anywhere (a lent GPU too): run variants x seeds in parallel processes, JSON lines to --out
    python bench/ablate_real.py run .realbundle --variants all --seeds 0,1,2 --jobs 8 --out results.jsonl
    python bench/ablate_real.py table results.jsonl

`run` needs only torch, fastai and this checkout (no Django, no ../shared), so the bundle can travel.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# What the worker trained with before this ablation (portal/settings.py + classifier/config.py defaults).
OLD_PORTAL_DEFAULTS = dict(
    arch="resnet34",
    sizes=(64, 128, 224),
    epochs=(4, 3, 2),
    lrs=(3e-3, 1e-3, 5e-4),
    batch_sizes=(128, 64, 32),
    imbalance="weighted_loss",
    crop_scale=(0.35, 1.0),
    augmentation="sem",
    valid_pct=0.2,
    select_best_epoch=True,
    recalibrate_bn=False,
)
LONG = dict(epochs=(15, 10, 10))

# One change at a time from the old defaults, then from the old defaults trained as long as the
# reference (15/10/10), then combinations.
VARIANTS: dict[str, dict] = {
    "old-defaults": {},
    "imbalance=none": dict(imbalance="none"),
    "imbalance=sqrt": dict(imbalance="sqrt_weighted_loss"),
    "imbalance=sampler": dict(imbalance="weighted_sampler"),
    "no-best-epoch": dict(select_best_epoch=False),
    "bn-recalibrate": dict(recalibrate_bn=True),
    "lr=1e-3": dict(lrs=(1e-3,)),
    "bs=16": dict(batch_sizes=(16,)),
    "crop=full": dict(crop_scale=(1.0, 1.0)),
    "aug=fastai": dict(augmentation="fastai"),
    "epochs=15/10/10": dict(LONG),
    "long+imbalance=none": dict(LONG, imbalance="none"),
    "long+sqrt": dict(LONG, imbalance="sqrt_weighted_loss"),
    "long+no-best-epoch": dict(LONG, select_best_epoch=False),
    "long+bn-recalibrate": dict(LONG, recalibrate_bn=True),
    "long+lr=1e-3": dict(LONG, lrs=(1e-3,)),
    "long+bs=16": dict(LONG, batch_sizes=(16,)),
    "long+crop=full": dict(LONG, crop_scale=(1.0, 1.0)),
    "long+resnet50": dict(LONG, arch="resnet50"),
    "long+resnet18": dict(LONG, arch="resnet18"),
    "combo": dict(LONG, imbalance="none", select_best_epoch=False, recalibrate_bn=True, batch_sizes=(16,)),
    "combo+sqrt": dict(
        LONG, imbalance="sqrt_weighted_loss", select_best_epoch=False, recalibrate_bn=True, batch_sizes=(16,)
    ),
    "combo+resnet18": dict(
        LONG, arch="resnet18", imbalance="none", select_best_epoch=False, recalibrate_bn=True, batch_sizes=(16,)
    ),
    "combo+lr=1e-3": dict(
        LONG, imbalance="none", select_best_epoch=False, recalibrate_bn=True, batch_sizes=(16,), lrs=(1e-3,)
    ),
    "combo+x2epochs": dict(
        epochs=(30, 20, 20), imbalance="none", select_best_epoch=False, recalibrate_bn=True, batch_sizes=(16,)
    ),
}
# Second round, from the best of the first (trained as long as the reference, no class weights).
BASE2 = dict(LONG, imbalance="none")
STRETCH = dict(BASE2, contrast="stretch")
VARIANTS.update(
    {
        "B": BASE2,
        "B+stretch": STRETCH,
        "B+stretch+smooth0.1": dict(STRETCH, label_smoothing=0.1),
        "B+stretch+strong-aug": dict(STRETCH, crop_scale=(0.2, 1.0), max_lighting=0.4, max_zoom=1.3),
        "B+stretch+resnet18": dict(STRETCH, arch="resnet18"),
        "B+stretch+x2": dict(STRETCH, epochs=(30, 20, 20)),
        "B+stretch+resnet18+x2": dict(STRETCH, arch="resnet18", epochs=(30, 20, 20)),
        "B+stretch+no-best-epoch": dict(STRETCH, select_best_epoch=False),
        "B+stretch+lr=1e-2": dict(STRETCH, lrs=(1e-2, 5e-3, 2e-3)),
        "B+stretch+x2+64px": dict(STRETCH, epochs=(50, 20, 10)),
        # Third round: is it the inputs (derivatives vs the reference's grey copies) or the pipeline?
        "B on grey": dict(BASE2, _inputs="grey"),
        "B+reference-like": dict(
            BASE2,
            augmentation="fastai",
            crop_scale=(1.0, 1.0),
            lrs=(1e-3,),
            batch_sizes=(16,),
            valid_pct=0.15,
            select_best_epoch=False,
        ),
        "B+reference-like on grey": dict(
            BASE2,
            augmentation="fastai",
            crop_scale=(1.0, 1.0),
            lrs=(1e-3,),
            batch_sizes=(16,),
            valid_pct=0.15,
            select_best_epoch=False,
            _inputs="grey",
        ),
        "B+aug=fastai": dict(BASE2, augmentation="fastai"),
        "B+crop=full": dict(BASE2, crop_scale=(1.0, 1.0)),
    }
)


@dataclass(frozen=True)
class BundleImage:
    derivative: str
    grey: str
    category: str
    group: str


# ---------------------------------------------------------------- prepare (here, with Django)


def prepare(bundle: Path) -> None:
    import real_data
    from PIL import Image

    from classifier.imageio import load_grey8

    images = real_data.load_images()
    derived = real_data.derivatives(images, bundle / "derivatives")
    (bundle / "grey").mkdir(parents=True, exist_ok=True)
    entries = []
    for image in images:
        derivative = Path(derived[image.path])
        grey = bundle / "grey" / derivative.name
        if not grey.exists():  # the reference recipe's input, reduced so the bundle can travel
            picture = load_grey8(image.path)
            scale = 256 / min(picture.size)  # the recipe's last stage is 224 px
            if scale < 1:
                picture = picture.resize(
                    (round(picture.width * scale), round(picture.height * scale)), Image.Resampling.LANCZOS
                )
            picture.save(grey)
        entries.append(
            {
                "derivative": f"derivatives/{derivative.name}",
                "grey": f"grey/{grey.name}",
                "category": image.category,
                "group": image.group,
            }
        )
    shutil.copy(real_data.SHARED / "tools" / "reference_recipe.py", bundle / "reference_recipe.py")
    (bundle / "bundle.json").write_text(json.dumps(entries, indent=1))
    print(f"{len(entries)} images in {bundle}")


def load_bundle(bundle: Path) -> list[BundleImage]:
    entries = json.loads((bundle / "bundle.json").read_text())
    return [
        BundleImage(str(bundle / e["derivative"]), str(bundle / e["grey"]), e["category"], e["group"]) for e in entries
    ]


# ---------------------------------------------------------------- run


def run_variant(bundle: str, name: str, overrides: dict, seed: int, threads: int) -> dict:
    import real_data
    import torch

    from classifier.config import TrainConfig
    from classifier.train import train

    torch.set_num_threads(threads)
    train_side, test_side = real_data.split_by_source(load_bundle(Path(bundle)), seed)
    overrides = dict(overrides)
    field = overrides.pop("_inputs", "derivative")  # "grey": the reference recipe's inputs instead
    config = TrainConfig.from_dict(
        {
            **OLD_PORTAL_DEFAULTS,
            **overrides,
            "seed": seed,
            "pretrained": False,
            "num_threads": threads,
            "num_workers": 0,
        }
    )
    out = Path(bundle) / "runs" / f"{name.replace('/', '_')}-{seed}.pth"
    out.parent.mkdir(exist_ok=True)
    started = time.monotonic()
    result = train(
        [(getattr(i, field), i.category) for i in train_side],
        config,
        str(out),
        test_items=[(getattr(i, field), i.category) for i in test_side],
    )
    out.unlink(missing_ok=True)
    return _scores(name, seed, result.evaluation, time.monotonic() - started, len(train_side), len(test_side))


def _scores(name, seed, evaluation, seconds, n_train, n_test) -> dict:
    macro = evaluation["macro_avg"]
    return {
        "variant": name,
        "seed": seed,
        "accuracy": evaluation["accuracy"],
        "macro_recall": macro["recall"],
        "macro_f1": macro["f1"],
        "ece": evaluation["ece"],
        "seconds": round(seconds, 1),
        "n_train": n_train,
        "n_test": n_test,
    }


def run_reference(bundle: str, seed: int, threads: int, epochs: str, field: str = "grey") -> dict:
    """The reference recipe, called as it is, on the grey copies (or the derivatives) of the same split."""
    import real_data

    root = Path(bundle) / "reference" / f"{field}-seed{seed}"
    shutil.rmtree(root, ignore_errors=True)
    train_side, test_side = real_data.split_by_source(load_bundle(Path(bundle)), seed)
    for side, members in (("train", train_side), ("test", test_side)):
        for image in members:
            source = Path(getattr(image, field))
            target = root / side / image.category / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source.resolve())
    started = time.monotonic()
    output = subprocess.run(
        [
            sys.executable,
            str(Path(bundle) / "reference_recipe.py"),
            str(root / "train"),
            str(root / "test"),
            "--seed",
            str(seed),
            "--threads",
            str(threads),
            "--epochs",
            epochs,
            "--work",
            str(root / "work"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = json.loads(output.strip().splitlines()[-1])
    return {
        "variant": f"reference ({epochs}) on {field}",
        "seed": seed,
        "accuracy": line["accuracy"],
        "macro_recall": line["macro_recall"],
        "macro_f1": line["macro_f1"],
        "ece": None,
        "seconds": round(time.monotonic() - started, 1),
        "n_train": line["n_train"],
        "n_test": line["n_test"],
    }


def run(args) -> None:
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = []
    with ProcessPoolExecutor(args.jobs) as pool:
        if args.reference:
            jobs += [
                pool.submit(run_reference, args.bundle, seed, args.threads, args.reference, field)
                for field in args.reference_inputs.split(",")
                for seed in seeds
            ]
        jobs += [
            pool.submit(run_variant, args.bundle, name, VARIANTS[name], seed, args.threads)
            for name in names
            for seed in seeds
        ]
        with open(args.out, "a") as out:
            for job in as_completed(jobs):
                try:
                    row = job.result()
                except Exception as error:  # one broken variant must not lose the others' results
                    row = {"error": repr(error)[:500]}
                out.write(json.dumps(row) + "\n")
                out.flush()
                print(json.dumps(row), flush=True)


# ---------------------------------------------------------------- table


def table(paths: list[str]) -> str:
    import real_data

    rows = [json.loads(line) for path in paths for line in open(path)]
    return real_data.summary_table([row for row in rows if "variant" in row], "variant", "seconds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare").add_argument("bundle", type=Path)
    runner = sub.add_parser("run")
    runner.add_argument("bundle")
    runner.add_argument("--variants", default="all")
    runner.add_argument("--seeds", default="0,1,2")
    runner.add_argument("--jobs", type=int, default=1)
    runner.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    runner.add_argument("--reference", default="", help="also run the reference recipe with these epochs")
    runner.add_argument("--reference-inputs", default="grey", help="grey, derivative or both (comma)")
    runner.add_argument("--out", default="ablation.jsonl")
    sub.add_parser("table").add_argument("results", nargs="+")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.bundle)
    elif args.command == "run":
        run(args)
    else:
        print(table(args.results))


if __name__ == "__main__":
    main()
