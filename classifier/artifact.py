"""Versioned model artifact: a safetensors file whose JSON header carries ours.

Layout (format version 2): a standard ``.safetensors`` file (8-byte little-endian header length, the
header JSON, the raw tensor bytes). The header's ``__metadata__`` holds one entry, ``sem_artifact``:
our JSON header with ``format_version``, ``weights_sha256`` (the sha256 of the tensor bytes) and the
metadata. Loading parses JSON and copies raw tensor bytes: nothing is unpickled, so a replaced model
file cannot run code in the workers. Files are written to a temporary file renamed into place, so
readers never see a half-written model. Metadata can be read without torch (``read_metadata``), which
the web process uses.

Format version 1 (``MAGIC | header length | header JSON | torch.save payload``) went through torch's
unpickler. It is read only to migrate it (``upgrade_artifact``, with the sha256 the file was registered
with, checked before anything is unpickled); ``load_artifact`` refuses it otherwise.
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

FORMAT_VERSION = 2
LEGACY_FORMAT_VERSION = 1
MAGIC = b"SEMCLSF\x00"  # format version 1 only
METADATA_KEY = "sem_artifact"
_LENGTH = struct.Struct(">Q")  # format version 1
_SAFETENSORS_LENGTH = struct.Struct("<Q")
_MAX_HEADER = 64 << 20
# Tensors an artifact carries beside the network's weights: the out-of-scope detector's bank (ood.py) and
# a head refit's base statistics (head_refit.py). They are not the network's: ``network_state`` sets them apart.
EXTRA_TENSOR_PREFIXES = ("ood.", "refit_of.")


class ArtifactError(Exception):
    """The file is not a readable artifact of this format (corrupt, truncated,
    wrong version, checksum mismatch)."""


class LegacyArtifactError(ArtifactError):
    """A format version 1 artifact (a pickle container): upgrade it with ``upgrade_artifact``."""


@dataclass
class Artifact:
    metadata: dict[str, Any]
    state_dict: dict[str, Any]  # every tensor of the file: the network's and the extra ones
    sha256: str
    format_version: int = FORMAT_VERSION

    def network_state(self) -> dict[str, Any]:
        """The network's weights, for ``build_model(metadata).load_state_dict``."""
        return {key: value for key, value in self.state_dict.items() if not key.startswith(EXTRA_TENSOR_PREFIXES)}

    def extra_tensors(self) -> dict[str, Any]:
        """The tensors beside the network (EXTRA_TENSOR_PREFIXES), by key."""
        return {key: value for key, value in self.state_dict.items() if key.startswith(EXTRA_TENSOR_PREFIXES)}


def save_artifact(path: str | os.PathLike, state_dict: dict, metadata: dict) -> str:
    """Write atomically; return the sha256 of the whole file."""
    blob = artifact_bytes(state_dict, metadata)
    _write_atomically(os.fspath(path), blob)
    return hashlib.sha256(blob).hexdigest()


def artifact_bytes(state_dict: dict, metadata: dict) -> bytes:
    from safetensors.torch import save

    # Own contiguous copies: safetensors refuses tensors that share storage (tied weights, views).
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in state_dict.items()}
    weights = save(tensors)  # the tensor bytes do not depend on the header's metadata
    (length,) = _SAFETENSORS_LENGTH.unpack(weights[: _SAFETENSORS_LENGTH.size])
    header = {
        "format_version": FORMAT_VERSION,
        "weights_sha256": hashlib.sha256(weights[_SAFETENSORS_LENGTH.size + length :]).hexdigest(),
        "metadata": {**metadata, "format_version": FORMAT_VERSION},
    }
    return save(tensors, metadata={METADATA_KEY: json.dumps(header, sort_keys=True, allow_nan=False)})


