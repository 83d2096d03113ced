"""Data fingerprint: identifies exactly which labelled images a model saw."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import BinaryIO


def data_fingerprint(pairs: Iterable[tuple[str, str]]) -> str:
    """sha256 hex of the sorted list of (image sha256, label) pairs.

    Sorting makes the fingerprint independent of listing order; JSON gives an
    unambiguous serialisation (no separator collisions in labels).
    """
    canonical = sorted((str(sha), str(label)) for sha, label in pairs)
    payload = json.dumps(canonical, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(payload.encode("ascii")).hexdigest()


def file_sha256(path_or_file: str | BinaryIO, chunk_size: int = 1 << 20) -> str:
    """sha256 hex of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    if hasattr(path_or_file, "read"):
        for chunk in iter(lambda: path_or_file.read(chunk_size), b""):
            digest.update(chunk)
        return digest.hexdigest()
    with open(path_or_file, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint_items(items: Iterable[tuple[str, str]]) -> str:
    """Fingerprint of (image path, label) items, hashing each file."""
    return data_fingerprint((file_sha256(path), label) for path, label in items)
