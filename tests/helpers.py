"""Plain helpers shared by the test packages (no fixtures): unique small PNGs, images through the real
ingestion, and an API client with a fresh Bearer token. Import them from here, not from another
package's conftest (issue 15)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from rest_framework.test import APIClient


def png_bytes(seed: int, size: int = 48) -> bytes:
    """A small, unique greyscale PNG (a different seed gives different bytes)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def ingest_png(sample, user, seed: int, **kwargs):
    from portal.services.ingestion.ingest import ingest_file

    return ingest_file(
        io.BytesIO(png_bytes(seed)), filename=f"img-{seed}.png", sample=sample, uploaded_by=user, **kwargs
    ).image


def token_client(user) -> APIClient:
    from portal.services.delivery.tokens import create_token

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {create_token(user, 'tests').secret}")
    return client
