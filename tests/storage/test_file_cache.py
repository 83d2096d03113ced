"""The worker cache (portal/services/delivery/file_cache.py) reading from a real S3 API: keyed by sha256, checked on
load, never half-written, bounded by least recent use; on the file system it hands out the file's own path."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
from django.core.files.base import ContentFile

from portal.services.delivery.file_cache import CacheMismatch, FileCache, local_copy, local_derivatives
from portal.storage import media_storage
from tests.storage.conftest import local_files


def _store(name: str, data: bytes) -> tuple[str, str]:
    stored = media_storage().save(name, ContentFile(data))
    return stored, hashlib.sha256(data).hexdigest()


def test_a_copy_is_fetched_once_and_served_locally_after(s3, tmp_path):
    name, sha = _store("derivatives/aa/one.png", b"derivative bytes")
    cache = FileCache(tmp_path / "cache", 10_000)

    path = cache.get(media_storage(), name, key=sha, suffix=".png")
    assert path.read_bytes() == b"derivative bytes" and path == tmp_path / "cache" / sha[:2] / f"{sha}.png"
    s3.client.delete_object(Bucket=s3.media_bucket, Key=f"lab/{name}")  # gone from the bucket: the copy serves
    assert FileCache(tmp_path / "cache", 10_000).get(media_storage(), name, key=sha, suffix=".png") == path
    assert not list((tmp_path / "cache" / ".incoming").iterdir())  # no temporary file left


def test_a_corrupt_copy_is_detected_on_load_and_fetched_again(s3, tmp_path):
    name, sha = _store("derivatives/bb/two.png", b"the right bytes")
    path = FileCache(tmp_path / "cache", 10_000).get(media_storage(), name, key=sha, suffix=".png")
    path.write_bytes(b"the wrong bytes")  # a bad disk, a tampered file: same size, other bytes

    fresh_process = FileCache(tmp_path / "cache", 10_000)
    assert fresh_process.get(media_storage(), name, key=sha, suffix=".png").read_bytes() == b"the right bytes"


def test_stored_bytes_that_are_not_the_recorded_sha256_are_refused(s3, tmp_path):
    name, _sha = _store("models/v1.safetensors", b"swapped artifact")
    cache = FileCache(tmp_path / "cache", 10_000)
    with pytest.raises(CacheMismatch):
        cache.get(media_storage(), name, key="0" * 64, suffix=".safetensors", expected_sha256="0" * 64)
    assert local_files(tmp_path / "cache") == []


def test_the_least_recently_used_copies_go_beyond_the_size_bound(s3, tmp_path):
    cache = FileCache(tmp_path / "cache", 3500)
    paths = {}
    for index in range(3):
        name, sha = _store(f"derivatives/cc/{index}.png", bytes([index]) * 1000)
        paths[index] = cache.get(media_storage(), name, key=sha, suffix=".png")
        past = time.time() - 100 + index
        os.utime(paths[index], (past, past))
    cache.get(media_storage(), "derivatives/cc/0.png", key=hashlib.sha256(bytes([0]) * 1000).hexdigest(), suffix=".png")

    name, sha = _store("derivatives/cc/3.png", bytes([3]) * 1000)
    cache.get(media_storage(), name, key=sha, suffix=".png")

    assert not paths[1].exists()  # the least recently used one
    assert paths[0].exists() and paths[2].exists()  # 0 was used again after 2
    assert sum(path.stat().st_size for path in (tmp_path / "cache").glob("??/*.png")) <= 3500


def test_pinned_copies_stay_until_released(s3, tmp_path):
    cache = FileCache(tmp_path / "cache", 1500)
    first, sha = _store("derivatives/dd/first.png", b"a" * 1000)
    pinned = cache.get(media_storage(), first, key=sha, suffix=".png", pin=True)
    second, sha2 = _store("derivatives/dd/second.png", b"b" * 1000)
    cache.get(media_storage(), second, key=sha2, suffix=".png")
    assert pinned.exists()  # over the bound while a training run holds its data set

    cache.release()
    assert cache.trim() == 1 and not pinned.exists()


def test_missing_derivatives_are_reported_not_raised(s3, settings, tmp_path):
    name, sha = _store("derivatives/ee/present.png", b"present")
    found = local_derivatives(media_storage(), [(name, sha), ("derivatives/ee/absent.png", "f" * 64)])
    assert found["derivatives/ee/absent.png"] is None
    assert found[name].read_bytes() == b"present"
    assert found[name].is_relative_to(settings.SEM_WORKER_CACHE_DIR)


def test_the_file_system_backend_hands_out_the_file_itself(settings, tmp_path):
    storage = media_storage()
    name = storage.save("derivatives/ff/local.png", ContentFile(b"local"))
    path = local_copy(storage, name, key="f" * 64, suffix=".png")
    assert path == tmp_path / "media" / name  # no copy: `make run` reads its media folder as before
    assert not settings.SEM_WORKER_CACHE_DIR.exists() or local_files(settings.SEM_WORKER_CACHE_DIR) == []
