"""Synthetic SEM-like data for the classifier tests (no database needed)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

CLASSES = ["dots", "noise", "stripes"]


def texture(kind: str, index: int, rng: np.random.Generator) -> np.ndarray:
    """Three visually distinct textures at 64-96 px, varied sizes."""
    height, width = int(rng.integers(64, 97)), int(rng.integers(64, 97))
    noise = rng.integers(0, 256, (height, width)).astype(np.float32)
    if kind == "stripes":
        array = 128 + 100 * np.sin(np.arange(width)[None, :] / 3.0 + index) + 0.2 * (noise - 128)
    elif kind == "dots":
        blurred = Image.fromarray(noise.astype(np.uint8)).filter(ImageFilter.GaussianBlur(3))
        array = np.asarray(blurred, np.float32) * 3 - 250
    else:
        array = noise
    return np.clip(array, 0, 255).astype(np.uint8)


def make_dataset(root, per_class: dict[str, int], seed: int = 0) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    items = []
    for kind, count in per_class.items():
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            path = folder / f"{kind}_{i:02d}.png"
            Image.fromarray(texture(kind, i, rng)).save(path)
            items.append((str(path), kind))
    return items


@pytest.fixture(scope="session")
def synthetic_items(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("synthetic"), {c: 12 for c in CLASSES})


@pytest.fixture(scope="session")
def trained(synthetic_items, tmp_path_factory):
    """One tiny progressive run (32 -> 48 px, 1 epoch each), shared by tests."""
    import logging

    from classifier.config import TrainConfig
    from classifier.train import train

    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Collect(level=logging.WARNING)
    logging.getLogger("classifier").addHandler(handler)
    events: list[dict] = []
    out = tmp_path_factory.mktemp("model") / "model.semcls"
    config = TrainConfig(
        arch="resnet18", sizes=(32, 48), epochs=(1, 1), batch_sizes=(8, 8), lrs=(3e-3, 1e-3), pretrained=True, seed=7
    )
    try:
        result = train(synthetic_items, config, str(out), progress=events.append)
    finally:
        logging.getLogger("classifier").removeHandler(handler)
    return result, events, records


@pytest.fixture(scope="session")
def dataset_factory():
    """make_dataset for tests that need their own (e.g. imbalanced) data."""
    return make_dataset
