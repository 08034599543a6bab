"""bdirnet.storage against a real S3 server (moto_server on loopback), never a patched client."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bdirnet import storage
from bdirnet.cli import main as cli

from .s3server import moto_server


def make_folder(root: Path) -> dict[str, bytes]:
    contents = {
        "a.txt": b"hello",
        "nested/deeper/b.bin": os.urandom(2048),
        "big.bin": os.urandom(storage.MULTIPART_CHUNK_BYTES + 1234),  # multipart
        "empty": b"",
    }
    for name, data in contents.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return contents


def test_round_trip_byte_for_byte(s3_endpoint: str, tmp_path: Path) -> None:
    contents = make_folder(tmp_path / "up")
    first = storage.upload_folder(tmp_path / "up", "s3://bdirnet-test/data/x")
    assert first.transferred == 4 and first.skipped == 0
    again = storage.upload_folder(tmp_path / "up", "s3://bdirnet-test/data/x")
    assert again.transferred == 0 and again.skipped == 4, "unchanged files (size + ETag) must be skipped"
    listing = storage.list_objects("s3://bdirnet-test/data/x")
    assert set(listing) == set(contents)
    assert listing["big.bin"][1].endswith("-2"), "large files go up in parts"
    down = storage.download_folder("s3://bdirnet-test/data/x", tmp_path / "down")
    assert down.transferred == 4
    for name, data in contents.items():
        assert (tmp_path / "down" / name).read_bytes() == data
    assert storage.download_folder("s3://bdirnet-test/data/x", tmp_path / "down").skipped == 4
    assert storage.exists("s3://bdirnet-test/data/x/a.txt")
    assert not storage.exists("s3://bdirnet-test/data/nothing")


def test_cli_push_pull(s3_endpoint: str, tmp_path: Path) -> None:
    make_folder(tmp_path / "raw")
    assert cli(["data", "push", str(tmp_path / "raw"), "s3://bdirnet-test/raw/mine"]) == 0
    assert cli(["data", "pull", "s3://bdirnet-test/raw/mine", str(tmp_path / "back")]) == 0
    assert (tmp_path / "back" / "a.txt").read_bytes() == b"hello"


def test_missing_bucket_named(s3_endpoint: str, tmp_path: Path) -> None:
    with pytest.raises(storage.StorageError, match=r"bucket not found.*'no-such-bucket'"):
        storage.list_objects("s3://no-such-bucket/x")


def test_unreachable_server_is_a_clear_error_not_a_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with moto_server() as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        storage.ensure_bucket("gone")
    # The server is stopped now.
    make_folder(tmp_path / "up")
    start = time.monotonic()
    with pytest.raises(storage.StorageError, match=rf"S3 unreachable at endpoint {endpoint}, bucket 'gone'"):
        storage.upload_folder(tmp_path / "up", "s3://gone/x")
    assert time.monotonic() - start < 60


def test_bad_uri() -> None:
    with pytest.raises(ValueError, match="expected an s3://bucket/prefix URI"):
        storage.S3Location.parse("/local/path")


def test_pull_refuses_keys_that_escape_the_folder(s3_endpoint: str, tmp_path: Path) -> None:
    """Object keys with '..', '//' or a leading '/' never write outside the target; folder markers are skipped."""
    s3 = storage.client()
    bucket, prefix = "bdirnet-test", "traversal"
    s3.put_object(Bucket=bucket, Key=f"{prefix}/", Body=b"")  # a console's "folder" marker
    s3.put_object(Bucket=bucket, Key=f"{prefix}/sub/", Body=b"")
    s3.put_object(Bucket=bucket, Key=f"{prefix}/ok.txt", Body=b"fine")
    target = tmp_path / "dest"
    report = storage.download_folder(f"s3://{bucket}/{prefix}", target)
    assert report.transferred == 1 and (target / "ok.txt").read_bytes() == b"fine"
    for evil in ("../escaped.txt", "a//b.txt", "/abs.txt", "sub/../../escaped2.txt"):
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{evil}", Body=b"evil")
    with pytest.raises(storage.StorageError, match="refusing to download 4 object"):
        storage.download_folder(f"s3://{bucket}/{prefix}", tmp_path / "dest2")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "escaped2.txt").exists()
    assert not (tmp_path / "dest2").exists()


def test_pull_into_a_file_or_unwritable_folder_is_a_local_error(s3_endpoint: str, tmp_path: Path) -> None:
    s3 = storage.client()
    s3.put_object(Bucket="bdirnet-test", Key="local-errors/a.txt", Body=b"a")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(storage.StorageError, match="not a folder"):
        storage.download_folder("s3://bdirnet-test/local-errors", a_file)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions: make the target's parent a file instead
            blocker = tmp_path / "blocker"
            blocker.write_text("x")
            target = blocker / "inside"
        else:
            target = locked / "inside"
        with pytest.raises(storage.StorageError, match="local I/O error") as error:
            storage.download_folder("s3://bdirnet-test/local-errors", target)
        assert "unreachable" not in str(error.value)
    finally:
        locked.chmod(0o700)
