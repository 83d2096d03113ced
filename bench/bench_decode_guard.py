"""Issue 22: what the capped decoding child costs per upload, and the peak memory of each structure bomb.

    DATABASE_URL=... .venv/bin/python bench/bench_decode_guard.py [--rounds 5] [--no-bombs]

Part 1 runs `examine` (everything an upload decodes and derives) on the same files in this process and
through `run_guarded` (a child forked from the forkserver, RLIMIT_AS, deadline), interleaved, and prints the
median of each side by side with their ratio; the forkserver's one-time start is timed separately.
Part 2 probes each bomb of tests/security/bombs.py in a fresh process (tests/security/memory_probe.py) with
the default limits and prints its outcome, peak resident memory and time.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from multiprocessing import forkserver
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


def _files() -> dict[str, bytes]:
    import numpy as np
    from PIL import Image

    from tests.security.bombs import tiff_strip_bomb

    buffer = io.BytesIO()
    Image.fromarray((np.arange(768 * 1024) % 251).astype(np.uint8).reshape(768, 1024)).save(buffer, "PNG")
    return {
        "1024x768 8-bit PNG": buffer.getvalue(),
        "2048x1536 16-bit TIFF": tiff_strip_bomb(2048, 1536, bits=16, ramp=True),
        "6144x4096 8-bit TIFF": tiff_strip_bomb(6144, 4096, ramp=True),
    }


def overhead(rounds: int) -> None:
    from portal.services.ingestion.decode_guard import run_guarded
    from portal.services.ingestion.ingest_examine import examine

    started = time.perf_counter()
    run_guarded(len, "warm")  # the forkserver starts once per process: Django and the decoders imported
    print(f"forkserver start (once per web/worker process): {1000 * (time.perf_counter() - started):.0f} ms")
    print(f"forkserver resident memory: {_resident_mib(forkserver._forkserver._forkserver_pid):.0f} MiB")
    print(f"guarded call of a no-op (fork, cap, pipe, exit): {_median(run_guarded, len, 'x'):.1f} ms")
    print("| file | in process (ms) | capped child (ms) | child / in process | overhead (ms) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name, data in _files().items():
            path = Path(folder) / "upload.bin"
            path.write_bytes(data)
            args = (str(path), data[:1024], name)
            inline, guarded = [], []
            for _ in range(rounds):  # interleaved: the shared machine's load hits both sides alike
                inline.append(_timed(examine, *args))
                guarded.append(_timed(run_guarded, examine, *args))
            a, b = statistics.median(inline), statistics.median(guarded)
            print(f"| {name} | {a:.0f} | {b:.0f} | {b / a:.2f} | {b - a:+.0f} |")


def _resident_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _timed(call, *args) -> float:
    started = time.perf_counter()
    call(*args)
    return 1000 * (time.perf_counter() - started)


def _median(call, *args, count: int = 20) -> float:
    return statistics.median(_timed(call, *args) for _ in range(count))


def bombs() -> None:
    from tests.security import bombs as b
    from tests.security.memory_probe import probe

    cases = {f"tile bomb 2000x2000, one 32768x32768 tile, {c}": b.tile_bomb(c) for c in b.COMPRESSIONS}
    cases |= {f"strip table 1000x1000, 1,000,000 entries, {c}": b.strip_table_bomb(c) for c in b.COMPRESSIONS}
    cases |= {f"4000x4000, 1 of 62,500 tiles, {c}": b.truncated_tiles(c) for c in b.COMPRESSIONS}
    cases |= {f"1000x1000, 1 of 125 strips, {c}": b.truncated_strips(c) for c in b.COMPRESSIONS}
    cases["JPEG declaring 10000x10000, 64x64 of data"] = b.jpeg_truncated()
    cases["800x800, 400 samples per pixel"] = b.many_samples()
    print("| file | size | outcome | peak memory added by the file | whole process peak | time |")
    print("|---|---|---|---|---|---|")
    defaults = {"SEM_MAX_IMAGE_PIXELS": None, "SEM_MAX_DECODED_BYTES": None, "SEM_MAX_ASPECT_RATIO": None}
    with tempfile.TemporaryDirectory() as folder:
        for name, data in cases.items():
            path = Path(folder) / "bomb.bin"
            path.write_bytes(data)
            result = probe(path, limit_bytes=3 * 1024**3, env=defaults)
            print(
                f"| {name} | {len(data):,} B | {result['outcome']} | {result['peak_bytes'] / 1024**2:,.1f} MiB "
                f"| {result['process_peak_bytes'] / 1024**2:,.0f} MiB | {result['seconds']:.2f} s |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-bombs", action="store_true")
    args = parser.parse_args()
    import django

    django.setup()
    overhead(args.rounds)
    if not args.no_bombs:
        bombs()


if __name__ == "__main__":
    main()