def load_artifact(path: str | os.PathLike, expected_sha256: str | None = None) -> Artifact:
    """Read and verify an artifact; raise ArtifactError with a clear message (LegacyArtifactError for a
    format version 1 file, which is not unpickled here)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = os.fspath(path)
    blob = _read_file(path)
    sha256 = _check_sha256(path, blob, expected_sha256)
    if blob.startswith(MAGIC):
        raise LegacyArtifactError(
            f"{path}: artifact format version {LEGACY_FORMAT_VERSION} (torch pickle); "
            "upgrade it to the safetensors format (manage.py upgrade_artifacts)"
        )
    header, data_start = _parse_safetensors_header(path, blob)
    if hashlib.sha256(blob[data_start:]).hexdigest() != header["weights_sha256"]:
        raise ArtifactError(f"{path}: corrupt: the weights' checksum does not match the one stored in the file")
    try:
        state_dict = load(blob)
    except SafetensorError as error:
        raise ArtifactError(f"{path}: cannot read the weights: {error}") from error
    return Artifact(metadata=header["metadata"], state_dict=state_dict, sha256=sha256)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Metadata only, without torch and without reading the weights (either format version)."""
    path = os.fspath(path)
    try:
        handle = open(path, "rb")
    except FileNotFoundError as error:
        raise ArtifactError(f"{path}: artifact file not found") from error
    with handle:
        start = handle.read(len(MAGIC) + _LENGTH.size)
        if len(start) < len(MAGIC) + _LENGTH.size:
            raise ArtifactError(f"{path}: too short to be a classifier artifact")
        if start.startswith(MAGIC):
            (length,) = _LENGTH.unpack(start[len(MAGIC) :])
            if length > _MAX_HEADER:
                raise ArtifactError(f"{path}: corrupt header length {length}")
            header, _ = _parse_legacy_header(path, start + handle.read(length))
            return header["metadata"]
        (length,) = _SAFETENSORS_LENGTH.unpack(start[: _SAFETENSORS_LENGTH.size])
        if length > _MAX_HEADER:
            raise ArtifactError(f"{path}: not a classifier artifact (no safetensors header)")
        rest = start[_SAFETENSORS_LENGTH.size :] + handle.read(max(0, length - (len(start) - _SAFETENSORS_LENGTH.size)))
        header, _ = _parse_safetensors_header(path, start[: _SAFETENSORS_LENGTH.size] + rest, check_data=False)
    return header["metadata"]


def format_version(path: str | os.PathLike) -> int:
    """1 for a legacy pickle container, 2 for safetensors (reads only the first bytes)."""
    with open(os.fspath(path), "rb") as handle:
        return LEGACY_FORMAT_VERSION if handle.read(len(MAGIC)) == MAGIC else FORMAT_VERSION


def upgrade_artifact(path: str | os.PathLike, new_path: str | os.PathLike, expected_sha256: str) -> str:
    """Rewrite a format version 1 artifact as a safetensors one at ``new_path``; return its sha256.

    The old file is unpickled (torch's restricted ``weights_only`` unpickler) only after its sha256
    matched ``expected_sha256``, the checksum recorded when it was registered: a file swapped in since
    is refused before any unpickling."""
    import torch

    path = os.fspath(path)
    if not expected_sha256:
        raise ArtifactError(f"{path}: upgrading needs the sha256 the artifact was registered with")
    blob = _read_file(path)
    _check_sha256(path, blob, expected_sha256)
    header, payload_offset = _parse_legacy_header(path, blob)
    payload = blob[payload_offset:]
    if len(payload) != header["payload_length"]:
        raise ArtifactError(
            f"{path}: truncated or padded: weights are {len(payload)} bytes, header says {header['payload_length']}"
        )
    if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        raise ArtifactError(f"{path}: corrupt: the weights' checksum does not match the one stored in the file")
    try:
        state_dict = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for bad pickles
        raise ArtifactError(f"{path}: cannot read the weights: {error}") from error
    metadata = {key: value for key, value in header["metadata"].items() if key != "format_version"}
    metadata["upgraded_from_format_version"] = LEGACY_FORMAT_VERSION
    return save_artifact(new_path, state_dict, metadata)


