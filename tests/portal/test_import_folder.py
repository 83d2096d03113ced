"""manage.py import_folder on a small folder-per-category tree."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from classifier.synthetic import make_image
from portal.models import Label, Project, Sample, SEMImage
from tests.portal.sem_builders import pillow_bytes

pytestmark = pytest.mark.django_db


def build_tree(root):
    """Powder (folder name), 'nanowires' (slug, lower case), 'Porous sponge' (name, with a space)."""
    (root / "Powder").mkdir(parents=True)
    (root / "nanowires" / "batch2").mkdir(parents=True)
    (root / "Porous sponge").mkdir()
    for index in range(3):
        make_image("Powder", index, size=(160, 120)).save(root / "Powder" / f"p{index}.png")
    make_image("Nanowires", 0, size=(160, 120)).save(root / "nanowires" / "n0.tif")
    make_image("Nanowires", 1, size=(160, 120)).save(root / "nanowires" / "batch2" / "n1.jpg", quality=92)
    make_image("Porous_Sponge", 0, size=(160, 120)).save(root / "Porous sponge" / "s0.bmp")
    # Same bytes in two folders: stored once, the second is a duplicate.
    (root / "Porous sponge" / "copy_of_p0.png").write_bytes((root / "Powder" / "p0.png").read_bytes())
    (root / "Powder" / "notes.png").write_text("<html>not really</html>")
    (root / "Powder" / "cut.png").write_bytes(pillow_bytes(make_image("Powder", 9, size=(160, 120)), "PNG")[:900])
    (root / "Powder" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")  # hidden: ignored
    return root


def run(*args):
    out = StringIO()
    call_command("import_folder", *args, "--no-progress", stdout=out)
    return out.getvalue()


def test_import_summary_labels_and_resume(tmp_path, sample, user):
    root = build_tree(tmp_path / "tree")
    output = run(str(root), "--sample", sample.lab_sample_id)

    assert "Stored: 6" in output and "duplicate (already stored): 1" in output and "rejected: 2" in output
    assert "Powder/notes.png: [disguised]" in output
    assert "Powder/cut.png: [truncated]" in output
    assert SEMImage.objects.count() == 6
    labels = {
        label.image.original_filename: (label.category.folder_name, label.source)
        for label in Label.objects.select_related("image", "category")
    }
    assert labels["p1.png"] == ("Powder", Label.Source.IMPORT)
    assert labels["n1.jpg"] == ("Nanowires", Label.Source.IMPORT)
    assert labels["s0.bmp"] == ("Porous_Sponge", Label.Source.IMPORT)
    assert all(image.uploaded_by == user and image.sample == sample for image in SEMImage.objects.all())

    # Second run: everything known is skipped, the broken files are reported again.
    again = run(str(root), "--sample", sample.lab_sample_id)
    assert "Stored: 0" in again and "duplicate (already stored): 7" in again and "rejected: 2" in again
    assert SEMImage.objects.count() == 6 and Label.objects.count() == 6


def test_resume_skips_known_files_before_decoding(tmp_path, sample, monkeypatch):
    root = build_tree(tmp_path / "tree")
    run(str(root), "--sample", sample.lab_sample_id)

    def must_not_be_called(*args, **kwargs):
        raise AssertionError("known files must be skipped before ingestion")

    monkeypatch.setattr("portal.services.ingestion.folder_import.ingest_file", must_not_be_called)
    (root / "Powder" / "notes.png").unlink()
    (root / "Powder" / "cut.png").unlink()
    assert "Stored: 0" in run(str(root), "--sample", sample.lab_sample_id)


def test_unknown_category_folders_stop_the_import(tmp_path, sample):
    root = build_tree(tmp_path / "tree")
    (root / "Unicorns").mkdir()
    (root / "misc").mkdir()
    with pytest.raises(CommandError) as caught:
        run(str(root), "--sample", sample.lab_sample_id)
    assert "Unicorns" in str(caught.value) and "misc" in str(caught.value)
    assert SEMImage.objects.count() == 0


def test_missing_folder_fails(tmp_path, sample):
    with pytest.raises(CommandError, match="not found"):
        run(str(tmp_path / "nope"), "--sample", sample.lab_sample_id)


def test_unknown_sample_needs_create_sample(tmp_path, sample):
    root = build_tree(tmp_path / "tree")
    with pytest.raises(CommandError, match="--create-sample"):
        run(str(root), "--sample", "NEW-1")


def test_create_sample_and_project(tmp_path, user):
    root = build_tree(tmp_path / "tree")
    output = run(str(root), "--sample", "NEW-1", "--project", "Imported", "--create-sample", "--user", user.username)
    sample = Sample.objects.get(lab_sample_id="NEW-1")
    assert sample.project == Project.objects.get(name="Imported") and sample.owner == user
    assert "Stored: 6" in output
    assert sample.project.memberships.filter(user=user).exists()


def test_exit_status_of_the_real_command(tmp_path, sample):
    """Run through manage.py as a user would: non-zero exit and the reason on stderr."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from django.conf import settings

    db = settings.DATABASES["default"]
    env = dict(os.environ)
    if db["ENGINE"].endswith("postgresql"):
        env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    else:
        pytest.skip("the command runs in another process; the test database is PostgreSQL-only here")
    repo = Path(__file__).resolve().parents[2]
    completed = subprocess.run(
        [sys.executable, "manage.py", "import_folder", str(tmp_path / "missing"), "--sample", "S-0001"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode != 0
    assert "Folder not found" in completed.stderr


def test_strict_fails_when_files_were_refused_but_keeps_the_good_ones(tmp_path, sample):
    root = build_tree(tmp_path / "tree")
    with pytest.raises(CommandError, match="2 files were refused") as raised:
        run(str(root), "--sample", sample.lab_sample_id, "--strict")
    assert raised.value.returncode == 1
    assert SEMImage.objects.count() == 6  # what could be stored was stored

    clean = tmp_path / "clean"
    (clean / "Powder").mkdir(parents=True)
    make_image("Powder", 42, size=(160, 120)).save(clean / "Powder" / "ok.png")
    assert "Stored: 1" in run(str(clean), "--sample", sample.lab_sample_id, "--strict")
