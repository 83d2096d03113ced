"""Watch folders (issue 16): real files on disk, written slowly by another process, renamed into place,
truncated, replaced and deleted mid-scan; two scanners at once; sidecar metadata; the command, the beat task
and the Inbox page."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from portal.models import Sample, SEMImage, WatchedFile, WatchFolder
from portal.services.ingestion import watch, watch_schedule
from tests.portal.sem_builders import (
    HITACHI_TXT,
    JEOL_TXT,
    grey_pattern,
    pillow_bytes,
    tiff_bytes,
)

Status = WatchedFile.Status


class Clock:
    """Scans at chosen times, so settling is tested without sleeping."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def png(seed: int) -> bytes:
    from PIL import Image

    return pillow_bytes(Image.fromarray(grey_pattern(96, 128, seed=seed)), "PNG")


def tif(seed: int) -> bytes:
    return tiff_bytes(grey_pattern(96, 128, seed=seed))


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch):
    monkeypatch.setattr("portal.services.delivery.queueing.enqueue_classification", lambda ids: None)


@pytest.fixture
def share(tmp_path) -> Path:
    root = tmp_path / "share"
    root.mkdir()
    return root


@pytest.fixture
def folder(db, share, project, user) -> WatchFolder:
    return WatchFolder.objects.create(
        path=str(share), project=project, uploader=user, settle_s=5, create_missing_samples=True
    )


def settle_and_scan(folder: WatchFolder, clock: Clock) -> watch.ScanReport:
    watch.scan_folder(folder, clock=clock)
    clock.advance(folder.settle_s + 1)
    return watch.scan_folder(folder, clock=clock)


# ---------------------------------------------------------------------------------------------
# Settling, skipping, idempotency
# ---------------------------------------------------------------------------------------------


def test_subfolder_rule_settles_then_stores_once_and_leaves_the_share_untouched(folder, share, project):
    write(share / "LAB-1" / "a.png", png(1))
    write(share / "LAB-1" / "b.tif", tif(2))
    write(share / "LAB-2" / "c.png", png(3))
    before = snapshot(share)
    clock = Clock()

    first = watch.scan_folder(folder, clock=clock)
    assert (first.new, first.stored, first.settling) == (3, [], 3)  # seen once: not yet settled
    clock.advance(2)
    assert watch.scan_folder(folder, clock=clock).stored == []  # unchanged, but not for settle_s yet
    clock.advance(4)
    second = watch.scan_folder(folder, clock=clock)
    assert sorted(second.stored) == ["LAB-1/a.png", "LAB-1/b.tif", "LAB-2/c.png"]

    assert SEMImage.objects.count() == 3
    assert set(Sample.objects.filter(project=project).values_list("lab_sample_id", flat=True)) >= {"LAB-1", "LAB-2"}
    assert SEMImage.objects.get(original_filename="c.png").sample.lab_sample_id == "LAB-2"
    clock.advance(60)
    again = watch.scan_folder(folder, clock=clock)
    assert (again.stored, again.duplicates, again.refused, again.settling) == ([], [], [], 0)
    assert SEMImage.objects.count() == 3
    assert snapshot(share) == before  # nothing written, moved or touched on the share
    folder.refresh_from_db()
    assert folder.last_scan_files == 3 and folder.last_scan_at is not None


def test_temporary_hidden_and_non_image_files_are_ignored(folder, share):
    for name in ("~$a.tif", ".hidden.png", "b.tif.tmp", "c.png.part", "d.TMP", "notes.txt", "Thumbs.db"):
        write(share / "LAB-1" / name, png(1))
    write(share / ".sync" / "LAB-1" / "e.png", png(2))
    write(share / "processed" / "LAB-1" / "f.png", png(3))
    (share / "LAB-1").joinpath(os.fsdecode(b"latin1-\xe9.png")).write_bytes(png(1))  # not UTF-8: skipped
    report = settle_and_scan(folder, Clock())
    assert report.files == 0
    assert not WatchedFile.objects.exists() and not SEMImage.objects.exists()


def test_same_bytes_under_two_names_are_one_image(folder, share):
    data = png(4)
    write(share / "LAB-1" / "a.png", data)
    write(share / "LAB-1" / "copy of a.png", data)
    report = settle_and_scan(folder, Clock())
    assert len(report.stored) == 1 and len(report.duplicates) == 1
    assert SEMImage.objects.count() == 1
    duplicate = WatchedFile.objects.get(status=Status.DUPLICATE)
    assert duplicate.image == SEMImage.objects.get() and "Same bytes" in duplicate.reason


