"""False matches of the near-duplicate rule on every real image, and what stricter rules would cost.

Every image of `../shared/sem-real*` goes through the ingestion's decoding and derivative (as in
bench_near_dup.py), and so do the re-saved copies and crops of every 2nd image. For each pair of images from
different sources, and each copy against its original, it keeps the whole-image distance and the best
whole-vs-window distance (either way round), then prints, per rule, how many different-source pairs match and
the share of each kind of copy found. The portal's rule: whole within 10 bits, or whole-vs-window within 10.

    .venv/bin/python bench/bench_near_dup_rules.py        # about 4 minutes on 2 cores
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import real_data  # noqa: E402
from bench_near_dup import hashes_of, variants  # noqa: E402

# (whole radius, window radius, whole-hash check for window matches or None)
RULES = [(10, 10, None), (10, 8, None), (10, 10, 20), (10, 10, 16)]


def pair_distances(a: dict[int, int], b: dict[int, int]) -> tuple[int, int]:
    from classifier.perceptual import FULL, distance

    whole = distance(a[FULL], b[FULL])
    by_window = min(
        min(distance(a[FULL], v) for k, v in b.items() if k != FULL),
        min(distance(b[FULL], v) for k, v in a.items() if k != FULL),
    )
    return whole, by_window


def matches(whole: int, by_window: int, rule) -> bool:
    whole_radius, window_radius, check = rule
    return whole <= whole_radius or (by_window <= window_radius and (check is None or whole <= check))


def main() -> None:
    real_data.setup_django(ROOT / "var" / "bench-near-dup")
    started = time.perf_counter()
    originals, copies = [], []
    for number, image in enumerate(real_data.load_images()):
        base = hashes_of(image.path.read_bytes(), image.path.name, {})
        if base is None:
            continue
        originals.append((image.group, base["phash+win"]))
        if number % 2 == 0:
            for kind, (data, filename) in variants(image.path)[0].items():
                found = hashes_of(data, filename, {})
                if found:
                    copies.append((kind, pair_distances(base["phash+win"], found["phash+win"])))
    cross = [pair_distances(a, b) for (ga, a), (gb, b) in itertools.combinations(originals, 2) if ga != gb]
    print(
        f"{len(originals)} images, {len(cross)} different-source pairs, {len(copies)} copies "
        f"[{time.perf_counter() - started:.0f} s]"
    )
    kinds = sorted({kind for kind, _ in copies})
    print("rule (whole/window/check)  false pairs  " + "  ".join(f"{kind:>13}" for kind in kinds))
    for rule in RULES:
        false_pairs = sum(matches(*pair, rule) for pair in cross)
        found = [
            100 * sum(matches(*d, rule) for k, d in copies if k == kind) / sum(1 for k, _ in copies if k == kind)
            for kind in kinds
        ]
        print(f"{str(rule):<26} {false_pairs:>11}  " + "  ".join(f"{share:>12.0f}%" for share in found))
    closest = sorted(cross, key=lambda pair: min(pair))[:5]
    print(f"closest different-source pairs (whole, window): {closest}")


if __name__ == "__main__":
    main()
