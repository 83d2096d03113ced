"""Benchmark 3: one training epoch from stored 256-px derivatives against one
from 1024x768 originals (8-bit PNG, decoded every time), same images and model.

    .venv/bin/python bench/bench_derivatives.py [--quick] [--arch resnet34]
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


def one_epoch(items, arch, size, out) -> float:
    from classifier.config import TrainConfig
    from classifier.train import train

    config = TrainConfig(arch=arch, sizes=(size,), epochs=(1,), batch_sizes=(16,), pretrained=False, seed=1)
    result = train(items, config, out)
    return result.stages[0]["epoch_results"][0]["duration_s"]  # the epoch itself: train + validation passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--arch", default="resnet34")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    from PIL import Image

    arch = "resnet18" if args.quick else args.arch
    with tempfile.TemporaryDirectory() as tmp:
        items, source = derivative_items(Path(tmp), quick=args.quick)
        originals = []
        for index, (path, label) in enumerate(items):
            # Stand-in for the stored originals: the same content at 1024x768, 8-bit PNG.
            target = Path(tmp) / f"orig_{index:03d}.png"
            Image.open(path).resize((1024, 768), Image.Resampling.BICUBIC).save(target)
            originals.append((str(target), label))
        rounds = []
        for _ in range(1 if args.quick else 2):  # alternate to share machine load fairly
            rounds.append(
                (
                    one_epoch(items, arch, args.size, f"{tmp}/d.semcls"),
                    one_epoch(originals, arch, args.size, f"{tmp}/o.semcls"),
                )
            )
    derivative_s = min(r[0] for r in rounds)
    original_s = min(r[1] for r in rounds)
    print(
        f"# load average {os.getloadavg()[0]:.1f} at the end; "
        f"bench_derivatives  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}"
    )
    print(
        f"data: {len(items)} images from {source}; {arch}; {args.size} px; one epoch (train + valid), best of "
        f"{len(rounds)}"
    )
    print(f"  derivatives (256 px PNG)   {derivative_s:7.2f} s")
    print(f"  originals (1024x768 PNG)   {original_s:7.2f} s")
    print(f"originals / derivatives = {original_s / derivative_s:.2f}x")


if __name__ == "__main__":
    main()
