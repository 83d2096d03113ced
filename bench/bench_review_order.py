"""Benchmark: what one "teach the model most" batch costs at 10,000 unlabelled images (issue 25).

`portal.services.curation.review_order.compute_batch` decodes the stored float16 embeddings and runs
`classifier.active.select_batch`; this times both on synthetic embeddings shaped like the production
model's (2,048 dims, float16, 40 clustered series), with the service's `sampler_dims=32` (the cold start
clusters a PCA of the embeddings, `classifier.active.compact`; `--sampler-dims 0`: the raw 2,048), in the cold-start phase (some category under its
minimum: KMeans into labelled + 20 clusters over every image, then nearest neighbours inside the chosen
clusters) and the margin phase (KMeans of the 100 most uncertain only). The database read is not included.

    .venv/bin/python bench/bench_review_order.py [--images 10000] [--labelled 50] [--repeats 3] [--sampler-dims 32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@contextmanager
def timed(into: list):
    """Append (wall seconds, this process's CPU seconds): on a shared machine the two differ."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    into.append((time.perf_counter() - wall, time.process_time() - cpu))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--labelled", type=int, default=50)
    parser.add_argument("--dims", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sampler-dims", type=int, default=32, help="PCA before select_batch (0: none)")
    args = parser.parse_args()
    from classifier.active import compact, select_batch

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (40, args.dims))
    series = rng.integers(0, 40, args.images)
    vectors = (centres[series] + rng.normal(0, 0.5, (args.images, args.dims))).astype("<f2")
    blobs = [row.tobytes() for row in vectors]  # what the Embedding rows hold
    classes = [f"class{i}" for i in range(10)]
    labelled = np.zeros(args.images, bool)
    labelled[rng.choice(args.images, args.labelled, replace=False)] = True
    labels = [classes[s % 10] if known else None for s, known in zip(series, labelled)]
    logits = rng.normal(0, 2, (args.images, 10))
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)

    def decode():
        matrix = np.empty((len(blobs), args.dims), dtype=np.float32)
        for index, blob in enumerate(blobs):
            matrix[index] = np.frombuffer(blob, dtype="<f2")
        return matrix

    timings = {
        "decode": [],
        "PCA (part of the cold start)": [],
        "cold start (typical), PCA included": [],
        "margin + diversity": [],
    }
    for repeat in range(args.repeats):
        with timed(timings["decode"]):
            matrix = decode()
        with timed(timings["PCA (part of the cold start)"]):
            compact(matrix, args.sampler_dims, repeat)
        for name, minimum in (("cold start (typical), PCA included", 10**6), ("margin + diversity", 1)):
            with timed(timings[name]):
                picks = select_batch(
                    matrix,
                    labelled,
                    labels,
                    probabilities,
                    20,
                    minimum,
                    repeat,
                    class_names=classes,
                    sampler_dims=args.sampler_dims,
                )
            assert len(picks) == 20
    print(
        f"{args.images} images ({args.labelled} labelled), {args.dims} dims, sampler dims "
        f"{args.sampler_dims or args.dims}, {args.repeats} repeats:"
    )
    for name, values in timings.items():
        wall = [w for w, _ in values]
        cpu = [c for _, c in values]
        print(
            f"  {name}: wall median {statistics.median(wall):.2f} s (min {min(wall):.2f}, max {max(wall):.2f}); "
            f"CPU of this process median {statistics.median(cpu):.2f} s"
        )


if __name__ == "__main__":
    main()
