"""Media storage that never leaves a half-written file under a real name.

Django's FileSystemStorage writes straight into the final path: when the disk fills up (ENOSPC) or
the process dies mid-write, a truncated file stays there, under the name a row would point to.
`MediaStorage` writes into a uniquely named file in `MEDIA_ROOT/.partial/`, then hard-links it to the
final name (which, like `os.open(O_EXCL)`, never overwrites an existing file) and removes the partial
name. A failed write removes its partial file, so the media directory only ever holds complete files
under real names. What a killed process leaves in `.partial/` is removed by the sweeper
(`remove_stale_partials`), which only has to list that one folder.

Content-addressed names (`save_content_addressed`: the name is the sha256 of the bytes) are
idempotent: when the name is taken by a file with the same bytes (left by an upload that was killed
before its row committed, or stored by a concurrent upload of the same file), that file is reused
instead of storing a second copy under a `_AbCdEfG` suffix.

`ModelFileStorage` is the same for model artifacts under MODEL_DIR. The object-storage counterparts
(S3, MinIO, Ceph RGW) are in `portal/s3_storage.py`; code outside the storages asks `local_path` for a
file's local path, which only the file-system backends have (the others go through the worker cache).
"""

from __future__ import annotations

import errno
import filecmp
import os
import secrets
import time

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.core.files.utils import validate_file_name

PARTIAL_DIR = ".partial"


class MediaStorage(FileSystemStorage):
    def _save(self, name, content):
        partial_name = os.path.join(PARTIAL_DIR, secrets.token_hex(16))
        try:
            # Django creates the directories, streams the content and applies the permission settings.
            partial_name = super()._save(partial_name, content)
            return self._publish(partial_name, name)
        finally:
            self._remove_quietly(partial_name)

    def save_content_addressed(self, name: str, content, max_length: int | None = None) -> tuple[str, bool]:
        """Store `content` under `name`, a name derived from the bytes; returns (name, created).

        A file with the same bytes under that name is reused (created is False, and its modification
        time is refreshed so that the sweeper's grace period starts again). A file with other bytes under
        it is kept, and this one gets a new name, as Django does.
        """
        validate_file_name(name, allow_relative_path=True)
        if not hasattr(content, "chunks"):
            content = File(content, name)
        partial_name = os.path.join(PARTIAL_DIR, secrets.token_hex(16))
        try:
            partial_name = super()._save(partial_name, content)
            self._make_parent(name)
            while True:
                try:
                    _link_without_overwriting(self.path(partial_name), self.path(name))
                    return str(name).replace("\\", "/"), True
                except FileExistsError:
                    same = _same_bytes(self.path(partial_name), self.path(name))
                    if same is None:
                        continue  # removed meanwhile: the name is free again
                    if same:
                        _touch(self.path(name))
                        return str(name).replace("\\", "/"), False
                    name = self.get_available_name(name, max_length=max_length)
        finally:
            self._remove_quietly(partial_name)

    def remove_stale_partials(self, older_than_s: float) -> int:
        """What processes killed mid-write left in `.partial/` (the sweeper)."""
        return remove_stale_partials(self.location, older_than_s)

    def _publish(self, partial_name: str, name: str) -> str:
        """Give the complete file its final name; a taken name gets a new one, as Django does."""
        self._make_parent(name)
        while True:
            try:
                _link_without_overwriting(self.path(partial_name), self.path(name))
            except FileExistsError:
                name = self.get_available_name(name)
            else:
                return str(name).replace("\\", "/")

    def _make_parent(self, name: str) -> None:
        directory = os.path.dirname(self.path(name))
        if self.directory_permissions_mode is None:
            os.makedirs(directory, exist_ok=True)
            return
        old_umask = os.umask(0o777 & ~self.directory_permissions_mode)  # as FileSystemStorage does
        try:
            os.makedirs(directory, self.directory_permissions_mode, exist_ok=True)
        finally:
            os.umask(old_umask)

    def _remove_quietly(self, name: str) -> None:
        try:
            os.remove(self.path(name))
        except FileNotFoundError:
            pass


class ModelFileStorage(MediaStorage):
    """Model artifacts under MODEL_DIR, read when first used so that a changed setting (tests) applies."""

    @property
    def base_location(self):
        return self._value_or_setting(self._location, settings.MODEL_DIR)

    @property
    def location(self):
        return os.path.abspath(self.base_location)


def media_storage() -> Storage:
    return storages["default"]


def model_storage() -> Storage:
    return storages["models"]


def is_local(storage: Storage) -> bool:
    """Whether `storage` keeps its files on a (local or NFS) file system, where they have paths."""
    return isinstance(storage, FileSystemStorage)


def local_path(storage: Storage, name: str) -> str | None:
    """The file's path on this host when `storage` keeps its files on a file system; None for object
    storage, whose files a worker reads through its cache (portal.services.delivery.file_cache)."""
    return storage.path(name) if is_local(storage) else None


def _link_without_overwriting(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        # A filesystem without hard links: rename, after a check (only a rare race can overwrite).
        if os.path.exists(target):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target) from error
        os.rename(source, target)


def _same_bytes(first: str, second: str) -> bool | None:
    """Whether two files hold the same bytes; None when the second one does not exist (any more)."""
    try:
        return filecmp.cmp(first, second, shallow=False)
    except FileNotFoundError:
        return None


def _touch(path: str) -> None:
    try:
        os.utime(path)
    except FileNotFoundError:
        pass


def remove_stale_partials(root: str, older_than_s: float) -> int:
    """Remove partial files left by a process killed mid-write; returns how many."""
    return remove_stale_files(os.path.join(root, PARTIAL_DIR), older_than_s)


def remove_stale_files(folder, older_than_s: float) -> int:
    """Remove the files directly in `folder` not modified for `older_than_s` seconds; returns how many.
    For folders of temporary files (partial media files, spooled upload bodies) whose writers died."""
    cutoff = time.time() - older_than_s
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                os.remove(entry.path)
                removed += 1
        except FileNotFoundError:
            pass  # finished (linked and removed) meanwhile
    return removed
