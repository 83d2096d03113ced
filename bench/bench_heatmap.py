"""Benchmark: one Grad-CAM heat map (classifier.saliency) of a 1024 px derivative, the default model.

The default network (EfficientNet-Lite0 from its package, texture features, a 10-class linear head, 8
dihedral views) saved as a real artifact, loaded once as the worker does; then, per image, what the
worker's task computes: decode with the eval preset, the 8 views' CAMs mapped back and averaged, the
RGBA PNG at the derivative's size; with the class given (the worker takes the stored prediction's) and
with the class computed (one more forward pass, before the image is classified). Real micrographs from ../shared/sem-real (else synthetic ones),
their data bar cropped, resized to a 1024 px short side.

    .venv/bin/python bench/bench_heatmap.py [--images 5] [--views 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SEM_REAL = ROOT.parent / "shared" / "sem-real"
SHORT_SIDE = 1024


def derivatives(workdir: Path, count: int) -> list[Path]:
    from classifier.preprocess import prepare_raw
    from classifier.synthetic import make_image

    sources = sorted(SEM_REAL.rglob("*.tif"))[:count] if SEM_REAL.is_dir() else []
    paths = []
    for index in range(count):
        if index < len(sources):
            picture = prepare_raw(sources[index], short_side=SHORT_SIDE)
        else:
            picture = make_image("Particles", index, size=(1365, SHORT_SIDE)).convert("L")
        path = workdir / f"derivative-{index}.png"
        picture.save(path)
        paths.append(path)
    return paths


def default_artifact(path: Path, views: int) -> None:
    from classifier.artifact import save_artifact
    from classifier.backbones import get_backbone, load_pretrained_body
    from classifier.feature_head import build_classifier

    backbone = get_backbone("efficientnet_lite0")
    body, _provenance = load_pretrained_body(backbone)
    model = build_classifier(backbone, 10, body=body, tta_views=views)
    metadata = {
        "arch": backbone.name,
        "classes": [f"class {index}" for index in range(10)],
        "input_size": backbone.input_size,
        "normalisation": {"mean": list(backbone.mean), "std": list(backbone.std), "contrast": "none"},
        "tta_views": views,
    }
    save_artifact(path, model.state_dict(), metadata)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--views", type=int, default=8)
    args = parser.parse_args()
    import torch
    from PIL import Image

    from classifier.saliency import explain_path, heat_map_png, load_explainer

    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        paths = derivatives(workdir, args.images)
        default_artifact(workdir / "model.safetensors", args.views)
        started = time.perf_counter()
        explainer = load_explainer(workdir / "model.safetensors")
        load_s = time.perf_counter() - started
        timings = {"class computed": [], "class known": []}
        for path in [paths[0], *paths]:  # the first one again at the start: a warm-up, not counted
            for mode, rows in timings.items():
                known = explain_path(explainer, path).class_index if mode == "class known" else None
                started = time.perf_counter()
                explanation = explain_path(explainer, path, known)
                with Image.open(path) as picture:
                    png = heat_map_png(explanation.cam, picture.size)
                rows.append((time.perf_counter() - started, explanation.seconds, len(png), picture.size))
    print(f"cpu cores {os.cpu_count()}, torch threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    print(f"artifact load (once per worker process): {load_s:.2f} s")
    for mode, rows in timings.items():
        print(f"{mode} ({'the stored prediction, the worker' if mode == 'class known' else 'one more forward pass'}):")
        for total, cam, size, dimensions in rows[1:]:
            print(
                f"  derivative {dimensions[0]} x {dimensions[1]}: {total:.2f} s (CAM {cam:.2f} s), PNG {size >> 10} KiB"
            )
        totals = [row[0] for row in rows[1:]]
        print(f"  one heat map, {args.views} views: median {statistics.median(totals):.2f} s, max {max(totals):.2f} s")


if __name__ == "__main__":
    main()
