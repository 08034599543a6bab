"""S3 through boto3: folder upload/download (parallel, multipart, skip-unchanged), list, exists.

The only module of the project that imports boto3. Credentials come from the standard AWS chain
(environment, profile, instance role) and are never printed. ``AWS_ENDPOINT_URL`` (or
``BDIRNET_S3_ENDPOINT``) points at any S3-compatible server. Every failure to reach the server or to access
the bucket is a :class:`StorageError` naming the endpoint and the bucket, after bounded retries and timeouts.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MULTIPART_CHUNK_BYTES = 16 * 1024 * 1024
MAX_WORKERS = 8


class StorageError(RuntimeError):
    """One line naming the endpoint and the bucket, and which of these it is: S3 unreachable, credentials
    rejected, access denied, no such bucket, another S3 error code, or a local I/O error."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        if not uri.startswith("s3://"):
            raise ValueError(f"{uri!r}: expected an s3://bucket/prefix URI")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"{uri!r}: the URI names no bucket")
        return cls(bucket, prefix.strip("/"))

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative


def endpoint_url() -> str | None:
    """The S3 endpoint from ``BDIRNET_S3_ENDPOINT`` or ``AWS_ENDPOINT_URL`` (None: AWS itself)."""
    return os.environ.get("BDIRNET_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL") or None


def client(endpoint: str | None = None) -> Any:
    """A boto3 S3 client with bounded retries (3) and timeouts (5 s connect, 30 s read)."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=MAX_WORKERS * 2,
    )
    # A new session each time: boto3.client() would reuse the default session, whose credentials are resolved once
    # per process and would ignore a later change of AWS_ACCESS_KEY_ID or AWS_PROFILE.
    return boto3.session.Session().client("s3", endpoint_url=endpoint or endpoint_url(), config=config)


def _wrap(error: Exception, bucket: str, endpoint: str | None) -> StorageError:
    from botocore.exceptions import ClientError

    where = f"endpoint {endpoint or 'AWS default'}, bucket {bucket!r}"
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
            return StorageError(
                f"S3 rejected the credentials ({code}) at {where}: the access key is unknown, the secret is wrong or "
                "the session expired; check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the profile"
            )
        if code in ("AccessDenied", "403", "AllAccessDisabled"):
            return StorageError(
                f"S3 access denied ({code}) at {where}: the credentials are valid but not allowed this bucket or "
                "prefix; check the IAM and bucket policies"
            )
        if code in ("NoSuchBucket", "404"):
            return StorageError(f"S3 bucket not found at {where}")
        return StorageError(f"S3 error {code} at {where}: {error}")
    from botocore.exceptions import BotoCoreError, NoCredentialsError

    if isinstance(error, NoCredentialsError):
        return StorageError(
            f"no AWS credentials found for {where}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile"
        )
    if isinstance(error, OSError) and not isinstance(error, BotoCoreError):
        return StorageError(f"local I/O error ({where}): {type(error).__name__}: {error}")
    return StorageError(f"S3 unreachable at {where}: {type(error).__name__}: {error}")


def _storage_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def file_etag(path: Path, chunk_bytes: int = MULTIPART_CHUNK_BYTES) -> str:
    """The ETag S3 gives ``path`` when uploaded by :func:`upload_folder` (MD5, or multipart MD5-of-MD5s)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        if size <= chunk_bytes:
            return hashlib.md5(handle.read()).hexdigest()
        digests = []
        while chunk := handle.read(chunk_bytes):
            digests.append(hashlib.md5(chunk).digest())
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def list_objects(uri: str, endpoint: str | None = None) -> dict[str, tuple[int, str]]:
    """``{relative key: (size, etag)}`` of every object under an ``s3://`` prefix."""
    location = S3Location.parse(uri)
    s3 = client(endpoint)
    prefix = f"{location.prefix}/" if location.prefix else ""
    objects: dict[str, tuple[int, str]] = {}
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                objects[item["Key"][len(prefix) :]] = (int(item["Size"]), str(item["ETag"]).strip('"'))
    except _storage_errors() as error:
        raise _wrap(error, location.bucket, s3.meta.endpoint_url) from None
    return objects


