"""End-to-end check of a watch folder against a running portal (`make run`), as a lab would use it.

1. Logs in to the admin in Chromium (Playwright, Debian's /usr/bin/chromium) with var/admin-credentials.txt
   and adds a watch folder: SHARE, the first project, a sub-folder per sample (created when missing),
   poll every 10 s, settle 5 s.
2. Copies the instrument TIFFs of SOURCE into SHARE/<sample id>/ the way an instrument writes them:
   slowly, in 64 KiB chunks, plus a half-written file that stays incomplete for a while and a temporary
   `~$` file that must never be ingested.
3. Waits until every copied image is on Browse, classified, with its sample; opens each image page and
   checks the instrument metadata is shown; checks through the API that each is stored exactly once.
4. Saves screenshots (admin form, Inbox, Browse, an image page) into OUT.

    .venv/bin/python scripts/check_watch_folder.py --source ../shared/sem-vendor-tiff --share /tmp/sem-share \\
        --out var/e2e-watch [--url http://127.0.0.1:8000]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

CHUNK = 64 * 1024
CHUNK_PAUSE_S = 0.02
SAMPLES = ("WATCH-A", "WATCH-B")
TIMEOUT_S = 1800


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, type=Path, help="a folder of SEM images (TIFFs with metadata)")
    parser.add_argument("--share", required=True, type=Path, help="the folder to watch (created, must be empty)")
    parser.add_argument("--out", required=True, type=Path, help="where the screenshots go")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--credentials", default="var/admin-credentials.txt", type=Path)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    from playwright.sync_api import sync_playwright

    username, password = [part.strip() for part in args.credentials.read_text().split("/", 1)]
    images = sorted(path for path in args.source.iterdir() if path.suffix.lower() in (".tif", ".tiff"))
    args.share.mkdir(parents=True, exist_ok=True)
    if any(args.share.iterdir()):
        sys.exit(f"{args.share} is not empty")
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        log_in(page, args.url, username, password)
        add_watch_folder(page, args.url, args.share, args.out)
        expected = copy_like_an_instrument(images, args.share)
        found = wait_on_browse(page, args.url, expected, args.out)
        failures = check_image_pages(page, args.url, found, args.out)
        failures += check_exactly_once(page, args.url, expected)
        page.goto(f"{args.url}/inbox/")
        page.screenshot(path=str(args.out / "inbox.png"), full_page=True)
        print(f"Inbox: {page.locator('main').inner_text()[:600]}")
        browser.close()
    for failure in failures:
        print(f"FAILED: {failure}")
    print("OK: every image appeared once, classified, with its sample and metadata" if not failures else "")
    return 1 if failures else 0


def log_in(page, url: str, username: str, password: str) -> None:
    page.goto(f"{url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(f"{url}/admin/")


def add_watch_folder(page, url: str, share: Path, out: Path) -> None:
    page.goto(f"{url}/admin/portal/watchfolder/add/")
    page.fill("#id_path", str(share.resolve()))
    page.select_option("#id_project", index=1)
    page.select_option("#id_sample_rule", "subfolder")
    page.check("#id_create_missing_samples")
    page.fill("#id_poll_interval_s", "10")
    page.fill("#id_settle_s", "5")
    page.screenshot(path=str(out / "admin-watch-folder.png"), full_page=True)
    page.click("input[name=_save]")
    page.wait_for_url(f"{url}/admin/portal/watchfolder/")
    print(f"watch folder added: {share}")


def copy_like_an_instrument(images: list[Path], share: Path) -> dict[str, str]:
    """Write each image slowly into a sample folder; returns {file name: sample id}."""
    expected = {}
    for number, image in enumerate(images):
        sample = SAMPLES[number % len(SAMPLES)]
        (share / sample).mkdir(exist_ok=True)
        write_slowly(image, share / sample / image.name)
        expected[image.name] = sample
    # A temporary file of the instrument software: never ingested.
    (share / SAMPLES[0] / "~$scan.tmp").write_bytes(b"\0" * 1000)
    # A file that stays half-written for 40 s (a stalled copy), then completes: ingested whole, once.
    stalled = images[0]
    target = share / SAMPLES[1] / f"stalled-{stalled.name}"
    data = stalled.read_bytes()
    with open(target, "wb") as handle:
        handle.write(data[: len(data) // 2])
    threading.Timer(40, lambda: target.write_bytes(data)).start()
    print(f"copied {len(images)} images into {', '.join(SAMPLES)}; one stalled copy completes in 40 s")
    return expected


def write_slowly(source: Path, target: Path) -> None:
    with open(source, "rb") as reading, open(target, "wb") as writing:
        while chunk := reading.read(CHUNK):
            writing.write(chunk)
            writing.flush()
            os.fsync(writing.fileno())
            time.sleep(CHUNK_PAUSE_S)


def wait_on_browse(page, url: str, expected: dict[str, str], out: Path) -> dict[str, int]:
    """{file name: image id} once every expected file is on Browse and classified."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        rows = api_images(page, url)
        found = {row["original_filename"]: row for row in rows if row["original_filename"] in expected}
        classified = [name for name, row in found.items() if row["status"] == "classified"]
        print(f"  {len(found)}/{len(expected)} stored, {len(classified)} classified")
        if len(classified) == len(expected) or time.monotonic() > deadline:
            break
        time.sleep(15)
    page.goto(f"{url}/browse/")
    page.screenshot(path=str(out / "browse.png"), full_page=True)
    return {name: row["id"] for name, row in found.items()}


def api_images(page, url: str) -> list[dict]:
    rows, next_url = [], f"{url}/api/images/?page_size=200"
    while next_url:
        body = page.request.get(next_url).json()
        rows += body["results"]
        next_url = body.get("next")
    return rows


def check_image_pages(page, url: str, found: dict[str, int], out: Path) -> list[str]:
    failures = []
    for number, (name, image_id) in enumerate(sorted(found.items())):
        page.goto(f"{url}/images/{image_id}/")
        text = page.locator("main").inner_text()
        if not any(word in text for word in ("Instrument", "instrument", "Accelerating", "kV")):
            failures.append(f"{name}: no instrument metadata on its page")
        if not any(sample in text for sample in SAMPLES):
            failures.append(f"{name}: its sample is not on its page")
        if number == 0:
            page.screenshot(path=str(out / "image-page.png"), full_page=True)
    return failures


def check_exactly_once(page, url: str, expected: dict[str, str]) -> list[str]:
    rows = api_images(page, url)
    failures = []
    for name, sample in expected.items():
        matching = [row for row in rows if row["original_filename"] == name]
        if len(matching) != 1:
            failures.append(f"{name}: stored {len(matching)} times")
        elif sample not in str(matching[0].get("lab_sample_id")):
            failures.append(f"{name}: sample {matching[0].get('sample')!r}, expected {sample}")
    if any(row["original_filename"].startswith("~$") for row in rows):
        failures.append("the temporary ~$ file was ingested")
    # The stalled copy has the bytes of an image already stored: once complete it is that image's duplicate;
    # its half-written state must never have become an image of its own.
    if any(row["original_filename"].startswith("stalled-") for row in rows):
        failures.append("the stalled copy was stored as an image of its own")
    return failures


if __name__ == "__main__":
    sys.exit(main())
