"""Benchmark: the portal's default retraining against the reference recipe on real SEM micrographs.

Data: `../shared/sem-real` + `../shared/sem-real-2`, split by source (bench/real_data.py: a repository or
source series is never on both sides). For every seed, side by side on the same split:

- `portal`: the worker's exact path: `portal.services.learning.training.training_config()` (the settings'
  defaults: architecture, sizes, time budget) passed to `classifier.train.train` on derivatives made by
  the ingestion service's own functions; scored through the engine's evaluation path.
- `reference-leakfree`: `../shared/tools/reference_recipe.py` run unchanged except that its DataLoaders
  see only the training tree (bench/reference_leakfree.py explains the leak).
- `reference-as-is` (with --as-is): the script exactly as it is; it trains on ~85 % of the test images.

The portal's budget is the leak-free reference's measured wall time when that is smaller than the
default budget, so the portal never gets more time. Prints accuracy, macro recall, macro-F1, ECE and wall
time per recipe and seed, the mean ± sd, the majority-class baseline, and the portal / reference ratios.

    .venv/bin/python bench/bench_real.py [--seeds 0,1,2] [--as-is-seeds 0] [--threads 2] [--out results.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import real_data  # noqa: E402

BENCH = Path(__file__).resolve().parent
RECIPE = real_data.SHARED / "tools" / "reference_recipe.py"


def run_portal(train, test, derived, seed: int, budget_s: float, threads: int, work: Path) -> dict:
    from classifier.config import TrainConfig
    from classifier.train import train as train_model
    from portal.services.learning.training import training_config

    config = training_config({"seed": seed, "budget_s": budget_s, "num_threads": threads})
    started = time.monotonic()
    result = train_model(
        real_data.items(train, derived),
        TrainConfig.from_dict(config),
        str(work / f"portal-{seed}.pth"),
        test_items=real_data.items(test, derived),
    )
    wall = time.monotonic() - started
    evaluation = result.evaluation
    plan = result.metadata.get("budget") or {}
    return {
        "recipe": "portal",
        "seed": seed,
        "accuracy": evaluation["accuracy"],
        "macro_recall": evaluation["macro_avg"]["recall"],
        "macro_f1": evaluation["macro_avg"]["f1"],
        "ece": evaluation["ece"],
        "wall_s": wall,
        "arch": config["arch"],
        "budget_s": budget_s,
        "epochs": plan.get("epochs"),
        "n_train": len(train),
        "n_test": len(test),
    }


def run_reference(
    script: Path, name: str, train, test, seed: int, threads: int, work: Path, extra: tuple[str, ...] = ()
) -> dict:
    trees = work / f"{name}-{seed}"
    train_dir = real_data.write_tree(train, trees / "train-src")
    test_dir = real_data.write_tree(test, trees / "test-src")
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            str(train_dir),
            str(test_dir),
            "--seed",
            str(seed),
            "--threads",
            str(threads),
            "--work",
            str(trees / "work"),
            *extra,
        ],
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - started
    if done.returncode:
        raise RuntimeError(f"{name} failed: {done.stderr[-2000:]}")
    line = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "recipe": name,
        "seed": seed,
        "accuracy": line["accuracy"],
        "macro_recall": line["macro_recall"],
        "macro_f1": line["macro_f1"],
        "ece": None,
        "wall_s": wall,
        "arch": line["arch"],
        "epochs": line["epochs"],
        "n_train": line["n_train"],
        "n_test": line["n_test"],
    }


def majority(test) -> tuple[str, float]:
    name, count = Counter(image.category for image in test).most_common(1)[0]
    return name, count / len(test)


def ratios(rows: list[dict]) -> str:
    out = []
    for seed in sorted({r["seed"] for r in rows}):
        by = {r["recipe"]: r for r in rows if r["seed"] == seed}
        if "portal" in by and "reference-leakfree" in by:
            p, q = by["portal"], by["reference-leakfree"]
            out.append(
                f"seed {seed}: portal / leak-free reference: accuracy {p['accuracy']:.3f} / {q['accuracy']:.3f}, "
                f"macro recall {p['macro_recall']:.3f} / {q['macro_recall']:.3f}, "
                f"wall time ratio {p['wall_s'] / q['wall_s']:.2f}"
            )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--as-is-seeds", default="0", help="seeds for the leaking reference as it is ('' for none)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="append one JSON line per run")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a quick check of the wiring: 1 epoch per stage, resnet18 reference, 30 s portal budget (no figures)",
    )
    args = parser.parse_args()
    if not real_data.available():
        sys.exit("../shared/sem-real and ../shared/sem-real-2 are needed")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-real-"))
    images = real_data.load_images()
    derived = real_data.derivatives(images, work / "derivatives")  # also sets up Django for the portal's config
    from django.conf import settings

    print(
        f"# bench_real: {platform.node()}, {os.cpu_count()} cores, threads {args.threads}, "
        f"default budget {settings.SEM_TRAIN_BUDGET_S:.0f} s, arch {settings.SEM_TRAIN_ARCH}",
        flush=True,
    )
    rows = []
    as_is = {int(s) for s in args.as_is_seeds.split(",") if s.strip()}
    for seed in (int(s) for s in args.seeds.split(",")):
        train, test = real_data.split_by_source(images, seed)
        name, share = majority(test)
        print(f"seed {seed}: {real_data.describe(train, test)}; majority baseline '{name}' {share:.3f}", flush=True)
        extra = ("--epochs", "1,1,1", "--arch", "resnet18") if args.smoke else ()
        runs = [
            run_reference(
                BENCH / "reference_leakfree.py", "reference-leakfree", train, test, seed, args.threads, work, extra
            )
        ]
        budget = 30.0 if args.smoke else min(settings.SEM_TRAIN_BUDGET_S, runs[0]["wall_s"])
        runs.append(run_portal(train, test, derived, seed, budget, args.threads, work))
        if seed in as_is:
            runs.append(run_reference(RECIPE, "reference-as-is", train, test, seed, args.threads, work, extra))
        for row in runs:
            row["majority_baseline"] = share
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as handle:
                    handle.write(json.dumps(row) + "\n")
        rows += runs
    print()
    print(real_data.summary_table(rows, "recipe", "wall_s"))
    print(ratios(rows))


if __name__ == "__main__":
    main()