def test_a_restarted_scanner_finds_the_rows_and_ingests_nothing_twice(folder, share):
    write(share / "LAB-1" / "a.png", png(5))
    clock = Clock()
    settle_and_scan(folder, clock)
    # A new process: nothing in memory, only the rows.
    fresh = WatchFolder.objects.get(pk=folder.pk)
    clock.advance(100)
    report = watch.scan_folder(fresh, clock=clock, scanner_id="another-process")
    assert (report.stored, report.duplicates) == ([], [])
    assert SEMImage.objects.count() == 1


def test_a_claim_left_by_a_dead_scanner_is_released_and_the_file_ingested(folder, share):
    write(share / "LAB-1" / "a.png", png(6))
    clock = Clock()
    watch.scan_folder(folder, clock=clock)
    # A scanner claimed the file and died before it finished.
    from datetime import timedelta

    from django.utils import timezone

    WatchedFile.objects.update(
        status=Status.INGESTING,
        claimed_by="dead",
        claimed_at=timezone.now() - timedelta(seconds=watch.CLAIM_TIMEOUT_S + 1),
    )
    clock.advance(10)
    watch.scan_folder(folder, clock=clock)  # releases the claim
    clock.advance(10)
    assert watch.scan_folder(folder, clock=clock).stored == ["LAB-1/a.png"]


# ---------------------------------------------------------------------------------------------
# Refusals: reported once; a rewritten file is judged again
# ---------------------------------------------------------------------------------------------