def build_model(metadata: dict[str, Any]):
    """The network described by ``metadata``, randomly initialised, ready for
    ``load_state_dict`` (no fastai Learner involved)."""
    from .backbones import get_backbone, is_backbone
    from .network import create_network

    if is_backbone(metadata["arch"]):
        from .feature_head import build_classifier

        backbone, n_classes = get_backbone(metadata["arch"]), len(metadata["classes"])
        return build_classifier(
            backbone, n_classes, tta_views=metadata["tta_views"], prototypes=metadata.get("prototypes")
        )
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


def _check_sha256(path: str, blob: bytes, expected_sha256: str | None) -> str:
    sha256 = hashlib.sha256(blob).hexdigest()
    if expected_sha256 is not None and sha256 != expected_sha256.lower():
        raise ArtifactError(
            f"{path}: sha256 mismatch: file is {sha256}, expected {expected_sha256} "
            "(the file was replaced or modified since it was registered)"
        )
    return sha256


def _parse_safetensors_header(path: str, blob: bytes, *, check_data: bool = True) -> tuple[dict, int]:
    """Our header from the safetensors header's __metadata__, and where the tensor bytes start."""
    size = _SAFETENSORS_LENGTH.size
    if len(blob) < size:
        raise ArtifactError(f"{path}: truncated: no header")
    (length,) = _SAFETENSORS_LENGTH.unpack(blob[:size])
    if length > _MAX_HEADER:
        raise ArtifactError(
            f"{path}: not a classifier artifact (no safetensors header); corrupt or a different file type"
        )
    if size + length > len(blob):
        raise ArtifactError(f"{path}: truncated or corrupt header (length {length}, file {len(blob)} bytes)")
    try:
        table = json.loads(blob[size : size + length].decode("utf-8"))
        ours = json.loads(table["__metadata__"][METADATA_KEY])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ArtifactError(f"{path}: not a classifier artifact (no {METADATA_KEY!r} header): {error}") from error
    version = ours.get("format_version") if isinstance(ours, dict) else None
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: artifact format version {version!r}, this code reads version "
            f"{FORMAT_VERSION}; retrain the model with this version"
        )
    for key in ("weights_sha256", "metadata"):
        if key not in ours:
            raise ArtifactError(f"{path}: corrupt header: missing {key!r}")
    if check_data:
        ends = [entry["data_offsets"][1] for name, entry in table.items() if name != "__metadata__"]
        if size + length + max(ends, default=0) != len(blob):
            raise ArtifactError(
                f"{path}: truncated or padded: the weights are {len(blob) - size - length} bytes, "
                f"the header says {max(ends, default=0)}"
            )
    return ours, size + length


def _parse_legacy_header(path: str, blob: bytes) -> tuple[dict, int]:
    if not blob.startswith(MAGIC):
        raise ArtifactError(f"{path}: not a format version {LEGACY_FORMAT_VERSION} artifact (bad magic bytes)")
    start = len(MAGIC) + _LENGTH.size
    if len(blob) < start:
        raise ArtifactError(f"{path}: truncated: no header")
    (length,) = _LENGTH.unpack(blob[len(MAGIC) : start])
    if length > _MAX_HEADER or start + length > len(blob):
        raise ArtifactError(f"{path}: truncated or corrupt header (length {length}, file {len(blob)} bytes)")
    try:
        header = json.loads(blob[start : start + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path}: corrupt header: {error}") from error
    version = header.get("format_version") if isinstance(header, dict) else None
    if version != LEGACY_FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: artifact format version {version!r}, this code reads version "
            f"{FORMAT_VERSION}; retrain the model with this version"
        )
    for key in ("payload_length", "payload_sha256", "metadata"):
        if key not in header:
            raise ArtifactError(f"{path}: corrupt header: missing {key!r}")
    return header, start + length
