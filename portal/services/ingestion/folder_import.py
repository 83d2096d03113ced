"""Import a folder-per-category tree (the NFFA-EUROPE dataset layout) as curated labels.

Shared by `manage.py import_folder` and `manage.py make_demo_data --import`. Every file goes
through `ingest_file`, so imported images get exactly the validation, metadata, derivatives and
atomicity of web uploads. Resumable: a file whose sha256 is already stored is skipped after
hashing, before any decoding.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from classifier.fingerprint import file_sha256
from classifier.series import ManifestError, read_manifest
from portal.models import Category, Label, Project, Sample, SEMImage
from portal.services.ingestion.ingest import ingest_file
from portal.services.ingestion.ingest_errors import IngestError


class ImportProblem(Exception):
    """The tree cannot be imported as it is (missing folder, unknown category folders)."""


@dataclass
class Rejected:
    path: Path
    code: str
    message: str


@dataclass
class ImportSummary:
    stored: list[Path] = field(default_factory=list)
    duplicates: list[Path] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    per_category: dict[str, int] = field(default_factory=dict)
    per_sample: dict[str, int] = field(default_factory=dict)
    # (stored file, id of the earlier image it is a near-duplicate of, its group id)
    near_duplicates: list[tuple[Path, int, int]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.stored) + len(self.duplicates) + len(self.rejected)


def normalise_name(name: str) -> str:
    """'Films_Coated_Surface', 'films-coated-surface' and 'Films coated surface' compare equal."""
    return re.sub(r"[\s_\-]+", " ", name).strip().casefold()


def category_lookup() -> dict[str, Category]:
    """Folder name, name and slug of every category, normalised, to the category."""
    lookup: dict[str, Category] = {}
    for category in Category.objects.all():
        for key in (category.folder_name, category.name, category.slug):
            if key:
                lookup.setdefault(normalise_name(key), category)
    return lookup


def plan_import(root: Path) -> list[tuple[Path, Category]]:
    """Map every category folder under ``root`` to its Category; ImportProblem lists unknown ones."""
    if not root.is_dir():
        raise ImportProblem(f"Folder not found: {root}")
    lookup = category_lookup()
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [folder.name for folder in folders if normalise_name(folder.name) not in lookup]
    if unknown:
        known = ", ".join(sorted(c.folder_name for c in set(lookup.values())))
        raise ImportProblem(
            f"Unknown category folder(s) in {root}: {', '.join(unknown)}. Known categories: {known}. "
            "Rename or remove those folders (nothing was imported)."
        )
    if not folders:
        raise ImportProblem(f"No category folders in {root} (expected one folder per category).")
    return [(folder, lookup[normalise_name(folder.name)]) for folder in folders]


def list_files(folder: Path) -> list[Path]:
    """Every non-hidden file under a category folder, in a stable order."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def plan_files(root: Path) -> list[tuple[Path, Category]]:
    return [(path, category) for folder, category in plan_import(Path(root)) for path in list_files(folder)]


def series_from_folders(root: Path, files: list[Path]) -> dict[Path, str]:
    """The `category/SAMPLE/file` layout: the sub-folder under the category folder is the series."""
    loose = [path for path in files if len(path.relative_to(root).parts) < 3]
    if loose:
        shown = ", ".join(str(path.relative_to(root)) for path in loose[:5])
        raise ImportProblem(
            f"{len(loose)} file(s) lie directly in a category folder, not in a sample folder "
            f"(category/SAMPLE/file): {shown}{' ...' if len(loose) > 5 else ''}. Move them into a sample "
            "folder, or pass --sample LAB_ID (one sample for the whole tree) or --manifest FILE (nothing was imported)."
        )
    return {path: path.relative_to(root).parts[1] for path in files}


def series_from_manifest(root: Path, files: list[Path], manifest: Path) -> dict[Path, str]:
    """Each file's series from a manifest (classifier.series.read_manifest); every file must be listed."""
    try:
        listed = read_manifest(manifest)
    except (OSError, ManifestError) as error:
        raise ImportProblem(f"Cannot read the manifest: {error}") from error
    keys = {path: path.relative_to(root).as_posix() for path in files}
    missing = [key for key in keys.values() if key not in listed]
    if missing:
        shown = ", ".join(missing[:5])
        raise ImportProblem(
            f"{len(missing)} file(s) of {root} are not in the manifest {manifest}: {shown}"
            f"{' ...' if len(missing) > 5 else ''} (nothing was imported)."
        )
    return {path: listed[key] for path, key in keys.items()}


