"""A web process killed after it wrote an upload's files but before the row committed.

Nothing can clean up in the killed process: the retry of the same bytes reuses the content-addressed
names (no `_AbCdEfG` duplicate), and the sweeper removes what no row points to once the grace period
has passed. Spooled request bodies of killed uploads go to a known folder that the sweeper cleans.
A real process is killed with SIGKILL.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from portal.models import SEMImage
from portal.services.ingestion import ingest
from portal.services.ingestion.ingest_recovery import INGESTING_DIR
from tests.faults.conftest import media_files, stored_names, tiff_bytes
from tests.worker_fixtures import REPO_ROOT, database_url

pytestmark = pytest.mark.django_db(transaction=True)  # the killed process must see the sample

KILLED_UPLOAD = """
import io, os, signal, sys
import django
django.setup()
from django.contrib.auth import get_user_model
from portal.models import Sample
from portal.services.ingestion import ingest, ingest_store

def save_then_die(upload):
    ingest_store.save_content_addressed_files(upload)
    os.kill(os.getpid(), signal.SIGKILL)  # the files have their final names; the row never commits

ingest_store.STORE_STEPS = tuple(
    save_then_die if step is ingest_store.save_content_addressed_files else step for step in ingest_store.STORE_STEPS
)
data = open(sys.argv[1], "rb").read()
ingest.ingest_file(io.BytesIO(data), filename="killed.tif", sample=Sample.objects.get(pk=int(sys.argv[2])),
                   uploaded_by=get_user_model().objects.get(pk=int(sys.argv[3])))
"""


def _upload_killed_before_commit(data: bytes, sample, user, tmp_path) -> None:
    body = tmp_path / "body.tif"
    body.write_bytes(data)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DATABASE_URL": database_url(),
        "MEDIA_ROOT": str(django_settings.MEDIA_ROOT),
        "SECRET_KEY": "test-only-secret-key",
    }
    process = subprocess.run(
        [sys.executable, "-c", KILLED_UPLOAD, str(body), str(sample.pk), str(user.pk)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr.decode(errors="replace")[-3000:]


def _content_files(media_root) -> set[str]:
    return {name for name in media_files(media_root) if not name.startswith(INGESTING_DIR)}


def _markers(media_root) -> set[str]:
    return media_files(media_root) - _content_files(media_root)


def _age(media_root, seconds: float) -> None:
    past = time.time() - seconds
    for name in media_files(media_root):
        os.utime(Path(media_root) / name, (past, past))


def test_the_retry_after_a_killed_upload_reuses_the_content_addressed_names(sample, user, settings, tmp_path):
    data = tiff_bytes(40)
    sha = hashlib.sha256(data).hexdigest()
    _upload_killed_before_commit(data, sample, user, tmp_path)
    left = _content_files(settings.MEDIA_ROOT)
    assert f"originals/{sha[:2]}/{sha}.tif" in left and len(left) == 3  # original, derivative, thumbnail
    assert not SEMImage.objects.exists()

    result = ingest.ingest_file(io.BytesIO(data), filename="killed.tif", sample=sample, uploaded_by=user)

    assert result.created
    image = result.image
    assert image.original.name == f"originals/{sha[:2]}/{sha}.tif"  # not originals/…/<sha>_9uffRbN.tif
    assert stored_names([image]) == left  # the same three files, no second copy
    assert image.original.read() == data

    # The killed process's marker: once its grace period has passed, the sweeper sees the row and
    # keeps its files.
    assert len(_markers(settings.MEDIA_ROOT)) == 1
    _age(settings.MEDIA_ROOT, 7200)
    from workers.tasks import sweep

    assert sweep()["orphan_files_removed"] == 0
    assert media_files(settings.MEDIA_ROOT) == stored_names([image])


def test_the_sweeper_removes_the_files_of_a_killed_upload_after_the_grace_period(sample, user, settings, tmp_path):
    from workers.tasks import sweep

    _upload_killed_before_commit(tiff_bytes(41), sample, user, tmp_path)
    assert len(_content_files(settings.MEDIA_ROOT)) == 3

    assert sweep()["orphan_files_removed"] == 0  # within the grace period: may still be committing
    assert len(_content_files(settings.MEDIA_ROOT)) == 3

    _age(settings.MEDIA_ROOT, 7200)
    assert sweep()["orphan_files_removed"] == 3
    assert media_files(settings.MEDIA_ROOT) == set()  # files and marker


def test_a_suffixed_duplicate_of_an_older_kill_is_reconciled_too(sample, user, settings, tmp_path):
    """Files that an earlier version stored a second time under a suffix: the sweeper removes the
    copies that no row points to once a marker of those bytes expires."""
    from workers.tasks import sweep

    data = tiff_bytes(42)
    image = ingest.ingest_file(io.BytesIO(data), filename="a.tif", sample=sample, uploaded_by=user).image
    duplicate = Path(image.original.path).with_name(f"{image.sha256}_9uffRbN.tif")
    duplicate.write_bytes(data)
    marker = Path(settings.MEDIA_ROOT) / INGESTING_DIR / f"{image.sha256}.1.dead"
    marker.write_bytes(b"")
    _age(settings.MEDIA_ROOT, 7200)

    assert sweep()["orphan_files_removed"] == 1
    assert media_files(settings.MEDIA_ROOT) == stored_names([image])


def test_upload_bodies_spool_to_a_known_folder_that_the_sweeper_cleans(settings, tmp_path):
    from django.core.files.uploadedfile import TemporaryUploadedFile

    from workers.tasks import sweep

    assert (
        Path(django_settings.FILE_UPLOAD_TEMP_DIR).is_relative_to(Path(django_settings.BASE_DIR) / "var")
        or "SEM_UPLOAD_TEMP_DIR" in os.environ
        or "SEM_VAR_DIR" in os.environ
    )
    spool = tmp_path / "spool"
    spool.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(spool)
    with TemporaryUploadedFile("big.tif", "image/tiff", 0, None) as body:  # what Django writes a large body to
        assert Path(body.temporary_file_path()).parent == spool
    abandoned, in_progress = spool / "tmpabandoned.upload.tif", spool / "tmpin-progress.upload.tif"
    abandoned.write_bytes(b"half a request body")
    in_progress.write_bytes(b"being received")
    two_hours_ago = time.time() - 7200
    os.utime(abandoned, (two_hours_ago, two_hours_ago))

    assert sweep()["spool_files_removed"] == 1
    assert not abandoned.exists() and in_progress.exists()
