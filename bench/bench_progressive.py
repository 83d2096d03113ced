"""Benchmark 2: progressive resizing (64 -> 128 -> 224) against fixed 224 px,
the same total number of epochs on the same split: wall time and held-out accuracy.

    .venv/bin/python bench/bench_progressive.py [--quick] [--arch resnet34] [--epochs 2] [--synthetic N]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_inference import derivative_items  # noqa: E402  (same data preparation)


def run(items, test_items, classes, sizes, epochs, arch, out):
    from classifier.config import TrainConfig
    from classifier.train import train

    config = TrainConfig(
        arch=arch,
        sizes=sizes,
        epochs=epochs,
        batch_sizes=(16,) * len(sizes),
        lrs=(3e-3,) * len(sizes),
        pretrained=False,
        seed=1,
    )
    start = time.perf_counter()
    result = train(items, config, out, test_items=test_items, classes=classes)
    return time.perf_counter() - start, result.evaluation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--arch", default="resnet34")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per progressive stage")
    parser.add_argument(
        "--synthetic",
        type=int,
        default=0,
        metavar="N",
        help="N synthetic images instead of the 65 real ones: per-run fixed costs (model "
        "construction, evaluation, kernel set-up per input size) weigh less on more data",
    )
    args = parser.parse_args()
    import torch

    from classifier.train import stratified_split

    arch = "resnet18" if args.quick else args.arch
    per_stage = 1 if args.quick else args.epochs
    with tempfile.TemporaryDirectory() as tmp:
        items, source = derivative_items(Path(tmp), quick=False, synthetic=args.synthetic)
        labels = [label for _, label in items]
        keep, held_out = stratified_split(labels, 0.2, seed=5)
        train_items, test_items = [items[i] for i in keep], [items[i] for i in held_out]
        classes = sorted(set(labels))
        progressive = run(train_items, test_items, classes, (64, 128, 224), (per_stage,) * 3, arch, f"{tmp}/p.semcls")
        fixed = run(train_items, test_items, classes, (224,), (3 * per_stage,), arch, f"{tmp}/f.semcls")
    print(
        f"# load average {os.getloadavg()[0]:.1f} at the end; "
        f"bench_progressive  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  torch threads "
        f"{torch.get_num_threads()}"
    )
    print(
        f"data: {len(train_items)} train / {len(test_items)} held-out test from {source}; {arch}; from scratch; "
        f"{3 * per_stage} epochs each"
    )
    for name, (seconds, evaluation) in (("progressive 64/128/224", progressive), ("fixed 224", fixed)):
        print(
            f"  {name:<24} {seconds:7.1f} s   test accuracy {evaluation['accuracy']:.3f}   "
            f"macro recall {evaluation['macro_avg']['recall']:.3f}"
        )
    print(f"time ratio progressive / fixed = {progressive[0] / fixed[0]:.2f}  (target <= 0.5)")
    print(f"accuracy progressive - fixed = {progressive[1]['accuracy'] - fixed[1]['accuracy']:+.3f}  (target >= 0)")


if __name__ == "__main__":
    main()
