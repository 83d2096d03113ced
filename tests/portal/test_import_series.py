"""import_folder with series: one Sample per series (manifest or category/SAMPLE/file), so the split is by sample."""

from __future__ import annotations

import csv
import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from classifier.series import read_manifest, source_group
from classifier.synthetic import make_image
from portal.models import Project, Sample, SEMImage
from portal.services.ingestion.folder_import import series_lab_id

pytestmark = pytest.mark.django_db

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


def run(*args):
    out = StringIO()
    call_command("import_folder", *args, "--no-progress", stdout=out)
    return out.getvalue()


def save(root: Path, relative: str, category: str, index: int) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    make_image(category, index, size=(160, 120)).save(path)


def series_tree(root: Path) -> Path:
    """Two series of powder (one also imaged as nanowires) and one of nanowires."""
    save(root, "Powder/S-A/a0.png", "Powder", 0)
    save(root, "Powder/S-A/tiles/a1.png", "Powder", 1)
    save(root, "Powder/S-B/b0.png", "Powder", 2)
    save(root, "Nanowires/S-A/a2.png", "Nanowires", 0)
    save(root, "Nanowires/S-C/c0.png", "Nanowires", 1)
    return root


def samples_of_images() -> dict[str, str]:
    return {image.original_filename: image.sample.lab_sample_id for image in SEMImage.objects.select_related("sample")}


def assert_whole_samples_on_one_side() -> None:
    for sample in Sample.objects.all():
        assert sample.split in ("train", "test"), "a series is a physical sample, not a collection"
        assert set(sample.images.values_list("split", flat=True)) <= {sample.split}


def test_category_sample_file_layout_makes_one_sample_per_series(tmp_path, user):
    root = series_tree(tmp_path / "tree")
    output = run(str(root), "--project", "Series", "--user", user.username)

    assert "Stored: 5" in output and "Samples (series) stored into: 3" in output
    assert samples_of_images() == {"a0.png": "S-A", "a1.png": "S-A", "b0.png": "S-B", "a2.png": "S-A", "c0.png": "S-C"}
    project = Project.objects.get(name="Series")
    assert set(project.samples.values_list("lab_sample_id", flat=True)) == {"S-A", "S-B", "S-C"}
    assert_whole_samples_on_one_side()
    # Resumable: a second run finds the samples and the files.
    assert "Stored: 0" in run(str(root), "--project", "Series", "--user", user.username)
    assert Sample.objects.count() == 3


def test_files_outside_a_sample_folder_stop_the_layout_import(tmp_path, user):
    root = series_tree(tmp_path / "tree")
    save(root, "Powder/loose.png", "Powder", 5)
    with pytest.raises(CommandError, match="1 file.*Powder/loose.png"):
        run(str(root), "--project", "Series", "--user", user.username)
    assert SEMImage.objects.count() == 0 and Sample.objects.count() == 0


def test_series_need_a_project(tmp_path, user):
    with pytest.raises(CommandError, match="--project"):
        run(str(series_tree(tmp_path / "tree")), "--user", user.username)


def test_manifest_file_sample_columns(tmp_path, user):
    root = tmp_path / "tree"
    save(root, "Powder/p0.png", "Powder", 0)
    save(root, "Powder/p1.png", "Powder", 1)
    save(root, "Nanowires/n0.png", "Nanowires", 0)
    manifest = tmp_path / "series.csv"
    manifest.write_text("file,sample\nPowder/p0.png,RUN-7\nPowder/p1.png,RUN-8\nNanowires/n0.png,RUN-7\nold/x.png,X\n")

    run(str(root), "--manifest", str(manifest), "--project", "Manifested", "--user", user.username)

    assert samples_of_images() == {"p0.png": "RUN-7", "p1.png": "RUN-8", "n0.png": "RUN-7"}
    assert set(Sample.objects.values_list("lab_sample_id", flat=True)) == {"RUN-7", "RUN-8"}
    assert_whole_samples_on_one_side()


def test_a_file_missing_from_the_manifest_stops_the_import(tmp_path, user):
    root = tmp_path / "tree"
    save(root, "Powder/p0.png", "Powder", 0)
    save(root, "Powder/p1.png", "Powder", 1)
    manifest = tmp_path / "series.csv"
    manifest.write_text("file,sample\nPowder/p0.png,RUN-7\n")
    with pytest.raises(CommandError, match="not in the manifest.*Powder/p1.png"):
        run(str(root), "--manifest", str(manifest), "--project", "Manifested", "--user", user.username)
    assert SEMImage.objects.count() == 0


def test_a_series_of_another_project_is_refused(tmp_path, user, sample):
    root = tmp_path / "tree"
    save(root, f"Powder/{sample.lab_sample_id}/p0.png", "Powder", 0)
    with pytest.raises(CommandError, match="another project"):
        run(str(root), "--project", "Elsewhere", "--user", user.username)


def test_one_sample_option_keeps_subfolders_in_that_sample(tmp_path, user):
    """The loop check's `--sample X --project P --create-sample` still puts the whole tree in one collection."""
    root = series_tree(tmp_path / "tree")
    run(str(root), "--sample", "LOOP-TRAIN", "--project", "Loop", "--create-sample", "--user", user.username)
    assert set(samples_of_images().values()) == {"LOOP-TRAIN"}
    assert Sample.objects.get().split == ""


def test_sem_real_grouping_and_long_series_ids():
    assert source_group("ARIM-Academy/T", "mp_pfibre_3.png", "x") == "ARIM-Academy/T#polyester"
    assert source_group("baiyubaiyu/N", "a.tif", "data/2wt%un/a.tif") == "baiyubaiyu/N#2wt%un"
    long = "baiyubaiyu/" + "n" * 120 + "#2wt%un"
    assert len(series_lab_id(long)) == 100 and series_lab_id(long) != series_lab_id(long[:-1] + "x")


@pytest.mark.skipif(not (SHARED / "sem-real" / "manifest.csv").is_file(), reason="../shared/sem-real is absent")
def test_sem_real_manifest_gives_one_sample_per_source(tmp_path, user):
    real = SHARED / "sem-real"
    rows = list(csv.DictReader(open(real / "manifest.csv", newline="")))
    picked = {}
    for row in rows:  # two images of each of three sources, a small tree
        if row["category"] in ("Biological", "Fibres", "Powder") and len(picked.get(row["repo"], [])) < 2:
            picked.setdefault(row["repo"], []).append(row["file"])
    picked = dict(list(picked.items())[:3])
    root = tmp_path / "tree"
    for files in picked.values():
        for file in files:
            (root / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(real / file, root / file)

    run(str(root), "--manifest", str(real / "manifest.csv"), "--project", "Real", "--user", user.username)

    assert len(read_manifest(real / "manifest.csv")) == len(rows)
    assert set(Sample.objects.values_list("lab_sample_id", flat=True)) == set(picked)
    by_file = {Path(f).name: repo for repo, files in picked.items() for f in files}
    assert samples_of_images() == {name: by_file[name] for name in samples_of_images()}
    assert_whole_samples_on_one_side()
