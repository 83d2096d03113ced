"""Media storage that never leaves a half-written file under a real name.

Django's FileSystemStorage writes straight into the final path: when the disk fills up (ENOSPC) or
the process dies mid-write, a truncated file stays there, under the name a row would point to.
`MediaStorage` writes into a uniquely named `.partial-*` file next to the target, then hard-links it
to the final name (which, like `os.open(O_EXCL)`, never overwrites an existing file) and removes the
partial name. A failed write removes its partial file, so the media directory only ever holds
complete files under real names.
"""

from __future__ import annotations

import errno
import os
import secrets

from django.core.files.storage import FileSystemStorage

PARTIAL_MARKER = ".partial-"


class MediaStorage(FileSystemStorage):
    def _save(self, name, content):
        head, tail = os.path.split(name)
        partial_name = os.path.join(head, f"{PARTIAL_MARKER}{secrets.token_hex(8)}-{tail}")
        try:
            # Django creates the directories, streams the content and applies the permission settings.
            partial_name = super()._save(partial_name, content)
            return self._publish(partial_name, name)
        finally:
            self._remove_quietly(partial_name)

    def _publish(self, partial_name: str, name: str) -> str:
        """Give the complete file its final name; a taken name gets a new one, as Django does."""
        while True:
            try:
                _link_without_overwriting(self.path(partial_name), self.path(name))
            except FileExistsError:
                name = self.get_available_name(name)
            else:
                return str(name).replace("\\", "/")

    def _remove_quietly(self, name: str) -> None:
        try:
            os.remove(self.path(name))
        except FileNotFoundError:
            pass


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
