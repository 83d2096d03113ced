#!/usr/bin/env python3
"""Upload a folder of SEM images for one sample, wait for their classifications, print them.

A minimal LIMS integration for the SEM lab portal's REST API; it needs only `requests`.

    export SEM_API_TOKEN=sem_...          # from http://127.0.0.1:8000/account/tokens/
    python examples/lims_client.py --url http://127.0.0.1:8000 --sample S-2024-0042 ./images/

Uploads are idempotent: each file is sent with an Idempotency-Key derived from the sample and the
file's content, so re-running the script after a network error never stores an image twice
(already stored images answer 200 instead of 201). Create the sample first if it does not exist
(--create-sample with --project), or look it up by its LIMS ID (--lims-id).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import requests

IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"}
DONE_STATUSES = {"classified", "out_of_scope", "failed", "no_model"}


class PortalError(Exception):
    pass


class Portal:
    def __init__(self, base_url: str, token: str, timeout: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        for attempt in range(5):
            response = self.session.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
            if response.status_code != 429:
                return response
            time.sleep(float(response.headers.get("Retry-After", 2**attempt)))  # throttled: wait as told
        return response

    def json(self, method: str, path: str, expected=(200,), **kwargs) -> dict:
        response = self.request(method, path, **kwargs)
        if response.status_code not in expected:
            raise PortalError(describe_error(response))
        return response.json()

    def find_sample(self, lab_sample_id: str | None, lims_id: str | None) -> dict | None:
        if lims_id:
            response = self.request("GET", f"/api/samples/by-lims/{requests.utils.quote(lims_id, safe='')}/")
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise PortalError(describe_error(response))
            return response.json()
        results = self.json("GET", "/api/samples/", params={"lab_sample_id": lab_sample_id})["results"]
        return results[0] if results else None

    def create_sample(self, project: int, lab_sample_id: str, name: str, lims_id: str | None) -> dict:
        payload = {"project": project, "lab_sample_id": lab_sample_id, "name": name, "lims_id": lims_id}
        return self.json("POST", "/api/samples/", expected=(201,), json=payload)

    def upload(self, path: Path, sample_id: int) -> tuple[dict, bool]:
        data = path.read_bytes()
        key = f"lims-client:{sample_id}:{hashlib.sha256(data).hexdigest()}"
        response = self.request(
            "POST",
            "/api/images/",
            data={"sample": sample_id},
            files={"file": (path.name, data)},
            headers={"Idempotency-Key": key},
        )
        if response.status_code not in (200, 201):
            raise PortalError(describe_error(response))
        return response.json(), response.status_code == 201

    def image(self, image_id: int) -> dict:
        return self.json("GET", f"/api/images/{image_id}/")


def describe_error(response: requests.Response) -> str:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"
    fields = "; ".join(
        f"{name}: {' '.join(map(str, messages)) if isinstance(messages, list) else messages}"
        for name, messages in (error.get("fields") or {}).items()
    )
    return f"HTTP {response.status_code} {error['code']}: {error['message']}" + (f" ({fields})" if fields else "")


def image_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)


def wait_for_classification(portal: Portal, image_ids: list[int], timeout: float, interval: float) -> dict[int, dict]:
    deadline = time.monotonic() + timeout
    latest: dict[int, dict] = {}
    waiting = list(image_ids)
    while waiting:
        for image_id in list(waiting):
            latest[image_id] = portal.image(image_id)
            if latest[image_id]["status"] in DONE_STATUSES:
                waiting.remove(image_id)
        if not waiting or time.monotonic() > deadline:
            break
        print(f"  waiting for {len(waiting)} classification(s)...", file=sys.stderr)
        time.sleep(interval)
    return latest


def print_table(images: dict[int, dict]) -> None:
    """One row per image. The prediction set (at the lab's coverage) is what to trust: one category is a
    confident prediction; "out_of_scope" means the image is unlike anything the model learnt from."""
    print(f"{'id':>7}  {'file':<32} {'status':<12} {'prediction':<26} {'confidence':>10}  {'model':<5}  set")
    for image in images.values():
        confidence = image["predicted_confidence"]
        print(
            f"{image['id']:>7}  {image['original_filename'][:32]:<32} {image['status']:<12} "
            f"{(image['predicted_category'] or '-'):<26} "
            f"{(f'{confidence:.3f}' if confidence is not None else '-'):>10}  "
            f"{image['predicted_model_version'] or '-'!s:<5}  {image.get('predicted_set_label') or '-'}"
        )
    outside = [image["id"] for image in images.values() if image.get("out_of_scope")]
    if outside:
        print(
            f"{len(outside)} image(s) out of scope (unlike anything the model learnt from; do not rely on "
            f"their prediction): {', '.join(map(str, outside))}",
            file=sys.stderr,
        )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Upload a folder of SEM images for one sample to the SEM lab portal, wait for the "
        "classifications and print them."
    )
    parser.add_argument("folder", type=Path, help="folder with .tif/.png/.jpg/.bmp images")
    parser.add_argument(
        "--url",
        default=os.environ.get("SEM_PORTAL_URL", "http://127.0.0.1:8000"),
        help="portal base URL (default: $SEM_PORTAL_URL or http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("SEM_API_TOKEN"),
        help="API token (default: $SEM_API_TOKEN); create one at /account/tokens/",
    )
    target = parser.add_argument_group("sample (give --sample or --lims-id)")
    target.add_argument("--sample", dest="lab_sample_id", help="lab sample ID")
    target.add_argument("--lims-id", help="the sample's LIMS ID")
    target.add_argument("--create-sample", action="store_true", help="create the sample if it does not exist")
    target.add_argument("--project", type=int, help="project id for --create-sample (see /api/projects/)")
    target.add_argument("--name", help="sample name for --create-sample (default: the lab sample ID)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for classifications")
    parser.add_argument("--interval", type=float, default=3, help="seconds between status polls")
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("an API token is required: --token or $SEM_API_TOKEN")
    if not (args.lab_sample_id or args.lims_id):
        parser.error("name the sample with --sample or --lims-id")
    if args.create_sample and not (args.project and args.lab_sample_id):
        parser.error("--create-sample needs --project and --sample")
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    portal = Portal(args.url, args.token)
    try:
        sample = portal.find_sample(args.lab_sample_id, args.lims_id)
        if sample is None and args.create_sample:
            sample = portal.create_sample(
                args.project, args.lab_sample_id, args.name or args.lab_sample_id, args.lims_id
            )
            print(f"created sample {sample['lab_sample_id']} (id {sample['id']})", file=sys.stderr)
        if sample is None:
            print("no such sample in your projects (use --create-sample to create it)", file=sys.stderr)
            return 2
        uploaded: list[int] = []
        for path in image_files(args.folder):
            try:
                image, created = portal.upload(path, sample["id"])
            except PortalError as error:
                print(f"{path.name}: refused: {error}", file=sys.stderr)
                continue
            print(f"{path.name}: {'stored' if created else 'already stored'} as image {image['id']}", file=sys.stderr)
            uploaded.append(image["id"])
        if not uploaded:
            print("nothing uploaded", file=sys.stderr)
            return 1
        print_table(wait_for_classification(portal, uploaded, args.timeout, args.interval))
    except (PortalError, requests.RequestException) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
