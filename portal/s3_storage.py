"""Media and model files on S3-compatible object storage (AWS S3, MinIO, Ceph RGW), through django-storages.

The guarantees of `portal.storage.MediaStorage`, in object-storage terms:

- No half-written file under a real name: an object becomes visible only when its upload completes. boto3
  uploads small files in one PUT and large ones as a multipart upload that it aborts when a part fails; a
  process killed mid-upload leaves an unfinished multipart upload (invisible, but billed), which the sweeper
  aborts after an hour (`remove_stale_partials`).
- Content-addressed names are idempotent: each object carries the sha256 of its bytes in its metadata, so an
  upload that finds the name taken by the same bytes reuses the object (its modification time refreshed for
  the sweeper's grace period), and one that finds other bytes gets a new name, as Django does.
- Downloads never leave the access checks: the views check first, then stream the object (`open_stream`) or
  hand out a signed URL that expires after SEM_SIGNED_URL_EXPIRY_S (`signed_url`).
"""

from __future__ import annotations

import threading

from botocore.exceptions import ClientError
from django.core.files import File
from django.core.files.utils import validate_file_name
from storages.backends.s3 import S3Storage

from classifier.fingerprint import file_sha256

SHA256_METADATA = "sha256"
MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


class S3MediaStorage(S3Storage):
    # The digest of the upload in progress, per thread: one storage instance serves every thread.
    _writing = threading.local()

    def _save(self, name, content):
        return self._put(name, content, _sha256_of(content))

    def _put(self, name, content, sha256: str) -> str:
        # Every object records the sha256 of its bytes: content-addressed reuse and the worker cache check it.
        self._writing.sha256 = sha256
        try:
            return super()._save(name, content)
        finally:
            self._writing.sha256 = None

    def get_object_parameters(self, name):
        parameters = dict(super().get_object_parameters(name))
        digest = getattr(self._writing, "sha256", None)
        if digest:
            parameters["Metadata"] = {**parameters.get("Metadata", {}), SHA256_METADATA: digest}
        return parameters

    def get_modified_time(self, name):
        try:
            return super().get_modified_time(name)
        except ClientError as error:  # as the file-system backend says it
            if str(error.response.get("Error", {}).get("Code")) in MISSING_CODES:
                raise FileNotFoundError(name) from error
            raise

    def save_content_addressed(self, name: str, content, max_length: int | None = None) -> tuple[str, bool]:
        """Store `content` under `name`, a name derived from the bytes; returns (name, created).
        The same contract as MediaStorage.save_content_addressed."""
        validate_file_name(name, allow_relative_path=True)
        if not hasattr(content, "chunks"):
            content = File(content, name)
        digest = _sha256_of(content)
        while True:
            stored = self.stored_sha256(name)
            if stored is None:
                return self._put(name, content, digest), True  # hashed once, above
            if stored == digest:
                self._touch(name)
                return name, False
            name = self.get_available_name(name, max_length=max_length)

    def stored_sha256(self, name: str) -> str | None:
        """The sha256 of the object's bytes (from its metadata, else by reading it); None when absent."""
        try:
            head = self.connection.meta.client.head_object(Bucket=self.bucket_name, Key=self._normalize_name(name))
        except ClientError as error:
            if str(error.response.get("Error", {}).get("Code")) in MISSING_CODES:
                return None
            raise
        recorded = head.get("Metadata", {}).get(SHA256_METADATA)
        if recorded:
            return recorded
        with self.open_stream(name) as body:  # written by another tool: hash the bytes themselves
            return file_sha256(body)

    def open_stream(self, name: str):
        """A readable, unbuffered stream of the object (for responses: nothing spooled to disk first).
        Raises FileNotFoundError when the object does not exist."""
        try:
            response = self.connection.meta.client.get_object(Bucket=self.bucket_name, Key=self._normalize_name(name))
        except ClientError as error:
            if str(error.response.get("Error", {}).get("Code")) in MISSING_CODES:
                raise FileNotFoundError(name) from error
            raise
        return response["Body"]

    def signed_url(self, name: str, *, expire_s: int, filename: str, content_type: str, attachment: bool) -> str:
        """A GET URL that works for `expire_s` seconds and names the file as the streamed response would."""
        disposition = "attachment" if attachment else "inline"
        return self.url(
            name,
            parameters={
                "ResponseContentDisposition": f"{disposition}; filename*=UTF-8''{_quote(filename)}",
                "ResponseContentType": content_type,
            },
            expire=expire_s,
        )

    def remove_stale_partials(self, older_than_s: float) -> int:
        """Abort this storage's multipart uploads started more than `older_than_s` ago (a process killed
        mid-upload); returns how many."""
        import datetime

        client = self.connection.meta.client
        cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=older_than_s)
        prefix = self._normalize_name("") if self.location else ""
        aborted = 0
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket_name, Prefix=prefix):
            for upload in page.get("Uploads", []):
                if upload["Initiated"] < cutoff:
                    client.abort_multipart_upload(
                        Bucket=self.bucket_name, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
        return aborted

    def _touch(self, name: str) -> None:
        """Refresh the object's modification time (a copy onto itself), keeping its metadata."""
        key = self._normalize_name(name)
        client = self.connection.meta.client
        try:
            head = client.head_object(Bucket=self.bucket_name, Key=key)
            client.copy_object(
                Bucket=self.bucket_name,
                Key=key,
                CopySource={"Bucket": self.bucket_name, "Key": key},
                Metadata=head.get("Metadata", {}),
                ContentType=head.get("ContentType", self.default_content_type),
                MetadataDirective="REPLACE",
            )
        except ClientError as error:
            if str(error.response.get("Error", {}).get("Code")) not in MISSING_CODES:
                raise


def _sha256_of(content) -> str:
    """sha256 of a file-like object's bytes, read from the start; the position is left at the start."""
    if hasattr(content, "seek"):
        content.seek(0)
    digest = file_sha256(content)
    if hasattr(content, "seek"):
        content.seek(0)
    return digest


def _quote(filename: str) -> str:
    from urllib.parse import quote

    return quote(filename, safe="")
