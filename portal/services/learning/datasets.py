"""What a training run learns from and is measured on: the curated train-split and test-split
derivatives of the categories with enough training images (SEM_MIN_IMAGES_PER_CLASS).

Its own module so that both training runs (training.py) and the promotion gate (promotion.py) read it
without importing each other.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Count

from portal.models import Category, SEMImage
from portal.services.delivery.file_cache import local_derivatives
from portal.storage import media_storage

MAX_CURATED_OUTLIERS = 500  # a detector's worth of outliers; more would slow every training for little


@dataclass
class TrainingData:
    train_items: list[tuple[str, str]]  # (derivative path, category name)
    test_items: list[tuple[str, str]]
    classes: list[str]
    train_labels: dict[str, str]  # {sha256: category name}
    skipped: int  # curated images without a readable derivative
    too_few: dict[str, int] = field(default_factory=dict)  # {category: curated train images} below the minimum
    # The sample (physical series) of each train item: training weighs series, not images, and
    # calibrates on whole series, so a long series of one sample does not pass for many sources.
    train_groups: list[str] = field(default_factory=list)
    # The images' primary keys, in the order of train_items and test_items (a head refit reads their
    # stored embeddings).
    train_ids: list[int] = field(default_factory=list)
    test_ids: list[int] = field(default_factory=list)
    # Derivatives of images a curator marked "not SEM / not classifiable": the out-of-scope detector
    # learns the outside from them (classifier.ood's outlier classifier), the newest MAX_CURATED_OUTLIERS.
    outliers: list[str] = field(default_factory=list)


def training_data() -> TrainingData:
    """Curated train-split derivatives to learn from; curated test-split ones to evaluate on, as local
    paths (on object storage: copies in this worker's cache, pinned until the run releases them)."""
    rows = list(
        SEMImage.objects.filter(curated_category__isnull=False, curated_category__active=True)
        .exclude(not_classifiable=True)  # a curator's "not SEM / not classifiable": kept, never learnt from
        .values_list("split", "derivative", "sha256", "curated_category__name", "sample_id", "pk")
    )
    local = local_derivatives(media_storage(), [(row[1], row[2]) for row in rows if row[1]], pin=True)
    train, test, labels, skipped, groups, ids = [], [], {}, 0, {}, {}
    for split, derivative, sha256, category, sample_id, pk in rows:
        path = local.get(derivative) if derivative else None
        if path is None:
            skipped += 1
            continue
        ids[str(path)] = pk
        if split == SEMImage.Split.TRAIN:
            train.append((str(path), category))
            labels[sha256] = category
            groups[str(path)] = f"sample-{sample_id}"
        else:
            test.append((str(path), category))
    order = list(Category.objects.values_list("name", flat=True))  # admin-defined display order
    counts = Counter(category for _, category in train)
    minimum = settings.SEM_MIN_IMAGES_PER_CLASS
    too_few = {name: counts[name] for name in order if 0 < counts[name] < minimum}
    classes = [name for name in order if counts[name] >= minimum]
    offered = set(classes)
    train = [(path, category) for path, category in train if category in offered]
    test = [(path, category) for path, category in test if category in offered]
    labels = {sha: category for sha, category in labels.items() if category in offered}
    return TrainingData(
        train,
        test,
        classes,
        labels,
        skipped,
        too_few,
        [groups[path] for path, _ in train],
        [ids[path] for path, _ in train],
        [ids[path] for path, _ in test],
        curated_outliers(),
    )


def curated_outliers() -> list[str]:
    """Local derivative paths of the newest images marked not SEM / not classifiable (pinned like the rest)."""
    rows = (
        SEMImage.objects.filter(not_classifiable=True)
        .exclude(derivative="")
        .order_by("-pk")
        .values_list("derivative", "sha256")[:MAX_CURATED_OUTLIERS]
    )
    local = local_derivatives(media_storage(), list(rows), pin=True)
    return [str(local[derivative]) for derivative, _ in rows if local.get(derivative)]


def class_readiness() -> list[dict]:
    """Per active category: curated training images, and how many more it needs before a model
    offers it (SEM_MIN_IMAGES_PER_CLASS); for the Training page and the dashboard."""
    minimum = settings.SEM_MIN_IMAGES_PER_CLASS
    counts = dict(
        SEMImage.objects.filter(
            split=SEMImage.Split.TRAIN, curated_category__isnull=False, curated_category__active=True
        )
        .values_list("curated_category__name")
        .annotate(n=Count("id"))
    )
    return [
        {"name": name, "train_images": counts.get(name, 0), "needed": max(0, minimum - counts.get(name, 0))}
        for name in Category.objects.filter(active=True).values_list("name", flat=True)
    ]
