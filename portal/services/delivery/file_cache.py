"""A worker's local read-through cache of files kept on object storage: derivatives and model artifacts.

The classifier reads local paths (it never imports Django); on object storage a worker has no media folder,
so `local_copy` hands it a local copy. On the file-system backends (one host, or a shared NFS mount) the
file's own path is returned and nothing is copied: `make run` works as before.

- Keyed by content hash: a derivative by its image's sha256 (its bytes are a function of the original's),
  an artifact by its own sha256. A key's bytes never change, so an entry never goes stale.
- Checked on load: an entry is re-hashed the first time a process uses it (and again when its size or
  inode changed) against the expected sha256, else against the sha256 recorded when it was fetched; a
  corrupt or truncated entry is fetched again.
- Never half-written: a download goes to a temporary file that is renamed into place once complete.
- Bounded: beyond SEM_WORKER_CACHE_MAX_BYTES the least recently used entries go (a hit refreshes the
  modification time). Entries pinned by this process (a training run's data set) stay until released.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.conf import settings

from classifier.fingerprint import file_sha256
from portal.storage import is_local, local_path

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
FETCH_THREADS = 8  # object stores answer in tens of milliseconds: overlap the round trips
RECORDED_SUFFIX = ".sha256"
TEMPORARY_DIR = ".incoming"


class CacheMismatch(Exception):
    """The stored object's bytes do not have the sha256 its row records."""


class FileCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._verified: dict[str, tuple[int, int]] = {}  # path -> (size, inode) hashed by this process
        self._pinned: set[str] = set()
        self._size: int | None = None  # estimate of the entries' total size; None: not yet measured
        self._lock = threading.Lock()

    def get(self, storage, name: str, *, key: str, suffix: str = "", expected_sha256: str = "", pin=False) -> Path:
        """A verified local copy of `name` from `storage`; raises FileNotFoundError when it is not stored
        and CacheMismatch when its bytes are not `expected_sha256`."""
        entry = self.root / key[:2] / f"{key}{suffix}"
        if pin:
            with self._lock:
                self._pinned.add(str(entry))
        if self._valid(entry, expected_sha256):
            _touch(entry)
            return entry
        self._fetch(storage, name, entry, expected_sha256)
        if self._size is None or self._size > self.max_bytes:
            self.trim(keep=str(entry))  # never the copy about to be read
        return entry

    def release(self) -> None:
        """Unpin everything this process pinned."""
        with self._lock:
            self._pinned.clear()

    def trim(self, keep: str = "") -> int:
        """Remove least recently used entries (not pinned, not `keep`) until the cache fits its size;
        returns how many."""
        entries = []
        for path in self.root.glob("??/*"):
            if path.suffix == RECORDED_SUFFIX or not path.is_file():
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            entries.append((stat.st_mtime_ns, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        removed = 0
        with self._lock:
            pinned = self._pinned | {keep}
        for _mtime, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            if str(path) in pinned:
                continue
            _remove_entry(path)
            self._verified.pop(str(path), None)
            total -= size
            removed += 1
        self._size = total
        return removed

    def _valid(self, entry: Path, expected_sha256: str) -> bool:
        try:
            stat = entry.stat()
        except FileNotFoundError:
            return False
        # Not the modification time: each hit refreshes it (the LRU order).
        signature = (stat.st_size, stat.st_ino)
        if self._verified.get(str(entry)) == signature:
            return True
        wanted = expected_sha256 or _read_recorded(entry)
        if wanted and file_sha256(entry) == wanted:
            self._verified[str(entry)] = signature
            return True
        logger.warning("worker cache: %s does not match its sha256; fetching it again", entry)
        _remove_entry(entry)
        return False

    def _fetch(self, storage, name: str, entry: Path, expected_sha256: str) -> None:
        incoming = self.root / TEMPORARY_DIR
        incoming.mkdir(parents=True, exist_ok=True)
        temporary = incoming / f"{entry.name}.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            digest, size = _download(storage, name, temporary)
            if expected_sha256 and digest != expected_sha256:
                raise CacheMismatch(f"{name}: stored bytes have sha256 {digest}, expected {expected_sha256}")
            entry.parent.mkdir(parents=True, exist_ok=True)
            entry.with_name(entry.name + RECORDED_SUFFIX).write_text(digest)
            os.replace(temporary, entry)  # complete, or not there at all
        finally:
            temporary.unlink(missing_ok=True)
        self._verified[str(entry)] = _signature(entry)
        if self._size is not None:
            self._size += size


def _download(storage, name: str, target: Path) -> tuple[str, int]:
    opener = getattr(storage, "open_stream", None)
    source = opener(name) if opener else storage.open(name, "rb")
    digest, size = hashlib.sha256(), 0
    with source, open(target, "wb") as out:
        for chunk in iter(lambda: source.read(CHUNK_BYTES), b""):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return digest.hexdigest(), size


def _read_recorded(entry: Path) -> str:
    try:
        return entry.with_name(entry.name + RECORDED_SUFFIX).read_text().strip()
    except FileNotFoundError:
        return ""


def _signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_ino


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except FileNotFoundError:
        pass


def _remove_entry(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + RECORDED_SUFFIX).unlink(missing_ok=True)


# --- The process's cache, and what the services ask of it ------------------------------------------

_caches: dict[tuple[str, int], FileCache] = {}


def cache() -> FileCache:
    """This process's cache (per configured folder and size, so a test's changed settings apply)."""
    key = (str(settings.SEM_WORKER_CACHE_DIR), settings.SEM_WORKER_CACHE_MAX_BYTES)
    if key not in _caches:
        _caches[key] = FileCache(Path(key[0]), key[1])
    return _caches[key]


def local_copy(storage, name: str, *, key: str, suffix: str = "", expected_sha256: str = "", pin=False) -> Path:
    """A local path of a stored file: its own path on a file-system backend, else a cached copy."""
    path = local_path(storage, name)
    if path is not None:
        if not os.path.isfile(path):
            raise FileNotFoundError(path)
        return Path(path)
    return cache().get(storage, name, key=key, suffix=suffix, expected_sha256=expected_sha256, pin=pin)


def local_derivatives(storage, rows: list[tuple[str, str]], *, pin=False) -> dict[str, Path | None]:
    """{derivative name: local path, or None when it is not stored} for (name, image sha256) rows,
    fetched in parallel."""

    def one(row):
        name, sha256 = row
        try:
            return name, local_copy(storage, name, key=sha256, suffix=Path(name).suffix, pin=pin)
        except (FileNotFoundError, CacheMismatch) as error:
            logger.warning("derivative %s is not readable: %s", name, error)
            return name, None

    if is_local(storage) or len(rows) < 2:
        return dict(map(one, rows))
    with ThreadPoolExecutor(max_workers=FETCH_THREADS) as pool:
        return dict(pool.map(one, rows))