def series_lab_id(series: str) -> str:
    """A lab sample ID for a series ID (at most 100 characters; a longer one keeps its start and a hash)."""
    if len(series) <= 100:
        return series
    return f"{series[:91]}~{hashlib.sha256(series.encode()).hexdigest()[:8]}"


def samples_for_series(series: set[str], *, project: Project, owner) -> dict[str, Sample]:
    """One Sample per series in ``project``, created when missing, so the split can keep each series on one
    side (a physical sample: its side comes from its ID). ImportProblem when an ID belongs to another project."""
    lab_ids = {name: series_lab_id(name) for name in series}
    existing = {s.lab_sample_id: s for s in Sample.objects.filter(lab_sample_id__in=lab_ids.values())}
    elsewhere = sorted(lab for lab, s in existing.items() if s.project_id != project.pk)
    if elsewhere:
        raise ImportProblem(f"Sample(s) of another project: {', '.join(elsewhere)} (nothing was imported).")
    samples = {}
    for name, lab_id in sorted(lab_ids.items()):
        samples[name] = existing.get(lab_id) or Sample.objects.create(
            project=project, lab_sample_id=lab_id, name=name[:200], owner=owner
        )
    return samples


def import_tree(
    root: Path,
    *,
    sample: Sample | None = None,
    samples: dict[Path, Sample] | None = None,
    user,
    progress: Callable[[int], object] | None = None,
    on_total: Callable[[int], object] | None = None,
) -> ImportSummary:
    """Import every file of the tree into ``sample``, or each file into its series' sample (``samples``, by
    path); ``progress(1)`` is called per file (e.g. tqdm.update)."""
    plan = plan_files(root)
    if on_total:
        on_total(len(plan))
    summary = ImportSummary()
    seen: set[str] = set()
    for path, category in plan:
        target = samples[path] if samples is not None else sample
        _import_one(path, category, sample=target, user=user, summary=summary, seen=seen)
        if progress:
            progress(1)
    return summary


def _import_one(
    path: Path, category: Category, *, sample: Sample, user, summary: ImportSummary, seen: set[str]
) -> None:
    try:
        sha256 = file_sha256(str(path))
    except OSError as error:
        summary.rejected.append(Rejected(path, "unreadable", f"Cannot read the file: {error}"))
        return
    # Cheap resume: known bytes are skipped before any decoding.
    if sha256 in seen or SEMImage.objects.filter(sha256=sha256).exists():
        summary.duplicates.append(path)
        return
    try:
        with open(path, "rb") as handle:
            result = ingest_file(
                handle,
                filename=path.name,
                sample=sample,
                uploaded_by=user,
                label=category,
                label_source=Label.Source.IMPORT,
            )
    except IngestError as error:
        summary.rejected.append(Rejected(path, error.code, error.message))
        return
    # Only stored bytes count as seen: a second copy of a refused file is refused again, not
    # reported as "duplicate (already stored)".
    seen.add(sha256)
    if result.created:
        summary.stored.append(path)
        if result.near_duplicate_of:
            summary.near_duplicates.append((path, result.near_duplicate_of, result.image.duplicate_group))
        summary.per_category[category.folder_name] = summary.per_category.get(category.folder_name, 0) + 1
        summary.per_sample[sample.lab_sample_id] = summary.per_sample.get(sample.lab_sample_id, 0) + 1
    else:
        summary.duplicates.append(path)


def format_summary(summary: ImportSummary, root: Path | None = None) -> str:
    def shown(path: Path) -> str:
        try:
            return str(path.relative_to(root)) if root else str(path)
        except ValueError:
            return str(path)

    lines = [
        f"Stored: {len(summary.stored)}   duplicate (already stored): {len(summary.duplicates)}   "
        f"rejected: {len(summary.rejected)}   (files: {summary.total})"
    ]
    for name, count in sorted(summary.per_category.items()):
        lines.append(f"  stored {count:5d}  {name}")
    if len(summary.per_sample) > 1:
        lines.append(f"Samples (series) stored into: {len(summary.per_sample)}, each wholly on one side of the split")
    if summary.near_duplicates:
        groups = {group for _path, _of, group in summary.near_duplicates}
        lines.append(
            f"Near-duplicates of images stored before them: {len(summary.near_duplicates)} "
            f"(in {len(groups)} near-duplicate groups, each kept on one side of the train/test split)"
        )
        lines.extend(
            f"  {shown(path)}: near-duplicate of image {of} (group {group})"
            for path, of, group in summary.near_duplicates
        )
    else:
        lines.append("Near-duplicates of images stored before them: 0")
    if summary.rejected:
        lines.append("Rejected files:")
        lines.extend(f"  {shown(item.path)}: [{item.code}] {item.message}" for item in summary.rejected)
    return "\n".join(lines)
