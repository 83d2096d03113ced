"""Real SEM micrographs for benchmarks: `../shared/sem-real*`, grouped by source, split by group.

A *group* is one source series: a repository, or within a repository that mixes several series
(ARIM-Academy's microplastics families, baiyubaiyu's filler loadings) one series. A group is always
on one side of a split, so the test side measures generalisation to unseen sources, not memory of
neighbouring tiles, tilt views or magnifications of one field (sem-real-2/README.md asks for this).

Derivatives are made by the ingestion service's own functions (`portal.services.ingestion.ingest_examine`): the bytes
the worker trains on and classifies in production.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from classifier.series import source_group

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REAL_SETS = ("sem-real", "sem-real-2")
# Classes whose test share a split aims at (by images); groups are large, so this is approximate.
TEST_SHARE = 0.35


@dataclass(frozen=True)
class RealImage:
    path: Path
    category: str
    group: str


def available() -> bool:
    return all((SHARED / name / "manifest.csv").is_file() for name in REAL_SETS)


def load_images(sets=REAL_SETS) -> list[RealImage]:
    images = []
    for name in sets:
        folder = SHARED / name
        with open(folder / "manifest.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                images.append(
                    RealImage(
                        folder / row["file"], row["category"], source_group(row["repo"], row["file"], row["path"])
                    )
                )
    return images


def split_by_source(images: list[RealImage], seed: int, test_share: float = TEST_SHARE):
    """(train, test): whole groups on one side; each class keeps at least one group in training,
    and a class with a single group stays in training only (nothing to test it against)."""
    groups: dict[str, list[RealImage]] = defaultdict(list)
    for image in images:
        groups[image.group].append(image)
    main_class = {g: Counter(i.category for i in members).most_common(1)[0][0] for g, members in groups.items()}
    class_total = Counter(image.category for image in images)
    groups_left = Counter(main_class.values())
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    in_test: Counter = Counter()
    train, test = [], []
    for group in order:
        members, cls = groups[group], main_class[group]
        fits = in_test[cls] + len(members) <= max(test_share * class_total[cls], 1)
        if fits and groups_left[cls] > 1:
            groups_left[cls] -= 1
            test += members
            for image in members:
                in_test[image.category] += 1
        else:
            train += members
    trained = {image.category for image in train}
    return train, [image for image in test if image.category in trained]


def derivatives(images: list[RealImage], cache: Path) -> dict[Path, str]:
    """{original path: derivative PNG path}, made once by the ingestion service's functions."""
    setup_django(cache)
    from portal.services.ingestion.ingest_examine import make_derived_files
    from portal.services.ingestion.validation import inspect_image
    from portal.services.ingestion.validation_sniff import sniff_format

    cache.mkdir(parents=True, exist_ok=True)
    result = {}
    for image in images:
        key = hashlib.sha256(image.path.read_bytes()).hexdigest()
        target = cache / f"{key}.png"
        if not target.exists():
            with open(image.path, "rb") as handle:
                head = handle.read(64)
            _info, grey = inspect_image(str(image.path), sniff_format(head, image.path.name))
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(make_derived_files(grey).derivative_png)
            os.replace(tmp, target)
        result[image.path] = str(target)
    return result


def items(images: list[RealImage], derived: dict[Path, str]) -> list[tuple[str, str]]:
    return [(derived[image.path], image.category) for image in images]


def write_tree(images: list[RealImage], root: Path) -> Path:
    """A folder-per-category tree of symbolic links to the originals (the reference recipe's input)."""
    for image in images:
        target = root / image.category / f"{image.group.replace('/', '_').replace('#', '_')}__{image.path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(image.path)
    return root


def setup_django(var_dir: Path) -> None:
    """Django settings for the portal functions a benchmark calls (embedded mode, a private var/)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("SEM_VAR_DIR", str(var_dir / "var"))
    import django

    django.setup()


def describe(train, test) -> str:
    def counts(side):
        return ", ".join(f"{c} {n}" for c, n in sorted(Counter(i.category for i in side).items()))

    return (
        f"train {len(train)} images / {len({i.group for i in train})} sources ({counts(train)}); "
        f"test {len(test)} / {len({i.group for i in test})} sources ({counts(test)})"
    )


METRICS = ("accuracy", "macro_recall", "macro_f1", "ece")


def summary_table(rows: list[dict], by: str, seconds: str) -> str:
    """Markdown: one line per `by` value with mean ± sd over its runs (seeds) of the metrics and `seconds`."""
    header = f"| {by} | seeds | accuracy | macro recall | macro-F1 | ECE | {seconds} |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(row[by] for row in rows):
        group = [row for row in rows if row[by] == name]
        cells = [mean_sd([row.get(key) for row in group]) for key in (*METRICS, seconds)]
        lines.append(f"| {name} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_sd(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _main():
    images = load_images()
    for seed in (0, 1, 2):
        train, test = split_by_source(images, seed)
        assert not {i.group for i in train} & {i.group for i in test}
        print(f"seed {seed}: {describe(train, test)}")


if __name__ == "__main__":
    _main()
