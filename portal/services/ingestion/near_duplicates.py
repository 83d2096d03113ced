"""Near-duplicate detection at ingestion: perceptual hashes of the derivative, an index that stays fast at
100,000 images, and near-duplicate groups.

Each image stores eleven 64-bit phashes (`classifier.perceptual`: the whole derivative and ten centre and
corner windows) in `PerceptualHash`, each with its four 16-bit bands indexed. A new image is a
near-duplicate of a stored one when its whole-image hash is within `RADIUS` bits of any of the stored
image's hashes, or one of its windows is within `RADIUS` of the stored whole-image hash (a crop stored
first). Lookup (multi-index hashing): two hashes within 10 bits agree within 2 bits on one of the four
bands, so a probe reads the rows whose band equals one of 137 neighbours of its own, per band, through the
band indexes, and PostgreSQL checks the full distance (`bit_count`). bench/bench_near_dup.py measures it.

Groups: `SEMImage.duplicate_group` is the id of the group's first image (empty for an image with no
near-duplicate); an image that matches several groups merges them into the oldest.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection

from classifier.perceptual import FULL, RADIUS, band_neighbours, bands, distance, to_signed, to_unsigned

TABLE = "portal_perceptualhash"


@dataclass(frozen=True)
class Match:
    image_id: int
    distance: int


def probe_sql(table: str, value: int, *, full_only: bool) -> tuple[str, list]:
    """SQL (PostgreSQL) and parameters of one probe: (image_id, value) of the rows within RADIUS bits of
    `value` (of whole-image hashes only with `full_only`). Shared with the benchmark."""
    neighbours = [band_neighbours(band) for band in bands(value)]
    where = " OR ".join(f"band{i} = ANY(%s)" for i in range(4))
    sql = (
        f"SELECT image_id, value FROM {table} WHERE ({where})"
        f"{' AND region = 0' if full_only else ''} AND bit_count((value # %s)::bit(64)) <= %s"
    )
    return sql, [*neighbours, to_signed(value), RADIUS]


def find_matches(hashes: dict[int, int], *, exclude: int | None = None) -> list[Match]:
    """Stored images near `hashes` ({window: unsigned hash} of a new image), closest first."""
    probes = [(hashes[FULL], False)] + [(value, True) for window, value in hashes.items() if window != FULL]
    best: dict[int, int] = {}
    for value, full_only in probes:
        for image_id, stored in _candidates(value, full_only):
            if image_id == exclude:
                continue
            d = distance(value, to_unsigned(stored))
            if d <= RADIUS and d < best.get(image_id, RADIUS + 1):
                best[image_id] = d
    return sorted((Match(i, d) for i, d in best.items()), key=lambda m: (m.distance, m.image_id))


def _candidates(value: int, full_only: bool):
    if connection.vendor == "postgresql":
        sql, params = probe_sql(TABLE, value, full_only=full_only)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    from django.db.models import Q

    from portal.models import PerceptualHash

    query = Q()
    for i, band in enumerate(bands(value)):
        query |= Q(**{f"band{i}__in": band_neighbours(band)})
    rows = PerceptualHash.objects.filter(query)
    if full_only:
        rows = rows.filter(region=FULL)
    return rows.values_list("image_id", "value")


def hash_rows(model, image_id: int, hashes: dict[int, int]) -> list:
    """PerceptualHash rows (of `model`: the current or a migration's historical class) of one image."""
    rows = []
    for window, value in hashes.items():
        b = bands(value)
        rows.append(
            model(
                image_id=image_id, region=window, value=to_signed(value), band0=b[0], band1=b[1], band2=b[2], band3=b[3]
            )
        )
    return rows


def join_groups(image_model, image, matches: list[Match]) -> int | None:
    """Put `image` (saved) into the group of its matches, merging their groups into the oldest; returns
    the group id (None without matches)."""
    if not matches:
        return None
    ids = [m.image_id for m in matches]
    groups = {g or i for i, g in image_model.objects.filter(pk__in=ids).values_list("pk", "duplicate_group")}
    group = min(groups | {min(ids)})
    image_model.objects.filter(pk__in=ids).update(duplicate_group=group)
    image_model.objects.filter(duplicate_group__in=groups - {group}).update(duplicate_group=group)
    image_model.objects.filter(pk=image.pk).update(duplicate_group=group, near_duplicate_of=matches[0].image_id)
    image.duplicate_group, image.near_duplicate_of_id = group, matches[0].image_id
    return group


def group_members(image) -> list[int]:
    """Ids of the other images in `image`'s near-duplicate group."""
    from portal.models import SEMImage

    if not image.duplicate_group:
        return []
    return list(
        SEMImage.objects.filter(duplicate_group=image.duplicate_group)
        .exclude(pk=image.pk)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


# --- What a user is shown (upload outcome, image page, API) ----------------------------------------------
# An image of a project the user cannot see is never revealed, not even that it exists: the link (and the
# API's `near_duplicate_of`) is shown only when the user may open the other image.


def visible_near_duplicate(user, image):
    """`image`'s closest earlier near-duplicate (SEMImage.near_duplicate_of) when `user` may see it, else None."""
    from portal.permissions import visible_images

    if not image.near_duplicate_of_id:
        return None
    return visible_images(user).filter(pk=image.near_duplicate_of_id).only("pk", "original_filename", "split").first()


def visible_group_members(user, image, *, limit: int = 12) -> tuple[list, int]:
    """(up to `limit` other images of `image`'s near-duplicate group that `user` may see, oldest first;
    how many of them `user` may see in all)."""
    from portal.permissions import visible_images

    if not image.duplicate_group:
        return [], 0
    members = visible_images(user).filter(duplicate_group=image.duplicate_group).exclude(pk=image.pk).order_by("pk")
    shown = list(members.only("pk", "original_filename", "split")[:limit])
    return shown, (len(shown) if len(shown) < limit else members.count())