def exists(uri: str, endpoint: str | None = None) -> bool:
    """Whether an object, or any object under the prefix, exists at ``uri``."""
    location = S3Location.parse(uri)
    s3 = client(endpoint)
    try:
        response = s3.list_objects_v2(Bucket=location.bucket, Prefix=location.prefix, MaxKeys=1)
    except _storage_errors() as error:
        raise _wrap(error, location.bucket, s3.meta.endpoint_url) from None
    return int(response.get("KeyCount", 0)) > 0


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=MULTIPART_CHUNK_BYTES + 1,
        multipart_chunksize=MULTIPART_CHUNK_BYTES,
        max_concurrency=4,
        use_threads=True,
    )


@dataclass
class TransferReport:
    transferred: int
    skipped: int
    bytes: int


def upload_folder(local: Path, uri: str, endpoint: str | None = None) -> TransferReport:
    """Upload every file under ``local`` to ``uri`` (parallel; multipart above 16 MiB), skipping files whose
    size and ETag already match the remote object."""
    if not local.is_dir():
        raise FileNotFoundError(f"{local}: not a folder")
    location = S3Location.parse(uri)
    remote = list_objects(uri, endpoint)
    s3 = client(endpoint)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    todo = []
    for path in files:
        relative = path.relative_to(local).as_posix()
        size = path.stat().st_size
        if relative in remote and remote[relative] == (size, file_etag(path)):
            continue
        todo.append((path, relative, size))

    def put(item: tuple[Path, str, int]) -> None:
        path, relative, _ = item
        s3.upload_file(str(path), location.bucket, location.key(relative), Config=_transfer_config())

    try:
        with ThreadPoolExecutor(MAX_WORKERS) as pool:
            list(pool.map(put, todo))
    except (*_storage_errors(), OSError) as error:  # type: ignore[misc]
        raise _wrap(error, location.bucket, s3.meta.endpoint_url) from None
    return TransferReport(len(todo), len(files) - len(todo), sum(size for _, _, size in todo))


def download_folder(uri: str, local: Path, endpoint: str | None = None) -> TransferReport:
    """Download every object under ``uri`` into ``local``, skipping files whose size and ETag match."""
    location = S3Location.parse(uri)
    remote = list_objects(uri, endpoint)
    if not remote:
        raise StorageError(f"nothing under {uri} (endpoint {endpoint or endpoint_url() or 'AWS default'})")
    unsafe = sorted(key for key in remote if not is_folder_marker(key) and not safe_relative_key(key))
    if unsafe:
        raise StorageError(
            f"{uri}: refusing to download {len(unsafe)} object(s) whose key would escape {local} or is malformed "
            f"(absolute, '..' or empty path parts): {unsafe[:5]}"
        )
    if local.exists() and not local.is_dir():
        raise StorageError(f"{local}: not a folder (the download target must be a folder)")
    s3 = client(endpoint)
    todo = []
    for relative, (size, etag) in sorted(remote.items()):
        if is_folder_marker(relative):
            continue
        target = local / relative
        if target.is_file() and target.stat().st_size == size and file_etag(target) == etag:
            continue
        todo.append((relative, target, size))

    def get(item: tuple[str, Path, int]) -> None:
        relative, target, _ = item
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(location.bucket, location.key(relative), str(target), Config=_transfer_config())

    try:
        with ThreadPoolExecutor(MAX_WORKERS) as pool:
            list(pool.map(get, todo))
    except (*_storage_errors(), OSError) as error:  # type: ignore[misc]
        raise _wrap(error, location.bucket, s3.meta.endpoint_url) from None
    return TransferReport(len(todo), len(remote) - len(todo), sum(size for _, _, size in todo))


def is_folder_marker(key: str) -> bool:
    """An empty object whose key ends in ``/`` (what consoles create for "folders"), relative to the prefix."""
    return key == "" or key.endswith("/")


def safe_relative_key(key: str) -> bool:
    """Whether an object key, relative to the pulled prefix, names a file inside the target folder: no absolute
    path, no ``..``, ``.`` or empty parts (``a//b``), no backslashes or NUL."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        return False
    return all(part not in ("", ".", "..") for part in key.split("/"))


def ensure_bucket(bucket: str, endpoint: str | None = None) -> None:
    """Create ``bucket`` if it does not exist (for local S3-compatible servers and first-time set-up)."""
    s3 = client(endpoint)
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except _storage_errors():
        pass
    try:
        s3.create_bucket(Bucket=bucket)
    except _storage_errors() as error:
        raise _wrap(error, bucket, s3.meta.endpoint_url) from None
