"""The watched share on disk: which files are candidates, the walk that finds them, and moving a processed
file (with its sidecar) to processed/. Only os.scandir: inotify does not fire on SMB/NFS mounts."""

from __future__ import annotations

import logging
import os
import shutil

from portal.models import WatchedFile, WatchFolder
from portal.services.ingestion.watch_sidecars import sidecar_path

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"})
TEMP_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".crdownload", ".download", ".filepart", ".swp", "~")
PROCESSED_DIR = "processed"


def is_candidate(name: str) -> bool:
    """An image file name that is neither hidden nor temporary (Office/instrument lock files, partial copies)."""
    lowered = name.lower()
    if name.startswith((".", "~$", "~")) or lowered.endswith(TEMP_SUFFIXES):
        return False
    return os.path.splitext(lowered)[1] in IMAGE_EXTENSIONS


def walk(root: str) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every candidate file under root (plain os.scandir, no symlinks)."""
    found: dict[str, tuple[int, int]] = {}
    stack = [("", root)]
    while stack:
        prefix, directory = stack.pop()
        try:
            entries = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue  # removed mid-scan, or not ours to read
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if not entry.name.startswith((".", "~")) and not (prefix == "" and entry.name == PROCESSED_DIR):
                            stack.append((prefix + entry.name + "/", entry.path))
                    elif is_candidate(entry.name) and entry.is_file(follow_symlinks=False):
                        relpath = prefix + entry.name
                        if not _storable(relpath):
                            continue
                        stat = entry.stat(follow_symlinks=False)
                        found[relpath] = (stat.st_size, stat.st_mtime_ns)
                except FileNotFoundError:
                    continue  # deleted between the listing and the stat
    return found


MAX_RELPATH = WatchedFile._meta.get_field("relpath").max_length


def _storable(relpath: str) -> bool:
    """A path the database can hold: not over-long, and valid text (a name in another encoding than the
    file system's comes back from os.scandir with surrogate escapes, which PostgreSQL refuses)."""
    if len(relpath) > MAX_RELPATH or "\x00" in relpath:
        logger.warning("watch folder: skipped a path longer than %s characters: %.200s…", MAX_RELPATH, relpath)
        return False
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError:
        logger.warning("watch folder: skipped %r: its name is not valid UTF-8 (rename it)", relpath)
        return False
    return True


def move_to_processed(folder: WatchFolder, relpath: str) -> str:
    """Move the file (and its sidecar) to processed/<relpath>; never overwrites. Returns the new relpath."""
    source = os.path.join(folder.path, relpath)
    try:
        target_rel = _free_name(folder.path, f"{PROCESSED_DIR}/{relpath}")
        os.makedirs(os.path.dirname(os.path.join(folder.path, target_rel)), exist_ok=True)
        sidecar = sidecar_path(source)
        shutil.move(source, os.path.join(folder.path, target_rel))
        if sidecar:
            stem = os.path.splitext(target_rel)[0]
            shutil.move(
                sidecar, os.path.join(folder.path, _free_name(folder.path, stem + os.path.splitext(sidecar)[1]))
            )
        return target_rel
    except OSError as error:
        logger.warning("watch folder %s: could not move %s to %s/: %s", folder.path, relpath, PROCESSED_DIR, error)
        return ""


def _free_name(root: str, relpath: str) -> str:
    stem, extension = os.path.splitext(relpath)
    candidate, number = relpath, 1
    while os.path.lexists(os.path.join(root, candidate)):
        candidate = f"{stem}-{number}{extension}"
        number += 1
    return candidate