def test_a_truncated_file_is_refused_once_then_stored_when_completed(folder, share):
    data = tif(7)
    path = write(share / "LAB-1" / "a.tif", data[: len(data) // 2])
    clock = Clock()
    report = settle_and_scan(folder, clock)
    assert [relpath for relpath, _ in report.refused] == ["LAB-1/a.tif"]
    row = WatchedFile.objects.get()
    assert row.status == Status.REFUSED and row.reason and row.code
    for _ in range(3):  # later polls do not report it again
        clock.advance(30)
        assert watch.scan_folder(folder, clock=clock).refused == []
    assert WatchedFile.objects.get().finished_at == row.finished_at

    path.write_bytes(data)  # the instrument finishes (or the user copies it again)
    clock.advance(1)
    assert settle_and_scan(folder, clock).stored == ["LAB-1/a.tif"]
    assert WatchedFile.objects.get().status == Status.STORED


def test_files_without_a_sample_are_refused_with_the_reason(db, share, project, user):
    folder = WatchFolder.objects.create(path=str(share), project=project, uploader=user, settle_s=0)
    write(share / "loose.png", png(8))
    write(share / "UNKNOWN-9" / "a.png", png(9))
    report = settle_and_scan(folder, Clock())
    reasons = dict(report.refused)
    assert "sample folder" in reasons["loose.png"]
    assert "No sample 'UNKNOWN-9'" in reasons["UNKNOWN-9/a.png"]
    assert not SEMImage.objects.exists()


def test_pattern_rule_and_fixed_rule(db, share, project, user, sample):
    pattern = WatchFolder.objects.create(
        path=str(share / "p"),
        project=project,
        uploader=user,
        settle_s=0,
        sample_rule="pattern",
        filename_pattern=r"^(?P<sample>S-\d{4})_",
    )
    write(share / "p" / "S-0001_001.png", png(10))
    write(share / "p" / "other.png", png(11))
    report = settle_and_scan(pattern, Clock())
    assert report.stored == ["S-0001_001.png"] and [r for r, _ in report.refused] == ["other.png"]
    assert SEMImage.objects.get(original_filename="S-0001_001.png").sample == sample

    fixed = WatchFolder.objects.create(
        path=str(share / "f"), project=project, uploader=user, settle_s=0, sample_rule="fixed", fixed_sample=sample
    )
    write(share / "f" / "deep" / "x.png", png(12))
    assert settle_and_scan(fixed, Clock()).stored == ["deep/x.png"]
    assert SEMImage.objects.get(original_filename="x.png").sample == sample


def test_watch_folder_validation(db, project, share):
    from django.core.exceptions import ValidationError

    folder = WatchFolder(path=str(share), project=project, sample_rule="pattern", filename_pattern=r"^(\d+)_")
    with pytest.raises(ValidationError, match="sample"):
        folder.full_clean()
    folder = WatchFolder(path="relative/path", project=project)
    with pytest.raises(ValidationError, match="absolute"):
        folder.full_clean()


# ---------------------------------------------------------------------------------------------
# Files that change: replaced, renamed into place, deleted mid-scan
# ---------------------------------------------------------------------------------------------


def test_a_replaced_file_is_a_new_version(folder, share):
    path = write(share / "LAB-1" / "a.png", png(13))
    clock = Clock()
    settle_and_scan(folder, clock)
    replacement = share / "LAB-1" / ".a.png.new"
    replacement.write_bytes(png(14))
    os.replace(replacement, path)  # replaced atomically, as a copy tool does
    clock.advance(1)
    report = settle_and_scan(folder, clock)
    assert report.stored == ["LAB-1/a.png"]
    assert SEMImage.objects.count() == 2
    row = WatchedFile.objects.get()
    assert row.image.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_file_deleted_before_it_is_read_leaves_no_trace(folder, share, monkeypatch):
    write(share / "LAB-1" / "a.png", png(15))
    doomed = write(share / "LAB-1" / "b.png", png(16))
    clock = Clock()
    watch.scan_folder(folder, clock=clock)
    real_resolve = watch.resolve_sample

    def delete_then_resolve(context, relpath):  # the user deletes it mid-scan, after the walk
        if relpath.endswith("b.png") and doomed.exists():
            doomed.unlink()
        return real_resolve(context, relpath)

    monkeypatch.setattr(watch, "resolve_sample", delete_then_resolve)
    clock.advance(10)
    report = watch.scan_folder(folder, clock=clock)
    assert report.stored == ["LAB-1/a.png"] and report.refused == [] and report.vanished == 1
    assert list(WatchedFile.objects.values_list("relpath", flat=True)) == ["LAB-1/a.png"]


def test_a_settling_file_deleted_between_scans_loses_its_row(folder, share):
    path = write(share / "LAB-1" / "a.png", png(17))
    clock = Clock()
    watch.scan_folder(folder, clock=clock)
    path.unlink()
    clock.advance(10)
    assert watch.scan_folder(folder, clock=clock).vanished == 1
    assert not WatchedFile.objects.exists()


def test_a_file_that_changes_while_it_is_read_settles_again(folder, share, monkeypatch):
    data = png(18)
    path = write(share / "LAB-1" / "a.png", data)
    clock = Clock()
    watch.scan_folder(folder, clock=clock)
    original_init = watch._CheckedReader.__init__

    def init_then_grow(self, handle, size, mtime_ns):
        original_init(self, handle, size, mtime_ns)
        with open(path, "ab") as more:  # the instrument writes again right after the scan saw it settled
            more.write(b"\0" * 10)

    monkeypatch.setattr(watch._CheckedReader, "__init__", init_then_grow)
    clock.advance(10)
    report = watch.scan_folder(folder, clock=clock)
    assert report.stored == [] and report.refused == []
    assert WatchedFile.objects.get().status == Status.SEEN
    assert not SEMImage.objects.exists()


WRITER = r"""
import os, sys, time
target, data_path, chunks, pause, rename = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
data = open(data_path, "rb").read()
step = len(data) // chunks + 1
out = target + ".tmp" if rename == "1" else target
with open(out, "wb") as handle:
    for start in range(0, len(data), step):
        handle.write(data[start:start + step]); handle.flush(); os.fsync(handle.fileno())
        time.sleep(pause)
if rename == "1":
    os.rename(out, target)
"""


def _write_slowly(tmp_path: Path, target: Path, data: bytes, *, chunks: int, pause: float, rename: bool):
    source = tmp_path / f"source-{target.name}"
    source.write_bytes(data)
    target.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target), str(source), str(chunks), str(pause), "1" if rename else "0"]
    )


@pytest.mark.parametrize("rename", [False, True], ids=["written-in-place", "renamed-into-place"])
def test_a_file_written_slowly_by_another_process_is_stored_once_and_whole(folder, share, tmp_path, rename):
    folder.settle_s = 1
    folder.save()
    data = tif(19) + b""  # a TIFF whose first chunks alone do not decode
    target = share / "LAB-1" / "slow.tif"
    writer = _write_slowly(tmp_path, target, data, chunks=6, pause=0.25, rename=rename)
    outcomes = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        report = watch.scan_folder(folder)
        outcomes += report.stored + [relpath for relpath, _ in report.refused]
        assert report.refused == []  # never judged while incomplete
        if report.stored:
            break
        time.sleep(0.1)
    writer.wait(10)
    assert outcomes == ["LAB-1/slow.tif"]
    image = SEMImage.objects.get()
    assert image.sha256 == hashlib.sha256(data).hexdigest() and image.file_size == len(data)
    assert WatchedFile.objects.get().relpath == "LAB-1/slow.tif"  # the .tmp name was never recorded


