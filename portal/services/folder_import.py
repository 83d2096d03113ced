"""Import a folder-per-category tree (the NFFA-EUROPE dataset layout) as curated labels.

Shared by `manage.py import_folder` and `manage.py make_demo_data --import`. Every file goes
through `ingest_file`, so imported images get exactly the validation, metadata, derivatives and
atomicity of web uploads. Resumable: a file whose sha256 is already stored is skipped after
hashing, before any decoding.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from classifier.fingerprint import file_sha256
from portal.models import Category, Label, Sample, SEMImage
from portal.services.ingest import IngestError, ingest_file


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


def import_tree(
    root: Path,
    *,
    sample: Sample,
    user,
    progress: Callable[[int], object] | None = None,
    on_total: Callable[[int], object] | None = None,
) -> ImportSummary:
    """Import every file of the tree; ``progress(1)`` is called per file (e.g. tqdm.update)."""
    plan = [(path, category) for folder, category in plan_import(Path(root)) for path in list_files(folder)]
    if on_total:
        on_total(len(plan))
    summary = ImportSummary()
    seen: set[str] = set()
    for path, category in plan:
        _import_one(path, category, sample=sample, user=user, summary=summary, seen=seen)
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
