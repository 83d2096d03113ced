"""Versioned model artifact: one file with a header, metadata and weights.

Layout (like paperless-ngx's classifier: a format version checked on load, a
temporary file renamed into place so readers never see a half-written model)::

    MAGIC (8 bytes) | header length (8 bytes, big-endian) | header JSON | payload

The header JSON holds ``format_version``, the payload length and sha256, and
the metadata. The payload is ``torch.save(state_dict)``. Metadata can be read
without torch (``read_metadata``), which the web process uses.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from typing import Any

MAGIC = b"SEMCLSF\x00"
FORMAT_VERSION = 1
_LENGTH = struct.Struct(">Q")
_MAX_HEADER = 64 << 20


class ArtifactError(Exception):
    """The file is not a readable artifact of this format (corrupt, truncated,
    wrong version, checksum mismatch)."""


@dataclass
class Artifact:
    metadata: dict[str, Any]
    state_dict: dict[str, Any]
    sha256: str


def save_artifact(path: str | os.PathLike, state_dict: dict, metadata: dict) -> str:
    """Write atomically; return the sha256 of the whole file."""
    import torch

    payload_buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, payload_buffer)
    payload = payload_buffer.getvalue()
    header = {
        "format_version": FORMAT_VERSION,
        "payload_length": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "metadata": {**metadata, "format_version": FORMAT_VERSION},
    }
    header_bytes = json.dumps(header, sort_keys=True, allow_nan=False).encode("utf-8")
    blob = MAGIC + _LENGTH.pack(len(header_bytes)) + header_bytes + payload
    _write_atomically(os.fspath(path), blob)
    return hashlib.sha256(blob).hexdigest()


def load_artifact(path: str | os.PathLike, expected_sha256: str | None = None) -> Artifact:
    """Read and verify an artifact; raise ArtifactError with a clear message."""
    import torch

    path = os.fspath(path)
    blob = _read_file(path)
    sha256 = hashlib.sha256(blob).hexdigest()
    if expected_sha256 is not None and sha256 != expected_sha256.lower():
        raise ArtifactError(
            f"{path}: sha256 mismatch: file is {sha256}, expected {expected_sha256} "
            "(the file was replaced or modified since it was registered)")
    header, payload_offset = _parse_header(path, blob)
    payload = blob[payload_offset:]
    if len(payload) != header["payload_length"]:
        raise ArtifactError(f"{path}: truncated or padded: weights are {len(payload)} bytes, "
                            f"header says {header['payload_length']}")
    if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        raise ArtifactError(f"{path}: corrupt: the weights' checksum does not match the one stored in the file")
    try:
        state_dict = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for bad pickles
        raise ArtifactError(f"{path}: cannot read the weights: {error}") from error
    return Artifact(metadata=header["metadata"], state_dict=state_dict, sha256=sha256)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Metadata only, without torch and without reading the weights."""
    path = os.fspath(path)
    with open(path, "rb") as handle:
        start = handle.read(len(MAGIC) + _LENGTH.size)
        if len(start) < len(MAGIC) + _LENGTH.size:
            raise ArtifactError(f"{path}: too short to be a classifier artifact")
        (length,) = _LENGTH.unpack(start[len(MAGIC):])
        _check_magic(path, start)
        if length > _MAX_HEADER:
            raise ArtifactError(f"{path}: corrupt header length {length}")
        header, _ = _parse_header(path, start + handle.read(length))
    return header["metadata"]


def build_model(metadata: dict[str, Any]):
    """The network described by ``metadata``, randomly initialised, ready for
    ``load_state_dict`` (no fastai Learner involved)."""
    from .network import create_network

    return create_network(metadata["arch"], len(metadata["classes"]))


def _write_atomically(path: str, blob: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temp_path = tempfile.mkstemp(prefix=".tmp-", suffix=".artifact", dir=directory)
    try:
        with os.fdopen(handle, "wb") as temp:
            temp.write(blob)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.unlink(temp_path)
        raise


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError as error:
        raise ArtifactError(f"{path}: artifact file not found") from error


def _check_magic(path: str, blob: bytes) -> None:
    if not blob.startswith(MAGIC):
        raise ArtifactError(f"{path}: not a classifier artifact (bad magic bytes); corrupt or a different file type")


def _parse_header(path: str, blob: bytes) -> tuple[dict, int]:
    _check_magic(path, blob)
    start = len(MAGIC) + _LENGTH.size
    if len(blob) < start:
        raise ArtifactError(f"{path}: truncated: no header")
    (length,) = _LENGTH.unpack(blob[len(MAGIC):start])
    if length > _MAX_HEADER or start + length > len(blob):
        raise ArtifactError(f"{path}: truncated or corrupt header (length {length}, file {len(blob)} bytes)")
    try:
        header = json.loads(blob[start:start + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path}: corrupt header: {error}") from error
    version = header.get("format_version") if isinstance(header, dict) else None
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{path}: artifact format version {version!r}, this code reads version "
                            f"{FORMAT_VERSION}; retrain the model with this version")
    for key in ("payload_length", "payload_sha256", "metadata"):
        if key not in header:
            raise ArtifactError(f"{path}: corrupt header: missing {key!r}")
    return header, start + length