# ---------------------------------------------------------------------------------------------
# Two scanners at once
# ---------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_scanners_at_once_ingest_every_file_exactly_once(share, project, user):
    folder = WatchFolder.objects.create(
        path=str(share), project=project, uploader=user, settle_s=0, create_missing_samples=True
    )
    expected = {f"LAB-{i % 2}/img{i}.png": png(100 + i) for i in range(6)}
    for relpath, data in expected.items():
        write(share / relpath, data)
    watch.scan_folder(folder, clock=Clock())  # both scanners find the rows settled
    start = threading.Barrier(2, timeout=30)
    reports, errors = [], []

    def scanner(name):
        try:
            start.wait()
            reports.append(
                watch.scan_folder(WatchFolder.objects.get(pk=folder.pk), clock=Clock(2_000_000), scanner_id=name)
            )
        except Exception as error:  # noqa: BLE001 - asserted below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=scanner, args=(name,)) for name in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    stored = [relpath for report in reports for relpath in report.stored]
    assert sorted(stored) == sorted(expected)  # each file once, by one scanner or the other
    assert [r for report in reports for r in report.duplicates] == []
    assert SEMImage.objects.count() == len(expected)
    assert set(WatchedFile.objects.values_list("status", flat=True)) == {Status.STORED}
    assert Sample.objects.filter(lab_sample_id__in=["LAB-0", "LAB-1"]).count() == 2


# ---------------------------------------------------------------------------------------------
# Sidecars, processed/
# ---------------------------------------------------------------------------------------------


def test_jeol_and_hitachi_sidecars_are_attached(folder, share):
    write(share / "LAB-1" / "jeol.tif", tif(20))
    write(share / "LAB-1" / "jeol.txt", JEOL_TXT.encode())
    write(share / "LAB-1" / "hitachi.tif", tif(21))
    write(share / "LAB-1" / "hitachi.TXT", HITACHI_TXT.encode("latin-1"))
    write(share / "LAB-1" / "plain.png", png(22))
    settle_and_scan(folder, Clock())
    jeol = SEMImage.objects.get(original_filename="jeol.tif")
    assert (jeol.vendor, jeol.instrument_model, jeol.magnification, jeol.accelerating_voltage_kv) == (
        "JEOL",
        "JSM-7600F",
        8000.0,
        15.0,
    )
    assert jeol.metadata["sidecar"] == "jeol.txt" and jeol.metadata["jeol"]["CM_MAG"] == "8000"
    hitachi = SEMImage.objects.get(original_filename="hitachi.tif")
    assert (hitachi.vendor, hitachi.instrument_model, hitachi.magnification) == ("Hitachi", "SU8230", 50000.0)
    assert hitachi.accelerating_voltage_kv == 3.0 and hitachi.working_distance_mm == pytest.approx(8.1)
    assert SEMImage.objects.get(original_filename="plain.png").vendor == ""


def test_move_to_processed_moves_stored_files_and_their_sidecars(folder, share):
    folder.move_to_processed = True
    folder.save()
    write(share / "LAB-1" / "a.tif", tif(23))
    write(share / "LAB-1" / "a.txt", JEOL_TXT.encode())
    write(share / "LAB-1" / "bad.png", b"\x89PNG\r\n\x1a\nnot really")
    clock = Clock()
    settle_and_scan(folder, clock)
    assert (share / "processed" / "LAB-1" / "a.tif").exists() and (share / "processed" / "LAB-1" / "a.txt").exists()
    assert not (share / "LAB-1" / "a.tif").exists()
    assert (share / "LAB-1" / "bad.png").exists()  # refused files stay where the lab can see them
    assert WatchedFile.objects.get(relpath="LAB-1/a.tif").moved_to == "processed/LAB-1/a.tif"
    clock.advance(60)
    report = watch.scan_folder(folder, clock=clock)  # processed/ is not scanned
    assert (report.files, report.stored) == (1, [])


# ---------------------------------------------------------------------------------------------
# Command, beat task, schedule, Inbox
# ---------------------------------------------------------------------------------------------


