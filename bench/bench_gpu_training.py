"""Benchmark 5: training throughput per progressive stage on a GPU, and the full default schedule.

    .venv/bin/python bench/bench_gpu_training.py [--images 18577] [--arch resnet34] [--workers 8]
    .venv/bin/python bench/bench_gpu_training.py --quick --device cpu     # a smoke run anywhere

Writes N synthetic SEM-like derivatives (256 px on the short side, 8-bit greyscale PNG, as ingestion
stores them; 10 classes with the NFFA data set's imbalance) with one process per core, then runs the
default schedule (64 -> 128 -> 224 px, 3/3/4 epochs, mixed precision and channels-last on CUDA) through
`classifier.train.train`, and prints per stage: training images per second (timed between batches, so
validation is excluded), the mean GPU utilisation sampled by nvidia-smi while that stage trained, and the
wall time of the whole run. The reference recipe took about 400 minutes on one GPU for 18,577 images.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Approximate class sizes of the NFFA-EUROPE SEM data set (Aversa et al. 2018), scaled to --images.
NFFA_SHARES = {
    "Biological": 973,
    "Fibres": 163,
    "Films_Coated_Surface": 327,
    "MEMS_devices_and_electrodes": 4590,
    "Nanowires": 3821,
    "Particles": 3926,
    "Patterned_surface": 4755,
    "Porous_Sponge": 182,
    "Powder": 918,
    "Tips": 1625,
}
DERIVATIVE_SIZE = (341, 256)


def _write_one(job: tuple[str, str, int]) -> tuple[str, str]:
    from classifier.synthetic import make_image

    folder, category, seed = job
    path = os.path.join(folder, category, f"{seed:06d}.png")
    make_image(category, seed, size=DERIVATIVE_SIZE, databar=False).convert("L").save(path, compress_level=1)
    return path, category


def write_derivatives(root: Path, total: int, processes: int) -> list[tuple[str, str]]:
    weight = sum(NFFA_SHARES.values())
    jobs = []
    for category, share in NFFA_SHARES.items():
        (root / category).mkdir(parents=True, exist_ok=True)
        count = max(4, round(total * share / weight))
        jobs += [(str(root), category, seed) for seed in range(count)]
    with Pool(processes) as pool:
        return pool.map(_write_one, jobs, chunksize=64)


class GpuSampler:
    """nvidia-smi's utilisation every 0.5 s, tagged with the stage being trained."""

    def __init__(self) -> None:
        self.stage: int | None = None
        self.samples: dict[int, list[int]] = defaultdict(list)
        self._stop = threading.Event()
        self.available = shutil.which("nvidia-smi") is not None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            if self.stage is None:
                continue
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
            ).stdout.split()
            if out and out[0].isdigit():
                self.samples[self.stage].append(int(out[0]))


class Throughput:
    """Training images per second per stage from the batch events' timestamps."""

    def __init__(self, sampler: GpuSampler) -> None:
        self.sampler = sampler
        self.spans: dict[tuple[int, int], list[tuple[float, int]]] = defaultdict(list)
        self.sizes: dict[int, int] = {}

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "batch":
            self.spans[(event["stage"], event["epoch"])].append((time.perf_counter(), event["input_shape"][0]))
            self.sampler.stage = event["stage"]
            self.sizes[event["stage"]] = event["size"]
        elif kind in ("epoch_end", "stage_end"):
            self.sampler.stage = None  # validation is not training

    def per_stage(self) -> dict[int, float]:
        images, seconds = defaultdict(int), defaultdict(float)
        for (stage, _epoch), marks in self.spans.items():
            if len(marks) > 1:
                images[stage] += sum(n for _, n in marks[1:])
                seconds[stage] += marks[-1][0] - marks[0][0]
        return {stage: images[stage] / seconds[stage] for stage in images if seconds[stage] > 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=18577)
    parser.add_argument("--arch", default="resnet34")
    parser.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: automatic)")
    parser.add_argument("--quick", action="store_true", help="300 images, resnet18, 1 epoch per stage")
    parser.add_argument("--keep", metavar="FOLDER", help="write (or reuse) the images here instead of a temp folder")
    args = parser.parse_args()

    import torch

    from classifier.config import TrainConfig
    from classifier.train import train

    total = 300 if args.quick else args.images
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sem-gpu-bench-"))
    started = time.perf_counter()
    items = write_derivatives(folder / "data", total, os.cpu_count() or 1)
    print(
        f"wrote {len(items)} derivatives ({DERIVATIVE_SIZE[0]}x{DERIVATIVE_SIZE[1]}) in "
        f"{time.perf_counter() - started:.0f} s"
    )
    config = TrainConfig(
        arch="resnet18" if args.quick else args.arch,
        pretrained=False,
        device=args.device,
        num_workers=args.workers,
        **({"epochs": (1, 1, 1)} if args.quick else {}),
    )
    with GpuSampler() as sampler:
        meter = Throughput(sampler)
        run_started = time.perf_counter()
        result = train(items, config, str(folder / "model.semcls"), progress=meter)
        wall = time.perf_counter() - run_started
    device = (
        torch.cuda.get_device_name(0)
        if result.device.startswith("cuda")
        else (platform.processor() or platform.machine())
    )
    print(
        f"# bench_gpu_training  {time.strftime('%Y-%m-%d %H:%M')}  {result.device} ({device})  "
        f"torch {torch.__version__}"
    )
    print(
        f"{len(items)} images, {config.arch}, sizes {list(config.sizes)}, epochs {list(config.epochs)}, "
        f"mixed precision and channels-last {'on' if result.device.startswith('cuda') else 'off'}"
    )
    for stage, rate in sorted(meter.per_stage().items()):
        utilisation = sampler.samples.get(stage)
        gpu = f"GPU utilisation {sum(utilisation) / len(utilisation):5.1f} %" if utilisation else "GPU utilisation n/a"
        batch = result.stages[stage]["batch_size"]
        print(f"  stage {stage + 1} ({meter.sizes[stage]:3d} px, batch {batch:3d}): {rate:8.1f} train images/s   {gpu}")
    print(
        f"full schedule: {wall / 60:.1f} min wall (reference recipe: about 400 min on one GPU); "
        f"validation accuracy {result.metadata['evaluation']['accuracy']:.3f}"
    )
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
