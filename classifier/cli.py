"""Command line: ``python -m classifier train|evaluate|predict``.

DATA_DIR is a folder-per-category tree of raw images (the NFFA-EUROPE
layout); folder names are the class names. Raw files are decoded, their data
bar cropped and turned into 256-px derivatives before training/inference.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .config import IMBALANCE_MODES, TrainConfig

IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def scan_tree(data_dir: str | Path) -> list[tuple[str, str]]:
    """(path, folder name) for every image under each top-level folder."""
    root = Path(data_dir)
    if not root.is_dir():
        raise SystemExit(f"not a folder: {root}")
    items = []
    for category in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(category.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                items.append((str(path), category.name))
    if not items:
        raise SystemExit(f"no images found in category folders under {root}")
    return items


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m classifier", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model on a folder-per-category tree")
    train.add_argument("data_dir")
    train.add_argument("--out", required=True, help="artifact path to write")
    # The defaults are TrainConfig's, as in the portal's settings.
    train.add_argument("--arch", default=TrainConfig.arch)
    train.add_argument("--sizes", type=_ints, default=TrainConfig.sizes, help="e.g. 64,128,224")
    train.add_argument("--epochs", type=_ints, default=None, help="per stage, e.g. 3,3,4")
    train.add_argument("--lr", type=_floats, default=None, help="per stage (or one value)")
    train.add_argument("--bs", type=_ints, default=None, help="batch size per stage (or one value)")
    train.add_argument("--seed", type=int, default=TrainConfig.seed)
    train.add_argument("--valid-pct", type=float, default=TrainConfig.valid_pct)
    train.add_argument("--test-pct", type=float, default=0.0, help="stratified held-out test share")
    train.add_argument("--imbalance", default=TrainConfig.imbalance, choices=IMBALANCE_MODES)
    train.add_argument("--lr-find", action="store_true")
    train.add_argument("--no-pretrained", action="store_true")
    train.add_argument("--weights", default=None, help="local ImageNet weights file for --arch")
    train.add_argument("--cache", default=None, help="folder for the derivative cache (reused between runs)")
    train.add_argument("--device", default=None)

    evaluate = commands.add_parser("evaluate", help="evaluate an artifact on a folder-per-category tree")
    evaluate.add_argument("artifact")
    evaluate.add_argument("data_dir")
    evaluate.add_argument("--bs", type=int, default=32)
    evaluate.add_argument("--json", action="store_true", help="print the evaluation as JSON")

    predict = commands.add_parser("predict", help="classify images")
    predict.add_argument("artifact")
    predict.add_argument("images", nargs="+")
    predict.add_argument("--bs", type=int, default=32)
    predict.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    return {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict}[args.command](args)


def cmd_train(args) -> int:
    from tqdm import tqdm

    from .metrics import format_report
    from .train import stratified_split, train

    items = scan_tree(args.data_dir)
    test_items = None
    if args.test_pct > 0:
        keep, held_out = stratified_split([label for _, label in items], args.test_pct, args.seed + 1)
        items, test_items = [items[i] for i in keep], [items[i] for i in held_out]
    overrides = {k: v for k, v in (("epochs", args.epochs), ("lrs", args.lr), ("batch_sizes", args.bs)) if v}
    config = TrainConfig(
        arch=args.arch,
        sizes=args.sizes,
        seed=args.seed,
        valid_pct=args.valid_pct,
        imbalance=args.imbalance,
        lr_find=args.lr_find,
        pretrained=not args.no_pretrained,
        weights_path=args.weights,
        raw_inputs=True,
        derivative_cache=args.cache,
        device=args.device,
        **overrides,
    )
    classes = sorted({label for _, label in items} | {label for _, label in test_items or []})
    print(f"{len(items)} training images, {len(test_items or [])} test images, {len(classes)} classes")
    with tqdm(total=1000, unit="‰", bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}") as bar:

        def progress(event: dict) -> None:
            bar.update(max(0, int(event["fraction"] * 1000) - bar.n))
            if event["event"] == "batch":
                bar.set_postfix_str(
                    f"stage {event['stage'] + 1}/{event['stages']} {event['size']}px "
                    f"epoch {event['epoch'] + 1}/{event['epochs']} loss {event['train_loss']:.3f}",
                    refresh=False,
                )
            elif event["event"] == "epoch_end":
                tqdm.write(
                    f"stage {event['stage'] + 1} ({event['size']} px) epoch {event['epoch'] + 1}: "
                    f"train {event['train_loss']:.4f} valid {event['valid_loss']:.4f} "
                    f"accuracy {event['metrics'].get('accuracy', float('nan')):.3f} "
                    f"({event['duration_s']:.1f} s)"
                )
            else:
                bar.set_postfix_str(event["event"], refresh=False)

        result = train(items, config, args.out, test_items=test_items, classes=classes, progress=progress)
    meta = result.metadata
    print(
        f"\nwrote {result.artifact_path} (sha256 {result.sha256[:12]}…) in {result.duration_s:.0f} s on "
        f"{result.device}; pretrained weights used: {meta['pretrained_used']}; "
        f"temperature {meta['temperature']:.3f} (ECE {meta['calibration']['ece_before']:.3f} -> "
        f"{meta['calibration']['ece_after']:.3f})"
    )
    print(f"evaluation on the {result.evaluation['split']} split:")
    print(format_report(result.evaluation))
    return 0


def _prepared_images(paths, desc: str):
    from tqdm import tqdm

    from .preprocess import prepare_raw

    return [prepare_raw(p) for p in tqdm(paths, desc=desc, unit="img", leave=False)]


def _predict(engine, paths, batch_size):
    from tqdm import tqdm

    predictions = []
    for start in tqdm(range(0, len(paths), batch_size), desc="classifying", unit="batch", leave=False):
        chunk = paths[start : start + batch_size]
        predictions += engine.predict_images(_prepared_images(chunk, "decoding"), batch_size=batch_size)
    return predictions


def cmd_evaluate(args) -> int:
    import numpy as np

    from .engine import Engine
    from .metrics import evaluate, format_report

    engine = Engine.from_artifact(args.artifact)
    items = scan_tree(args.data_dir)
    unknown = sorted({label for _, label in items} - set(engine.classes))
    if unknown:
        print(f"skipping folders the model does not know: {', '.join(unknown)}", file=sys.stderr)
        items = [item for item in items if item[1] in engine.classes]
    predictions = _predict(engine, [p for p, _ in items], args.bs)
    result = evaluate([label for _, label in items], np.array([p.probabilities for p in predictions]), engine.classes)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


def cmd_predict(args) -> int:
    from .engine import Engine

    engine = Engine.from_artifact(args.artifact)
    predictions = _predict(engine, args.images, args.bs)
    if args.json:
        print(
            json.dumps(
                [{"path": path, **p.to_dict(), "classes": engine.classes} for path, p in zip(args.images, predictions)],
                indent=2,
            )
        )
        return 0
    width = max(len(path) for path in args.images)
    print(f"{'image':<{width}}  {'class':<28}{'conf':>6}{'margin':>8}{'entropy':>9}")
    for path, p in zip(args.images, predictions):
        print(f"{path:<{width}}  {p.top_class:<28}{p.confidence:>6.3f}{p.margin:>8.3f}{p.entropy:>9.3f}")
    return 0
