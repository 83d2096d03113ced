"""Benchmark 4: our default configuration against the reference recipe at an
equal wall-clock budget on the same split.

Reference: resnet50, fastai's standard aug_transforms(), progressive 64/128/224,
no class-imbalance handling. Ours: TrainConfig defaults (resnet34, SEM
augmentation, class-weighted loss, progressive 64/128/224). The reference runs
first; ours then gets as many epochs per stage as fit in the same time, from
the measured cost of one training step of each architecture.

    .venv/bin/python bench/bench_recipe.py [--quick] [--ref-epochs 1]
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

from bench_inference import derivative_items  # noqa: E402


def step_seconds(arch: str, n_classes: int, size: int = 224, batch: int = 16) -> float:
    """Seconds per forward+backward step, best of 3 (for budget matching)."""
    import torch

    from classifier.network import create_network

    model = create_network(arch, n_classes).train()
    inputs, targets = torch.randn(batch, 3, size, size), torch.zeros(batch, dtype=torch.long)
    best = float("inf")
    for _ in range(4):
        start = time.perf_counter()
        torch.nn.functional.cross_entropy(model(inputs), targets).backward()
        best = min(best, time.perf_counter() - start)
    return best


def run(items, test_items, classes, config, out):
    from classifier.train import train

    start = time.perf_counter()
    result = train(items, config, out, test_items=test_items, classes=classes)
    return time.perf_counter() - start, result.evaluation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ref-epochs", type=int, default=1, help="reference epochs per stage")
    args = parser.parse_args()
    import torch

    from classifier.config import TrainConfig
    from classifier.train import stratified_split

    sizes = (32, 64, 96) if args.quick else (64, 128, 224)
    with tempfile.TemporaryDirectory() as tmp:
        items, source = derivative_items(Path(tmp), quick=False)
        labels = [label for _, label in items]
        keep, held_out = stratified_split(labels, 0.2, seed=5)
        train_items, test_items = [items[i] for i in keep], [items[i] for i in held_out]
        classes = sorted(set(labels))
        reference = TrainConfig(
            arch="resnet50",
            sizes=sizes,
            epochs=(args.ref_epochs,) * 3,
            batch_sizes=(16,) * 3,
            lrs=(3e-3, 1e-3, 5e-4),
            augmentation="fastai",
            imbalance="none",
            pretrained=False,
            seed=1,
        )
        ref_time, ref_eval = run(train_items, test_items, classes, reference, f"{tmp}/ref.semcls")
        cost_ratio = step_seconds("resnet50", len(classes)) / step_seconds("resnet34", len(classes))
        our_epochs = max(1, round(args.ref_epochs * cost_ratio))
        ours = TrainConfig(sizes=sizes, epochs=(our_epochs,) * 3, batch_sizes=(16,) * 3, pretrained=False, seed=1)
        our_time, our_eval = run(train_items, test_items, classes, ours, f"{tmp}/ours.semcls")
    print(
        f"# load average {os.getloadavg()[0]:.1f} at the end; "
        f"bench_recipe  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  torch threads "
        f"{torch.get_num_threads()}"
    )
    print(
        f"data: {len(train_items)} train / {len(test_items)} held-out test from {source}; sizes {sizes}; "
        f"from scratch (no local ImageNet weights); resnet50/resnet34 step-cost ratio {cost_ratio:.2f}"
    )
    rows = (
        ("reference (resnet50, fastai aug, no weighting)", reference, ref_time, ref_eval),
        ("ours (resnet34, SEM aug, weighted loss)", ours, our_time, our_eval),
    )
    for name, config, seconds, evaluation in rows:
        print(
            f"  {name:<48} epochs {config.epochs}  {seconds:7.1f} s  accuracy {evaluation['accuracy']:.3f}  "
            f"macro recall {evaluation['macro_avg']['recall']:.3f}"
        )
        print(
            "      per-class recall: " + ", ".join(f"{c} {v['recall']:.2f}" for c, v in evaluation["per_class"].items())
        )
    print(f"wall time ours / reference = {our_time / ref_time:.2f} (budget match)")


if __name__ == "__main__":
    main()
