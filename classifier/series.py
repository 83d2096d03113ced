"""Which physical series (sample) an image belongs to, read from a dataset manifest.

A test split is only honest when it holds series the model never saw in training: tiles, tilt views
and magnifications of one field look alike, so they must stay on one side. The folder import
(`manage.py import_folder --manifest`) makes one Sample per series and the benchmarks
(`bench/real_data.py`) split by it; both read the series here so they agree.
"""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath


def source_group(repo: str, file: str, path: str) -> str:
    """The series of an image of ../shared/sem-real*: its source repository, or within a repository
    that mixes several series (ARIM-Academy's microplastics families, baiyubaiyu's filler loadings)
    one series."""
    name = Path(file).stem
    if repo.startswith("ARIM-Academy/"):
        family = name.split("_")[1]  # mp_<family>_...: bead, frag, psfrag, polyester, pfibre, foam
        family = "polyester" if family == "pfibre" else family  # the close-ups of the same fibres
        return f"{repo}#{family}"
    if repo.startswith("baiyubaiyu/"):
        return f"{repo}#{Path(path).parent.name}"  # one filler loading: one sample, several magnifications
    return repo


class ManifestError(ValueError):
    """The manifest cannot say the series (missing columns, empty sample)."""


def read_manifest(path: Path) -> dict[str, str]:
    """{file relative to the tree root (POSIX): series ID}. Columns `file,sample`, or the sem-real
    manifests' `file,repo,path` (the series is then `source_group`)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        if "file" not in columns or not ({"sample"} <= columns or {"repo", "path"} <= columns):
            raise ManifestError(f"{path}: needs the columns file,sample (or file,repo,path); has {sorted(columns)}")
        series = {}
        for line, row in enumerate(reader, start=2):
            sample = (row.get("sample") or "").strip() if "sample" in columns else ""
            if not sample and {"repo", "path"} <= columns:
                sample = source_group(row["repo"], row["file"], row["path"])
            if not sample:
                raise ManifestError(f"{path}, line {line}: no sample for {row['file']!r}")
            series[str(PurePosixPath(row["file"].replace("\\", "/")))] = sample
    return series