def test_watch_folder_command_once(db, share, user, tmp_path):
    user.is_superuser = True
    user.save()
    write(share / "LAB-7" / "a.png", png(24))
    write(share / "LAB-7" / "broken.tif", b"II*\x00garbage")
    out = io.StringIO()
    with pytest.raises(Exception) as refused:
        call_command(
            "watch_folder",
            str(share),
            "--project",
            "Night shift",
            "--create-samples",
            "--settle",
            "0",
            "--once",
            stdout=out,
        )
    assert "1 files were refused" in str(refused.value)
    assert "1 stored" in out.getvalue() and "broken.tif" in out.getvalue()
    folder = WatchFolder.objects.get(path=str(share))
    assert folder.project.name == "Night shift" and folder.sample_rule == "subfolder"
    assert SEMImage.objects.get().sample.lab_sample_id == "LAB-7"
    call_command("watch_folder", str(share), "--once", stdout=io.StringIO())  # nothing new: exits 0
    assert SEMImage.objects.count() == 1


def test_beat_schedule_is_off_until_a_folder_is_enabled_and_scans_due_folders(db, share, project, user):
    from django_celery_beat.models import PeriodicTask

    assert not PeriodicTask.objects.filter(name=watch_schedule.SCAN_TASK_NAME).exists()
    folder = WatchFolder.objects.create(
        path=str(share), project=project, uploader=user, settle_s=0, create_missing_samples=True, poll_interval_s=3600
    )
    task = PeriodicTask.objects.get(name=watch_schedule.SCAN_TASK_NAME)
    assert task.enabled and task.task == "workers.scan_watch_folders"
    write(share / "LAB-1" / "a.png", png(25))
    assert list(watch_schedule.scan_due_folders()) == [str(share)]
    assert watch_schedule.scan_due_folders() == {}  # not due again before its poll interval
    WatchFolder.objects.filter(pk=folder.pk).update(last_scan_at=None)
    from workers.tasks import scan_watch_folders

    assert "1 stored" in scan_watch_folders.apply().get()[str(share)]  # the beat task itself
    folder.enabled = False
    folder.save()
    assert not PeriodicTask.objects.get(name=watch_schedule.SCAN_TASK_NAME).enabled


def test_inbox_page_for_curators_with_counts_reasons_and_pause(client, django_user_model, folder, share, user):
    write(share / "LAB-1" / "a.png", png(26))
    write(share / "LAB-1" / "b.png", b"\x89PNG\r\n\x1a\nhalf")
    settle_and_scan(folder, Clock())
    client.force_login(user)  # a curator of the folder's project
    page = client.get(reverse("web:inbox"))
    assert page.status_code == 200
    text = page.content.decode()
    assert str(share) in text and "b.png" in text and "Pause" in text
    assert page.context["folders"][0]["stats"]["stored"] == 1
    assert page.context["folders"][0]["stats"]["refused"] == 1
    response = client.post(reverse("web:inbox_toggle", args=[folder.pk]))
    assert response.status_code == 302
    folder.refresh_from_db()
    assert not folder.enabled
    assert "Resume" in client.get(reverse("web:inbox")).content.decode()

    member = django_user_model.objects.create_user("bob", "bob@example.org", "pw-bob-12345")
    client.force_login(member)
    assert client.get(reverse("web:inbox")).status_code == 403
    assert client.post(reverse("web:inbox_toggle", args=[folder.pk])).status_code == 403


def test_admin_pages_of_watch_folders_render(client, django_user_model, folder, share):
    admin_user = django_user_model.objects.create_superuser("root", "root@example.org", "pw-root-12345")
    write(share / "LAB-1" / "a.png", png(27))
    settle_and_scan(folder, Clock())
    client.force_login(admin_user)
    for url in (
        reverse("admin:portal_watchfolder_changelist"),
        reverse("admin:portal_watchfolder_add"),
        reverse("admin:portal_watchfolder_change", args=[folder.pk]),
        reverse("admin:portal_watchedfile_changelist"),
    ):
        response = client.get(url)
        assert response.status_code == 200, url
    assert "1 / 0 / 0 / 0" in client.get(reverse("admin:portal_watchfolder_changelist")).content.decode()
    response = client.post(
        reverse("admin:portal_watchfolder_add"),
        {
            "path": "/mnt/elsewhere",
            "project": folder.project_id,
            "enabled": "on",
            "sample_rule": "pattern",
            "filename_pattern": r"^(\d+)_",
            "poll_interval_s": 60,
            "settle_s": 10,
        },
    )
    assert response.status_code == 200 and "group named sample" in response.content.decode()
