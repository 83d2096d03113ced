"""The train/test split: whole samples and whole near-duplicate groups on one side.

Rule (docs/architecture.md, "Data rules"):
- A physical sample (`Sample.split` train or test, assigned when it is created) has all its images on
  its side. A collection (`Sample.split` empty: a dataset import holding many samples) is split per
  near-duplicate group.
- A new image with near-duplicates takes their group's side: a group never straddles, even across
  samples (a near-duplicate outranks the sample, since it is the leak). When it joins groups that were
  on different sides, the merged group goes to train (its test images leave the test split: none of them
  was trained on, so no model's test score is inflated by the move).
- Otherwise it takes its sample's side, or, in a collection, the side of its own sha256.

`rebuild` recomputes everything from the groups and the samples (the data migration and
`manage.py reassign_splits`): connected components over "same physical sample" and "same group", each
on one side (train when its physical samples disagree; else the first image's sha256 in a collection).
"""

from __future__ import annotations

import hashlib
import logging

from portal.models import split_for_sha256

logger = logging.getLogger(__name__)

TRAIN, TEST = "train", "test"


def split_for_new_image(image_model, sample, sha256: str, matched_ids: list[int]) -> tuple[str, list[int]]:
    """(side of a new image, ids of stored images that must move to that side to keep its group whole)."""
    if matched_ids:
        groups = set(
            image_model.objects.filter(pk__in=matched_ids, duplicate_group__isnull=False).values_list(
                "duplicate_group", flat=True
            )
        )
        rows = list(image_model.objects.filter(pk__in=set(matched_ids) | groups).values_list("pk", "split"))
        rows += list(image_model.objects.filter(duplicate_group__in=groups).values_list("pk", "split"))
        sides = {side for _pk, side in rows}
        side = sides.pop() if len(sides) == 1 else TRAIN
        return side, sorted({pk for pk, s in rows if s != side})
    if sample.split in (TRAIN, TEST):
        return sample.split, []
    return split_for_sha256(sha256), []


def move(image_model, ids: list[int], side: str) -> int:
    if not ids:
        return 0
    moved = image_model.objects.filter(pk__in=ids).exclude(split=side).update(split=side)
    if moved:
        logger.info("%d images moved to %s to keep their near-duplicate group on one side", moved, side)
    return moved


def rebuild(image_model, sample_model) -> dict:
    """Reassign every image's side from its sample and near-duplicate group; returns counts."""
    rows = list(image_model.objects.order_by("pk").values_list("pk", "sha256", "sample_id", "duplicate_group", "split"))
    sample_side = dict(sample_model.objects.values_list("pk", "split"))
    parent: dict[object, object] = {}

    def find(node):
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    def union(a, b):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb, key=str)] = min(ra, rb, key=str)

    for pk, _sha, sample_id, group, _split in rows:
        find(("i", pk))
        if group:
            union(("i", pk), ("g", group))
        if sample_side.get(sample_id) in (TRAIN, TEST):
            union(("i", pk), ("s", sample_id))
    components: dict[object, dict] = {}
    for pk, sha, sample_id, _group, _split in rows:
        info = components.setdefault(find(("i", pk)), {"first": (pk, sha), "sides": set()})
        if pk < info["first"][0]:
            info["first"] = (pk, sha)
        if sample_side.get(sample_id) in (TRAIN, TEST):
            info["sides"].add(sample_side[sample_id])
    moves: dict[str, list[int]] = {TRAIN: [], TEST: []}
    for pk, _sha, _sample_id, _group, split in rows:
        info = components[find(("i", pk))]
        sides = info["sides"]
        side = (TRAIN if TRAIN in sides else TEST) if sides else split_for_sha256(info["first"][1])
        if split != side:
            moves[side].append(pk)
    for side, ids in moves.items():
        for start in range(0, len(ids), 5000):
            image_model.objects.filter(pk__in=ids[start : start + 5000]).update(split=side)
    return {"images": len(rows), "to_train": len(moves[TRAIN]), "to_test": len(moves[TEST])}


def test_split_fingerprint() -> str:
    """sha256 over the ids of the test split's curated images: production's evaluation records it, so a
    changed split (a migration, a merged group) is noticed and production is evaluated again."""
    from portal.models import SEMImage

    ids = (
        SEMImage.objects.filter(split=TEST, curated_category__isnull=False).order_by("pk").values_list("pk", flat=True)
    )
    digest = hashlib.sha256()
    for pk in ids.iterator(chunk_size=5000):
        digest.update(f"{pk},".encode())
    return digest.hexdigest()


def straddling_groups() -> list[int]:
    """Groups with images on both sides (should always be empty)."""
    from django.db.models import Count

    from portal.models import SEMImage

    return list(
        SEMImage.objects.filter(duplicate_group__isnull=False)
        .values("duplicate_group")
        .annotate(sides=Count("split", distinct=True))
        .filter(sides__gt=1)
        .values_list("duplicate_group", flat=True)
    )


# Fewer distinct samples than this on the test side and the test figures say little about a new sample.
MIN_TEST_SAMPLES = 3


def sample_independence() -> dict:
    """Whether the test split's curated images come from samples never seen in training.

    The figures are optimistic (the Training page and the dashboard say so) when any curated test image
    belongs to a sample that also has curated training images (a collection import: tiles and
    magnifications of one series on both sides), or when they come from fewer than MIN_TEST_SAMPLES
    samples."""
    from django.db.models import Count

    from portal.models import SEMImage

    counts: dict[int, dict[str, int]] = {}
    rows = SEMImage.objects.filter(curated_category__isnull=False).values("sample_id", "split").annotate(n=Count("pk"))
    for row in rows:
        counts.setdefault(row["sample_id"], {})[row["split"]] = row["n"]
    test_images = sum(sides.get(TEST, 0) for sides in counts.values())
    shared = sum(sides.get(TEST, 0) for sides in counts.values() if sides.get(TEST) and sides.get(TRAIN))
    test_samples = sum(1 for sides in counts.values() if sides.get(TEST))
    return {
        "test_images": test_images,
        "shared_test_images": shared,
        "test_samples": test_samples,
        "min_test_samples": MIN_TEST_SAMPLES,
        "optimistic": bool(test_images) and (shared > 0 or test_samples < MIN_TEST_SAMPLES),
    }
