"""Inference speed of the default model against the resnet34 path it replaced (issue 21, item 2).

Side by side in one run, interleaved rounds (the best of N per method, so load from other processes hits
all alike), `Engine.predict_paths` on the same 256-px derivatives of `../shared/sem-real` (synthetic ones
without it), batch 32, the machine's torch threads:

- resnet34 with the fastai head, BatchNorm folded by torch.fx: the path before the pretrained backbone;
- the default: EfficientNet-Lite0 texture features + head, 4 dihedral views averaged (as accurate as 8,
  bench/ablate_views.py) in one channels-last pass, BatchNorm folded by the backbone's declared pairs
  (`backbones.fold_body_batchnorm`);
- 8 views folded (the artifacts trained before 4 became the default), and 8 views not folded (what the
  engine ran before: torch.fx cannot trace the TF padding);
- 1 view folded (what a lab would trade for speed);
- the default with 128 images per body pass, the CPU pass width before feature_head.CPU_IMAGES_PER_PASS (4).

Weights are random (speed does not depend on them); each artifact goes through `save_artifact` and
`Engine.from_artifact` exactly as a worker loads it.

    .venv/bin/python bench/bench_backbone_inference.py [--quick] [--bs 32]
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

from bench.bench_inference import derivative_items, interleaved_images_per_second  # noqa: E402


def lite0_artifact(path: Path, classes: list[str], views: int) -> str:
    """A default-recipe artifact (random body and head) with the metadata the engine reads."""
    from classifier.artifact import save_artifact
    from classifier.backbones import build_body, get_backbone
    from classifier.feature_head import build_classifier, prototype_settings

    backbone = get_backbone("efficientnet_lite0")
    body = build_body(backbone)
    prototypes = prototype_settings(body.num_features)
    model = build_classifier(backbone, len(classes), body, tta_views=views, prototypes=prototypes).eval()
    metadata = {
        "classes": classes,
        "input_size": backbone.input_size,
        "arch": backbone.name,
        "temperature": 1.0,
        "tta_views": views,
        "prototypes": prototypes,
        "normalisation": {"mean": list(backbone.mean), "std": list(backbone.std), "contrast": "none"},
    }
    return save_artifact(path, model.state_dict(), metadata)


def resnet34_artifact(path: Path, classes: list[str]) -> str:
    from classifier.artifact import save_artifact
    from classifier.network import create_network

    model = create_network("resnet34", len(classes)).eval()
    metadata = {"classes": classes, "input_size": 224, "arch": "resnet34", "temperature": 1.0}
    return save_artifact(path, model.state_dict(), metadata)


def _with_cpu_pass(per_pass, call):
    """``call()`` with feature_head's CPU pass width set to ``per_pass`` (None: the default)."""
    from classifier import feature_head

    default = feature_head.CPU_IMAGES_PER_PASS
    feature_head.CPU_IMAGES_PER_PASS = per_pass or default
    try:
        return call()
    finally:
        feature_head.CPU_IMAGES_PER_PASS = default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--bs", type=int, default=32)
    args = parser.parse_args()

    import torch

    from classifier.engine import Engine

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        items, source = derivative_items(work, args.quick)
        paths = [path for path, _ in items]
        classes = sorted({label for _, label in items})
        engines = {
            "resnet34, BN folded (before)": Engine.from_artifact(
                work / "r34.semcls", resnet34_artifact(work / "r34.semcls", classes)
            ),
            "Lite0 head, 4 views, BN folded (default)": Engine.from_artifact(
                work / "l4.semcls", lite0_artifact(work / "l4.semcls", classes, 4)
            ),
            "Lite0 head, 8 views, BN folded": Engine.from_artifact(
                work / "l8.semcls", lite0_artifact(work / "l8.semcls", classes, 8)
            ),
            "Lite0 head, 8 views, not folded": Engine.from_artifact(work / "l8.semcls", None, fold_batchnorm=False),
            "Lite0 head, 1 view, BN folded": Engine.from_artifact(
                work / "l1.semcls", lite0_artifact(work / "l1.semcls", classes, 1)
            ),
        }

        def runner(engine, per_pass=None):
            return lambda: _with_cpu_pass(per_pass, lambda: engine.predict_paths(paths, batch_size=args.bs))

        runs = {name: (runner(engine), len(paths)) for name, engine in engines.items()}
        wide = "Lite0 head, 4 views, BN folded, 128 images per pass (before)"
        runs[wide] = (runner(engines["Lite0 head, 4 views, BN folded (default)"], 128), len(paths))
        results = interleaved_images_per_second(runs, 2 if args.quick else 3)
    print(
        f"# bench_backbone_inference {time.strftime('%Y-%m-%d %H:%M')} {platform.node()}; load average "
        f"{os.getloadavg()[0]:.1f} at the end; {len(paths)} derivatives from {source}; batch {args.bs}; "
        f"torch threads {torch.get_num_threads()}; torch {torch.__version__}"
    )
    before = results["resnet34, BN folded (before)"]
    for name, ips in results.items():
        print(f"  {name:<62} {ips:7.1f} images/s   {ips / before:5.2f}x resnet34")
    folded = results["Lite0 head, 8 views, BN folded"]
    print(f"folding, 8 views: {folded / results['Lite0 head, 8 views, not folded']:.2f}x")


if __name__ == "__main__":
    main()
