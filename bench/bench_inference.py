"""Benchmark 1: inference throughput at 224 px, same model, same threads.

Engine.predict_paths (decode + eval preset + batched channels-last forward)
against (a) the bare model forward on ready tensors, the upper limit, and
(b) a loop of fastai ``learn.predict`` (how the reference recipe is served).

    .venv/bin/python bench/bench_inference.py [--quick] [--arch resnet34] [--bs 32]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SEM_REAL = ROOT.parent / "shared" / "sem-real"


def derivative_items(workdir: Path, quick: bool, synthetic: int = 0) -> tuple[list[tuple[str, str]], str]:
    """256-px derivatives of the real images (else, or when `synthetic` asks for N, synthetic ones),
    as the workers store them."""
    from classifier.cli import scan_tree
    from classifier.preprocess import make_derivative, prepare_raw

    if SEM_REAL.is_dir() and not synthetic:
        raw, source = scan_tree(SEM_REAL), f"{SEM_REAL} (real)"
        items = []
        for index, (path, label) in enumerate(raw[: 24 if quick else None]):
            target = workdir / f"{index:03d}.png"
            prepare_raw(path).save(target)
            items.append((str(target), label))
        return items, source
    from classifier.databar import crop_databar
    from classifier.synthetic import CATEGORIES, make_image

    items = []
    for index in range(synthetic or (24 if quick else 64)):
        category = CATEGORIES[index % len(CATEGORIES)]
        target = workdir / f"{index:03d}.png"
        make_derivative(crop_databar(make_image(category, index, size=(1024, 768)))[0]).save(target)
        items.append((str(target), category))
    return items, "classifier.synthetic" + ("" if synthetic else " (no shared/sem-real)")


def interleaved_images_per_second(runs: dict, repeats: int) -> dict:
    """Best-of-N images/s per method, the methods interleaved in each round so
    that load from other processes on the machine hits all of them alike."""
    best = {name: float("inf") for name in runs}
    for fn, _ in runs.values():
        fn()  # warm-up: allocator, oneDNN kernels
    for _ in range(repeats):
        for name, (fn, _) in runs.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: runs[name][1] / best[name] for name in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--arch", default="resnet34")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--bs", type=int, default=32)
    args = parser.parse_args()

    import numpy as np
    import torch
    from fastai.vision.all import Learner, ProgressCallback

    from classifier import transforms
    from classifier.artifact import save_artifact
    from classifier.config import TrainConfig
    from classifier.engine import Engine
    from classifier.network import create_network
    from classifier.train import _dataloaders, stratified_split

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    repeats = 2 if args.quick else 3
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        items, source = derivative_items(workdir, args.quick)
        classes = sorted({label for _, label in items})
        paths = [p for p, _ in items]
        model = create_network(args.arch, len(classes)).eval()
        metadata = {"classes": classes, "input_size": args.size, "arch": args.arch, "temperature": 1.0}
        artifact = save_artifact(workdir / "model.semcls", model.state_dict(), metadata)
        engine = Engine.from_artifact(workdir / "model.semcls", expected_sha256=artifact)
        n = len(paths)

        # (a) the limit: forward only, on ready normalised channels-last tensors, same batch size.
        arrays = [transforms.eval_array(p, args.size) for p in paths]
        ready = [
            transforms.normalise_batch(torch.from_numpy(np.stack(arrays[i : i + args.bs]))).contiguous(
                memory_format=torch.channels_last
            )
            for i in range(0, n, args.bs)
        ]
        eager_model = model.to(memory_format=torch.channels_last)  # the plain PyTorch forward
        folded_model = engine.model  # what the engine runs: BatchNorm folded into the convolutions

        def forward_only(network):
            def run():
                with torch.inference_mode():
                    for batch in ready:
                        network(batch)

            return run

        def engine_run():
            engine.predict_paths(paths, batch_size=args.bs)

        engine_cl_false = Engine.from_artifact(workdir / "model.semcls", expected_sha256=artifact, channels_last=False)

        def engine_contiguous():
            engine_cl_false.predict_paths(paths, batch_size=args.bs)

        # (b) fastai learn.predict per image, same weights, same eval preset.
        config = TrainConfig(arch=args.arch, sizes=(args.size,), batch_sizes=(args.bs,), pretrained=False)
        train_idx, valid_idx = stratified_split([label for _, label in items], 0.2, 0)
        dls = _dataloaders(items, train_idx, valid_idx, classes, args.size, args.bs, config, torch.device("cpu"))
        learner = Learner(dls, model)
        learner.remove_cb(ProgressCallback)
        predict_subset = items[: 8 if args.quick else 16]

        def predict_loop():
            for item in predict_subset:
                learner.predict(item)

        results = interleaved_images_per_second(
            {
                "bare forward (ready tensors)": (forward_only(eager_model), n),
                "bare forward, BN folded (ready tensors)": (forward_only(folded_model), n),
                "engine.predict_paths (channels_last)": (engine_run, n),
                "engine.predict_paths (contiguous)": (engine_contiguous, n),
                "fastai learn.predict loop": (predict_loop, len(predict_subset)),
            },
            repeats,
        )
    bare_ips = results["bare forward (ready tensors)"]
    engine_ips = results["engine.predict_paths (channels_last)"]
    predict_ips = results["fastai learn.predict loop"]
    print(
        f"# load average {os.getloadavg()[0]:.1f} at the end; "
        f"bench_inference  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  {platform.processor() or platform.machine()}"
    )
    print(
        f"data: {n} derivatives from {source}; arch {args.arch}; {args.size} px; batch {args.bs}; "
        f"torch threads {threads}; cpu count {os.cpu_count()}; torch {torch.__version__}"
    )
    for name, ips in results.items():
        print(f"  {name:<40} {ips:8.1f} images/s")
    print(f"engine / bare forward      = {engine_ips / bare_ips:.3f}   (target >= 0.85)")
    print(
        f"engine / bare forward with the same folding = "
        f"{engine_ips / results['bare forward, BN folded (ready tensors)']:.3f}"
    )
    print(f"engine / learn.predict     = {engine_ips / predict_ips:.1f}x  (target >= 5x)")


if __name__ == "__main__":
    main()
