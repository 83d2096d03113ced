"""Old sha256 split vs the group-aware split on the real images: leakage and the inflation it causes.

For `../shared/sem-real` + `../shared/sem-real-2` (real micrographs, several per source series) it builds
three splits at SEM_TEST_SPLIT_PERCENT (15 %):
- old: each image by its own sha256 (`portal.models.split_for_sha256`, the portal before issue 13);
- new, collection: one import into a collection sample: each near-duplicate group (the portal's look-up:
  `classifier.perceptual`, radius 10) on the side of its first image's sha256 (`portal.services.ingestion.splits`);
- new, samples: each source series as a physical sample (side from its ID, `split_for_sample_id`), joined
  with its near-duplicate groups (`splits.rebuild`'s rule).
It prints the share of test images with a near-duplicate in train, and with `--train` the accuracy and
macro-F1 each split reports for the same recipe (classifier.train.train, resnet18, 64/128 px, 8/4 epochs,
seeds 0 and 1; classes absent from a split's train side are dropped from its test side).

    .venv/bin/python bench/bench_split.py [--train] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import real_data  # noqa: E402


def near_duplicate_pairs(hashes: list[dict[int, int]]) -> list[tuple[int, int]]:
    from classifier.perceptual import RADIUS, distance

    pairs = []
    for i in range(len(hashes)):
        for j in range(i + 1, len(hashes)):
            a, b = hashes[i], hashes[j]
            d = min(min(distance(a[0], v) for v in b.values()), min(distance(b[0], v) for v in a.values()))
            if d <= RADIUS:
                pairs.append((i, j))
    return pairs


def components(n: int, edges) -> list[int]:
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(n)]


def leak_share(sides: list[str], pairs) -> float:
    test = [i for i, s in enumerate(sides) if s == "test"]
    leaked = {i for a, b in pairs for i in (a, b) if sides[a] != sides[b] and sides[i] == "test"}
    return len(leaked) / max(len(test), 1), len(leaked), len(test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="store_true", help="also train the recipe on each split")
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    if not real_data.available():
        print("../shared/sem-real* not present")
        return
    cache = ROOT / "var" / "bench-real-derivatives"
    images = real_data.load_images()
    derived = real_data.derivatives(images, cache)  # also sets Django up
    from PIL import Image

    from classifier.perceptual import window_hashes
    from portal.models import split_for_sample_id, split_for_sha256

    started = time.perf_counter()
    hashes = []
    for image in images:
        with Image.open(derived[image.path]) as im:
            hashes.append(window_hashes(im))
    shas = [hashlib.sha256(image.path.read_bytes()).hexdigest() for image in images]
    pairs = near_duplicate_pairs(hashes)
    groups = components(len(images), pairs)
    print(
        f"{len(images)} images, {len({i.group for i in images})} source series; {len(pairs)} near-duplicate "
        f"pairs in {len({g for g in groups if groups.count(g) > 1})} groups "
        f"({sum(groups.count(g) > 1 for g in groups)} images) [{time.perf_counter() - started:.0f} s]"
    )
    cross_source = sum(images[a].group != images[b].group for a, b in pairs)
    print(f"near-duplicate pairs across source series: {cross_source}")

    old = [split_for_sha256(sha) for sha in shas]
    collection = [split_for_sha256(shas[groups[i]]) for i in range(len(images))]
    series_nodes = {name: len(images) + k for k, name in enumerate(sorted({i.group for i in images}))}
    joined = components(
        len(images) + len(series_nodes), pairs + [(i, series_nodes[image.group]) for i, image in enumerate(images)]
    )
    side_of = {}
    for i, image in enumerate(images):
        side_of.setdefault(joined[i], set()).add(split_for_sample_id(image.group))
    samples = [("train" if "train" in side_of[joined[i]] else "test") for i in range(len(images))]
    splits = {
        "old: sha256 per image": old,
        "new: collection (near-dup groups)": collection,
        "new: source series as samples": samples,
    }
    print(f"\n{'split':<36}{'test':>6}{'test w/ near-dup in train':>28}{'test w/ same series in train':>30}")
    for name, sides in splits.items():
        share, leaked, n_test = leak_share(sides, pairs)
        series_train = {images[i].group for i, s in enumerate(sides) if s == "train"}
        same_series = sum(1 for i, s in enumerate(sides) if s == "test" and images[i].group in series_train)
        print(
            f"{name:<36}{n_test:>6}{f'{leaked} ({share:.1%})':>28}"
            f"{f'{same_series} ({same_series / max(n_test, 1):.1%})':>30}"
        )
    if not args.train:
        return
    from classifier.config import TrainConfig
    from classifier.train import train

    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"\nrecipe: resnet18, sizes 64/128, epochs 8/4, seeds {seeds}, no pretrained weights")
    print(f"{'split':<36}{'seed':>5}{'train':>7}{'test':>6}{'accuracy':>10}{'macro-F1':>10}")
    for name, sides in splits.items():
        train_items = [(derived[im.path], im.category) for im, s in zip(images, sides) if s == "train"]
        present = {c for _, c in train_items}
        test_items = [
            (derived[im.path], im.category) for im, s in zip(images, sides) if s == "test" and im.category in present
        ]
        counts = Counter(c for _, c in train_items)
        classes = sorted(c for c in present if counts[c] >= 2)
        train_items = [(p, c) for p, c in train_items if c in classes]
        test_items = [(p, c) for p, c in test_items if c in classes]
        for seed in seeds:
            config = TrainConfig(arch="resnet18", sizes=(64, 128), epochs=(8, 4), seed=seed)
            with tempfile.TemporaryDirectory() as tmp:
                result = train(train_items, config, str(Path(tmp) / "m.pth"), test_items=test_items, classes=classes)
            ev = result.evaluation
            print(
                f"{name:<36}{seed:>5}{len(train_items):>7}{len(test_items):>6}{ev['accuracy']:>10.3f}"
                f"{ev['macro_avg']['f1']:>10.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
