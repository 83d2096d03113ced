"""Similar curated images: exact cosine search over the production model's stored embeddings.

Each process keeps one matrix (the unit-length embeddings of the curated images, float32 so NumPy runs
one BLAS matrix-vector product per query) keyed by the production model version and a change counter.
The counter lives in the Django cache, shared by the web and worker processes: classification (new
embeddings) and labels (an image becomes curated or not) bump it, and a later query reloads the matrix
(at most every SEM_SIMILAR_REFRESH_S). A promotion or roll-back changes the production version, which
reloads at once; a matrix of a rolled-back-to version kept from before is stale by the counter anyway. The rows found are
read again from the database through the viewer's visible images, so a matrix a moment stale can never
show an image the viewer may not see or a withdrawn label.

No database extension: the vectors are float16 bytes in a BinaryField (SQLite and PostgreSQL alike).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.core.cache import cache

from portal.models import Embedding, ModelVersion, SEMImage
from portal.permissions import is_admin, visible_images, visible_projects

logger = logging.getLogger(__name__)

GENERATION_KEY = "similar-images:generation"
DEFAULT_K = 6
MAX_K = 50
# Rows taken from the matrix beyond k, so that rows dropped by the database check (a label withdrawn,
# an image deleted since the matrix was loaded) still leave k results.
SPARE_ROWS = 10

ENCODING = np.dtype("<f2")


def encode(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).astype(ENCODING).tobytes()


def decode(data: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(bytes(data), dtype=ENCODING)


def _cache_errors() -> tuple[type[BaseException], ...]:
    """What the cache raises when its server or disk is unavailable (as portal/api/throttling.py)."""
    import redis.exceptions

    return (OSError, redis.exceptions.RedisError)


CACHE_ERRORS = _cache_errors()


def bump_generation() -> None:
    """Mark every process's matrix stale. A fresh random token, not an increment: a cache that evicted
    the key and counts again from 1 could otherwise repeat a generation a process already holds.
    A cache outage must not fail the label or batch that called this (it runs after their commit)."""
    try:
        cache.set(GENERATION_KEY, uuid.uuid4().hex, timeout=None)
    except CACHE_ERRORS as error:
        logger.warning("could not mark the similar-image matrices stale (cache unavailable): %s", error)


def generation() -> str | None:
    """The current token, or None while the cache is unavailable; a missing one (a cache cleared or
    restarted) is replaced by a fresh token, so a matrix loaded before the loss is never taken for current."""
    try:
        token = cache.get(GENERATION_KEY)
        if token is None:
            cache.add(GENERATION_KEY, uuid.uuid4().hex, timeout=None)
            token = cache.get(GENERATION_KEY) or ""
    except CACHE_ERRORS as error:
        logger.warning("similar-image search: cache unavailable, keeping the loaded matrix: %s", error)
        return None
    return token


@dataclass
class SearchIndex:
    """Rows sorted by project, so that a viewer of a few projects scans only their rows."""

    model_version_id: int
    generation: str
    image_ids: np.ndarray  # int64, one per row
    matrix: np.ndarray  # float32 (rows, dimension), unit rows
    project_rows: dict[int, slice]  # project id -> its contiguous rows
    loaded_in_s: float = 0.0
    built_at: float = field(default_factory=time.monotonic)

    def search(self, query: np.ndarray, k: int, *, exclude: int, projects: set[int] | None) -> list[tuple[int, float]]:
        """The rows most similar to `query` (best first), as (image id, cosine), within `projects`."""
        if projects is None:
            parts = [slice(0, len(self.image_ids))]
        else:
            parts = [self.project_rows[pk] for pk in sorted(projects) if pk in self.project_rows]
        if not parts or query.size != self.matrix.shape[1]:  # a vector of another dimension: nothing alike
            return []
        query = unit(query)
        ids = np.concatenate([self.image_ids[part] for part in parts])
        scores = np.concatenate([self.matrix[part] @ query for part in parts])
        scores[ids == exclude] = -np.inf
        take = min(k, int(np.isfinite(scores).sum()))
        if take == 0:
            return []
        best = np.argpartition(-scores, take - 1)[:take]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(int(ids[row]), float(scores[row])) for row in best]


def unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)  # a zero vector stays zero (similar to nothing)


def build_index(model_version_id: int, gen: str, rows) -> SearchIndex:
    """The index from (image id, project id, float16 bytes) rows; rows of another dimension are skipped."""
    started = time.perf_counter()
    rows = list(rows)
    sizes = [len(row[2]) for row in rows]
    size = max(set(sizes), key=sizes.count) if rows else 0
    rows = sorted((row for row in rows if len(row[2]) == size), key=lambda row: (row[1], row[0]))
    matrix = np.empty((len(rows), size // 2), dtype=np.float32)  # filled row by row: no float16 copy of it all
    for index, row in enumerate(rows):
        matrix[index] = decode(row[2])
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    projects = np.array([row[1] for row in rows], dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, projects[1:] != projects[:-1]]) if len(rows) else np.array([], int)
    stops = np.r_[starts[1:], len(rows)]
    return SearchIndex(
        model_version_id=model_version_id,
        generation=gen,
        image_ids=np.array([row[0] for row in rows], dtype=np.int64),
        matrix=matrix,
        project_rows={int(projects[a]): slice(int(a), int(b)) for a, b in zip(starts, stops)},
        loaded_in_s=time.perf_counter() - started,
    )


_lock = threading.Lock()
_index: SearchIndex | None = None  # one per process: the production model's, replaced when stale


def current_index(model: ModelVersion) -> SearchIndex:
    global _index
    gen = generation()
    with _lock:
        if _index is None or _index.model_version_id != model.pk or _stale(_index, gen):
            _index = None  # let the old matrix go before the new one is built (peak memory)
            rows = Embedding.objects.filter(model_version=model, image__curated_category__isnull=False).values_list(
                "image_id", "image__sample__project_id", "vector"
            )
            _index = build_index(model.pk, gen or "", rows.iterator(chunk_size=2000))
        return _index


def _stale(index: SearchIndex, gen: str | None) -> bool:
    """Changed since loaded, and loaded long enough ago: a burst of labels reloads the matrix once, not
    per label. Meanwhile the rows found are re-read from the database, so the viewer still sees only
    current labels of images they may see; an image curated in the last seconds may be missing."""
    if gen is None:
        return False  # the cache is down: the loaded matrix, rather than a reload per query
    return index.generation != gen and time.monotonic() - index.built_at >= settings.SEM_SIMILAR_REFRESH_S


def similar_images(
    user, image: SEMImage, k: int = DEFAULT_K
) -> tuple[ModelVersion | None, list[tuple[SEMImage, float]]]:
    """The production model and the k curated images most like `image` that `user` may see, best first.

    Empty when there is no production model or it stored no embedding for `image` (a model without
    one, or the image not classified yet)."""
    model = ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).first()
    if model is None:
        return None, []
    stored = Embedding.objects.filter(image=image, model_version=model).values_list("vector", flat=True).first()
    if stored is None:
        return model, []
    projects = None if is_admin(user) else set(visible_projects(user).values_list("pk", flat=True))
    found = current_index(model).search(decode(stored), k + SPARE_ROWS, exclude=image.pk, projects=projects)
    shown = visible_images(user).filter(pk__in=[pk for pk, _ in found], curated_category__isnull=False)
    by_id = {candidate.pk: candidate for candidate in shown.select_related("curated_category").defer("metadata")}
    return model, [(by_id[pk], score) for pk, score in found if pk in by_id][:k]
