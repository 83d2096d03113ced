"""JEOL/Hitachi `.txt` sidecars next to a watched image: read with the metadata parsers
(metadata.parse_sidecar) and attached to the new image when the file itself carried no metadata."""

from __future__ import annotations

import os

from portal.models import SEMImage
from portal.services.ingestion.metadata import TYPED_FIELDS, parse_sidecar

MAX_SIDECAR_BYTES = 1024 * 1024


def sidecar_path(image_path: str) -> str | None:
    """`image.txt` (any case of .txt) next to `image.tif`, if present."""
    directory, name = os.path.split(image_path)
    stem = os.path.splitext(name)[0]
    for candidate in (f"{stem}.txt", f"{stem}.TXT", f"{stem}.Txt"):
        full = os.path.join(directory, candidate)
        if os.path.isfile(full):
            return full
    return None


def read_sidecar(image_path: str) -> tuple[str, dict] | None:
    path = sidecar_path(image_path)
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SIDECAR_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_SIDECAR_BYTES:
        return None
    text = data.decode("utf-8") if _is_utf8(data) else data.decode("latin-1")
    parsed = parse_sidecar(text.replace("\x00", ""))
    return (os.path.basename(path), parsed) if parsed else None


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def attach_sidecar(image: SEMImage, image_path: str) -> bool:
    """Fill a new image's instrument metadata from its sidecar, unless the file itself carried some."""
    if image.vendor:
        return False  # FEI/Zeiss/TESCAN (or embedded JEOL/Hitachi text): the file's own metadata wins
    found = read_sidecar(image_path)
    if not found:
        return False
    name, parsed = found
    values = {key: parsed[key] for key in TYPED_FIELDS}
    values["metadata"] = {**(image.metadata or {}), **parsed["raw"], "sidecar": name}
    SEMImage.objects.filter(pk=image.pk).update(**values)
    for key, value in values.items():
        setattr(image, key, value)
    return True
