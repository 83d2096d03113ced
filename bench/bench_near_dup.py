"""Which perceptual hash of the derivative survives re-saving, and how fast is the lookup at 100,000 images.

Part 1 (robustness): every real image of `../shared/sem-real*` goes through the ingestion service's own
decoding and derivative (`inspect_image` + `make_derived_files`), as do its re-saved copies: PNG <-> TIFF,
8 -> 16 bit, brightness +-10 %, JPEG q85, and centred / corner crops of 5 and 10 % per side. For each hash
(imagehash's average, perceptual, difference and wavelet hashes, 64 bits each) it prints the Hamming
distance of each copy to its original (median / max) and, for pairs of *different* images from different
sources (which must not match), the smallest distance and the share under each threshold.

Part 2 (index): 100,000 images x 11 random 64-bit hashes in the portal's table layout and indexes
(`portal.services.ingestion.near_duplicates`: four 16-bit bands), queried with the same SQL the ingestion runs
(11 probes per upload, planted near-duplicates among them); median and p95 time per upload. Needs
PostgreSQL (`BENCH_DATABASE_URL`, default postgres://postgres@127.0.0.1:5432/sem_bench_neardup).

    .venv/bin/python bench/bench_near_dup.py [--quick] [--skip-index] [--skip-hashes]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import real_data  # noqa: E402

HASHES = ("ahash", "phash", "dhash", "whash", "phash+win")  # phash+win: classifier.perceptual (chosen)


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def variants(path: Path) -> dict[str, tuple[bytes, str]]:
    """{name: (file bytes, file name)} of re-saved copies of one original."""
    original = Image.open(path)
    original.load()
    grey8 = original.convert("L") if original.mode not in ("L",) else original
    if original.mode.startswith("I"):  # 16-bit original: an 8-bit version of it
        array = np.asarray(original, dtype=np.float64)
        lo, hi = float(array.min()), float(array.max()) or 1.0
        grey8 = Image.fromarray(np.clip((array - lo) * 255.0 / max(hi - lo, 1.0), 0, 255).astype(np.uint8))
    w, h = grey8.size
    out = {
        "png": (_encode(grey8, "PNG"), "copy.png"),
        "tiff": (_encode(grey8, "TIFF"), "copy.tif"),
        "16bit": (_encode(Image.fromarray(np.asarray(grey8, dtype=np.uint16) * 257), "TIFF"), "copy16.tif"),
        "jpeg85": (_encode(grey8, "JPEG", quality=85), "copy.jpg"),
        "bright+10%": (_encode(ImageEnhance.Brightness(grey8).enhance(1.10), "PNG"), "b.png"),
        "bright-10%": (_encode(ImageEnhance.Brightness(grey8).enhance(0.90), "PNG"), "d.png"),
    }
    for share in (0.05, 0.10):
        dx, dy = int(w * share), int(h * share)
        out[f"crop{int(share * 100)}%centre"] = (_encode(grey8.crop((dx, dy, w - dx, h - dy)), "PNG"), "c.png")
        out[f"crop{int(share * 100)}%corner"] = (_encode(grey8.crop((0, 0, w - 2 * dx, h - 2 * dy)), "PNG"), "k.png")
    return out, grey8


def hashes_of(data: bytes, filename: str, functions) -> dict[str, int] | None:
    import tempfile

    from portal.services.ingestion.ingest_examine import make_derived_files
    from portal.services.ingestion.validation import inspect_image
    from portal.services.ingestion.validation_errors import ValidationError
    from portal.services.ingestion.validation_sniff import sniff_format

    with tempfile.NamedTemporaryFile(suffix=Path(filename).suffix) as handle:
        handle.write(data)
        handle.flush()
        try:
            _info, grey = inspect_image(handle.name, sniff_format(data[:64], filename))
        except ValidationError:
            return None
        derived = make_derived_files(grey)
        derivative = Image.open(io.BytesIO(derived.derivative_png))
        found = {name: function(derivative) for name, function in functions.items()}
        found["phash+win"] = derived.hashes  # {window: hash}: what the ingestion stores
        return found


def part_hashes(quick: bool) -> None:
    import imagehash

    def as_int(h) -> int:
        return int(str(h), 16)

    functions = {
        "ahash": lambda im: as_int(imagehash.average_hash(im)),
        "phash": lambda im: as_int(imagehash.phash(im)),
        "dhash": lambda im: as_int(imagehash.dhash(im)),
        "whash": lambda im: as_int(imagehash.whash(im)),
    }
    images = real_data.load_images()
    if quick:
        images = images[::6]
    real_data.setup_django(ROOT / "var" / "bench-near-dup")
    distances: dict[str, dict[str, list[int]]] = {h: {} for h in HASHES}
    originals: list[tuple[str, dict[str, int]]] = []
    started = time.perf_counter()
    for image in images:
        with open(image.path, "rb") as handle:
            raw = handle.read()
        base = hashes_of(raw, image.path.name, functions)
        if base is None:
            continue
        originals.append((image.group, base))
        copies, _grey = variants(image.path)
        for name, (data, filename) in copies.items():
            found = hashes_of(data, filename, functions)
            if found is None:
                continue
            for h in HASHES:
                distances[h].setdefault(name, []).append(_distance(base[h], found[h]))
    print(
        f"{len(originals)} originals, {len(next(iter(distances['phash'].values())))} copies per kind, "
        f"{time.perf_counter() - started:.0f} s"
    )
    names = list(distances["phash"])
    print("\nHamming distance (64 bits) of each re-saved copy to its original: median / max")
    print(f"{'copy':<18}" + "".join(f"{h:>14}" for h in HASHES))
    for name in names:
        print(
            f"{name:<18}"
            + "".join(f"{statistics.median(distances[h][name]):>8.0f} /{max(distances[h][name]):>3d}" for h in HASHES)
        )
    print("\nDifferent images from different sources (must not match):")
    print(f"{'':<18}" + "".join(f"{h:>14}" for h in HASHES))
    cross = {h: [] for h in HASHES}
    for i, (group_a, a) in enumerate(originals):
        for group_b, b in originals[i + 1 :]:
            if group_a != group_b:
                for h in HASHES:
                    cross[h].append(_distance(a[h], b[h]))
    print(f"{'smallest':<18}" + "".join(f"{min(cross[h]):>14d}" for h in HASHES))
    for threshold in (6, 8, 10, 12):
        print(
            f"{'share <= ' + str(threshold):<18}"
            + "".join(f"{np.mean(np.array(cross[h]) <= threshold) * 100:>13.2f}%" for h in HASHES)
        )
    for threshold in (6, 8, 10, 12):
        print(
            f"{'copies <= ' + str(threshold):<18}"
            + "".join(
                f"{np.mean(np.concatenate([np.array(v) for v in distances[h].values()]) <= threshold) * 100:>13.1f}%"
                for h in HASHES
            )
        )
    print(f"({len(cross['phash'])} cross-source pairs)")


def part_index(quick: bool) -> None:
    """The portal's table layout and probe SQL (portal.services.ingestion.near_duplicates.probe_sql) over 100,000
    images x 11 hashes, in a scratch PostgreSQL database."""
    url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/sem_bench_neardup")
    try:
        import psycopg

        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
            database = url.rsplit("/", 1)[1]
            admin.execute(f'DROP DATABASE IF EXISTS "{database}"')
            admin.execute(f'CREATE DATABASE "{database}"')
    except Exception as error:  # no PostgreSQL here
        print(f"index part skipped: {error}")
        return
    from classifier.perceptual import RADIUS, WINDOWS, bands, to_signed
    from portal.services.ingestion.near_duplicates import probe_sql

    n = 20_000 if quick else 100_000
    rng = np.random.default_rng(0)

    def random_hash() -> int:
        return int(rng.integers(0, 2**32)) << 32 | int(rng.integers(0, 2**32))

    stored = [random_hash() for _ in range(n)]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE ph (id bigserial primary key, image_id integer, region smallint, value bigint, "
            "band0 integer, band1 integer, band2 integer, band3 integer)"
        )
        started = time.perf_counter()
        with conn.cursor() as cursor:
            with cursor.copy("COPY ph (image_id, region, value, band0, band1, band2, band3) FROM STDIN") as copy:
                for image_id, full in enumerate(stored):
                    for region in WINDOWS:
                        value = full if region == 0 else random_hash()
                        copy.write_row([image_id, region, to_signed(value), *bands(value)])
        for i in range(4):  # the migration's indexes
            conn.execute(f"CREATE INDEX ON ph (band{i})")
            conn.execute(f"CREATE INDEX ON ph (band{i}) WHERE region = 0")
        conn.execute("ANALYZE ph")
        print(f"\n{n:,} images x {len(WINDOWS)} hashes loaded and indexed in {time.perf_counter() - started:.0f} s")
        timings, found = [], 0
        for k in range(100):  # an upload = 11 probes; half of them near-duplicates (RADIUS bits flipped)
            probe = {region: random_hash() for region in WINDOWS}
            planted = k % 2 == 0
            if planted:
                value = stored[int(rng.integers(0, n))]
                for bit in rng.choice(64, size=RADIUS, replace=False):
                    value ^= 1 << int(bit)
                probe[0] = value
            started = time.perf_counter()
            hits = []
            for region, value in probe.items():
                sql, params = probe_sql("ph", value, full_only=region != 0)
                hits += conn.execute(sql, params).fetchall()
            timings.append((time.perf_counter() - started) * 1000)
            found += planted and bool(hits)
        timings.sort()
        print(
            f"near-duplicate look-up of one upload (11 probes, radius {RADIUS}) over {n:,} images: "
            f"median {statistics.median(timings):.1f} ms, p95 {timings[int(0.95 * len(timings))]:.1f} ms; "
            f"planted near-duplicates found {found}/50"
        )
        scans = []
        for value in stored[:5]:
            started = time.perf_counter()
            conn.execute(
                "SELECT image_id FROM ph WHERE bit_count((value # %s)::bit(64)) <= %s", [to_signed(value), RADIUS]
            ).fetchall()
            scans.append((time.perf_counter() - started) * 1000)
        print(
            f"for comparison, one probe as a full scan (bit_count over every row): "
            f"median {statistics.median(scans):.0f} ms (x 11 per upload)"
        )
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}"')


def _distance(a, b) -> int:
    """Hamming distance of two hashes; for window sets, the look-up's rule (whole vs any window, both ways)."""
    if isinstance(a, dict):
        return min(min((a[0] ^ v).bit_count() for v in b.values()), min((b[0] ^ v).bit_count() for v in a.values()))
    return (a ^ b).bit_count()


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _unsigned(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-index", action="store_true")
    parser.add_argument("--skip-hashes", action="store_true")
    args = parser.parse_args()
    if not args.skip_hashes:
        if not real_data.available():
            print("../shared/sem-real* not present: hash part skipped")
        else:
            part_hashes(args.quick)
    if not args.skip_index:
        real_data.setup_django(ROOT / "var" / "bench-near-dup")
        part_index(args.quick)


if __name__ == "__main__":
    main()
