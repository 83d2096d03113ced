"""Media and models on a real S3 API over HTTP: moto's standalone S3 server (MinIO cannot be installed
here), driven through boto3 and django-storages exactly as production drives MinIO or AWS.

``s3_server``   (session) the server's endpoint URL.
``s3``          this test's own buckets on it, with the test's Django settings switched to them (media in
                one bucket, under a prefix; models in another); ``s3.env`` holds the same settings as
                environment variables for worker processes, ``s3.client`` is a boto3 client.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

import pytest

from tests.faults.conftest import free_port

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the S3 server logs every request

ACCESS = {"S3_ACCESS_KEY_ID": "test-access", "S3_SECRET_ACCESS_KEY": "test-secret", "S3_REGION": "us-east-1"}
MEDIA_PREFIX = "lab"


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@dataclass
class S3Setup:
    endpoint: str
    media_bucket: str
    model_bucket: str
    env: dict
    client: object

    def keys(self, bucket: str, prefix: str = "") -> set[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {entry["Key"] for page in pages for entry in page.get("Contents", [])}

    def media_keys(self) -> set[str]:
        return self.keys(self.media_bucket)


def s3_client(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS["S3_ACCESS_KEY_ID"],
        aws_secret_access_key=ACCESS["S3_SECRET_ACCESS_KEY"],
        region_name=ACCESS["S3_REGION"],
    )


@pytest.fixture
def s3(settings, s3_server, tmp_path) -> S3Setup:
    suffix = secrets.token_hex(4)
    media_bucket, model_bucket = f"media-{suffix}", f"models-{suffix}"
    client = s3_client(s3_server)
    for bucket in (media_bucket, model_bucket):
        client.create_bucket(Bucket=bucket)
    env = {
        **ACCESS,
        "S3_ENDPOINT_URL": s3_server,
        "MEDIA_STORAGE_URL": f"s3://{media_bucket}/{MEDIA_PREFIX}",
        "MODEL_STORAGE_URL": f"s3://{model_bucket}",
    }
    options = {
        **settings.S3_OPTIONS,
        "endpoint_url": s3_server,
        "access_key": ACCESS["S3_ACCESS_KEY_ID"],
        "secret_key": ACCESS["S3_SECRET_ACCESS_KEY"],
    }
    backend = "portal.s3_storage.S3MediaStorage"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": backend, "OPTIONS": {**options, "bucket_name": media_bucket, "location": MEDIA_PREFIX}},
        "models": {"BACKEND": backend, "OPTIONS": {**options, "bucket_name": model_bucket, "location": ""}},
    }
    settings.SEM_WORKER_CACHE_DIR = tmp_path / "test-process-cache"
    return S3Setup(s3_server, media_bucket, model_bucket, env, client)


def local_files(folder) -> list[str]:
    """Every file under `folder` (an empty list when it does not exist)."""
    from pathlib import Path

    root = Path(folder)
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()) if root.exists() else []
