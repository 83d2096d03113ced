"""Peak memory of one upload's decoding work, measured in a fresh process.

    python -m tests.security.memory_probe FILE [FILE ...]

For each file, runs what ingestion does between spooling and storing (sniffing, header checks, full
decode, metadata, data-bar crop, derivative and thumbnail: `portal.services.ingestion.ingest_examine.examine`) and prints
one JSON line: {"file", "outcome" ("accepted" or the refusal code), "message", "peak_bytes", "seconds"}.
`peak_bytes` is how far the process's peak resident set grew above what it was before the file (after
the imports and a warm-up on a small image), so the files must be probed in increasing order of expected
memory, or one process per file (the default of `probe()`). Pillow's and libtiff's pixel buffers are not
Python allocations, so tracemalloc cannot see them: ru_maxrss can.

`--limit-bytes N` caps the process's address space above its size after the warm-up (RLIMIT_AS), so a
regression ends in a MemoryError instead of swapping the test machine.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _vm_size_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str]) -> int:
    limit = None
    if argv[:1] == ["--limit-bytes"]:
        limit, argv = int(argv[1]), argv[2:]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    import io
    import tempfile

    import numpy as np
    from PIL import Image

    from portal.services.ingestion.ingest_examine import examine
    from portal.services.ingestion.validation_errors import ValidationError

    buffer = io.BytesIO()
    Image.fromarray((np.arange(64 * 48) % 251).astype(np.uint8).reshape(48, 64)).save(buffer, "PNG")
    with tempfile.NamedTemporaryFile(suffix=".png") as warm:  # lazy imports and first-use allocations
        warm.write(buffer.getvalue())
        warm.flush()
        examine(warm.name, buffer.getvalue()[:1024], "warm.png")
    if limit is not None:
        budget = _vm_size_bytes() + limit
        resource.setrlimit(resource.RLIMIT_AS, (budget, budget))
    for file in argv:
        head = Path(file).read_bytes()[:1024]
        before = _rss_peak_bytes()
        started = time.monotonic()
        try:
            examine(file, head, Path(file).name)
            outcome, message = "accepted", ""
        except ValidationError as error:
            outcome, message = error.code, error.message
        except MemoryError as error:
            outcome, message = "MemoryError", str(error)
        print(
            json.dumps(
                {
                    "file": Path(file).name,
                    "outcome": outcome,
                    "message": message,
                    "peak_bytes": _rss_peak_bytes() - before,
                    "process_peak_bytes": _rss_peak_bytes(),  # the whole interpreter's, imports included
                    "seconds": round(time.monotonic() - started, 3),
                }
            ),
            flush=True,
        )
    return 0


def probe(
    path: Path, *, limit_bytes: int | None = None, env: dict[str, str | None] | None = None, timeout_s: float = 300
) -> dict:
    """Probe one file in a fresh interpreter; returns its JSON line as a dict. `env` overrides the
    environment (None removes a variable: its default applies)."""
    command = [sys.executable, "-m", "tests.security.memory_probe"]
    if limit_bytes is not None:
        command += ["--limit-bytes", str(limit_bytes)]
    environment = dict(os.environ)
    for name, value in (env or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    done = subprocess.run(
        command + [str(path)], cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=timeout_s
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise AssertionError(f"memory probe failed ({done.returncode}): {done.stderr[-3000:]}")
    return json.loads(lines[-1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
