"""S3 faults, for real: a real moto server behind a TCP link that goes down mid-transfer, and a moto server that
enforces IAM (a user without S3 rights, an unknown access key). Nothing of ours is mocked."""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from bdirnet import storage
from bdirnet.storage import StorageError, file_etag, list_objects

from .s3server import CREDENTIALS, CuttableLink, moto_server

MIB = 1024 * 1024


def _folder(root: Path) -> dict[str, Path]:
    """20 files of 1 MiB and one of 40 MiB (a 3-part multipart upload), random bytes."""
    rng = np.random.default_rng(0)
    files = {}
    for index in range(20):
        files[f"shard-{index:02d}.bin"] = rng.bytes(MIB)
    files["big/weights.bin"] = rng.bytes(40 * MIB)
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    return {relative: root / relative for relative in files}


def _port(endpoint: str) -> int:
    return int(urlparse(endpoint).port or 0)


def _matching(remote: dict[str, tuple[int, str]], local: dict[str, Path]) -> set[str]:
    """Remote keys whose size and ETag are those of the local file."""
    return {k for k, (size, etag) in remote.items() if (size, etag) == (local[k].stat().st_size, file_etag(local[k]))}


def test_s3_going_down_mid_upload_is_one_clear_error_and_a_rerun_completes(s3_endpoint: str, tmp_path: Path) -> None:
    local = _folder(tmp_path / "up")
    uri = "s3://bdirnet-test/faults/upload"
    link = CuttableLink(_port(s3_endpoint), cut_after_bytes=30 * MIB)  # of 60 MiB: mid-upload
    with pytest.raises(StorageError) as failure:
        storage.upload_folder(tmp_path / "up", uri, endpoint=link.endpoint)
    message = str(failure.value)
    assert message.startswith(f"S3 unreachable at endpoint {link.endpoint}") and "\n" not in message
    assert link.cuts == 1
    after_cut = list_objects(uri, s3_endpoint)
    assert after_cut, "the cut came before any object was complete: move it later"
    assert len(after_cut) < len(local), "the cut came after every object was complete: move it earlier"
    assert _matching(after_cut, local) == set(after_cut)  # nothing partial is visible under a final key
    link.restore()
    report = storage.upload_folder(tmp_path / "up", uri, endpoint=link.endpoint)
    assert (report.skipped, report.transferred) == (len(after_cut), len(local) - len(after_cut))
    assert _matching(list_objects(uri, s3_endpoint), local) == set(local)


def test_s3_going_down_mid_download_leaves_no_partial_file(s3_endpoint: str, tmp_path: Path) -> None:
    remote = _folder(tmp_path / "source")
    uri = "s3://bdirnet-test/faults/download"
    storage.upload_folder(tmp_path / "source", uri, endpoint=s3_endpoint)
    link = CuttableLink(_port(s3_endpoint), cut_after_bytes=30 * MIB)
    target = tmp_path / "pulled"
    with pytest.raises(StorageError, match=f"^S3 unreachable at endpoint {link.endpoint}"):
        storage.download_folder(uri, target, endpoint=link.endpoint)
    written = {p.relative_to(target).as_posix(): p for p in target.rglob("*") if p.is_file()}
    assert len(written) < len(remote)
    for relative, path in written.items():  # only whole files, under their final names; no temp files left
        assert relative in remote and path.read_bytes() == remote[relative].read_bytes()
    link.restore()
    report = storage.download_folder(uri, target, endpoint=link.endpoint)
    assert (report.skipped, report.transferred) == (len(written), len(remote) - len(written))
    for relative, path in remote.items():
        assert (target / relative).read_bytes() == path.read_bytes()


@pytest.fixture
def iam_enforcing_s3(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A moto server that enforces IAM after the 4 set-up actions: bucket ``locked`` with one object, and a user
    ``reader`` with an access key and no policy. Yields the endpoint and the user's key."""
    import boto3

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    with moto_server(env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"}) as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="locked")
        s3.put_object(Bucket="locked", Key="raw/photo.png", Body=b"not really a png")
        iam = boto3.client("iam", endpoint_url=endpoint)
        iam.create_user(UserName="reader")
        access = iam.create_access_key(UserName="reader")["AccessKey"]
        yield {"endpoint": endpoint, "key": access["AccessKeyId"], "secret": access["SecretAccessKey"]}


def test_a_user_without_s3_rights_gets_access_denied(
    iam_enforcing_s3: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", iam_enforcing_s3["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", iam_enforcing_s3["secret"])
    endpoint = iam_enforcing_s3["endpoint"]
    with pytest.raises(StorageError) as failure:
        storage.download_folder("s3://locked/raw", tmp_path / "pulled", endpoint=endpoint)
    assert str(failure.value).startswith(f"S3 access denied (AccessDenied) at endpoint {endpoint}, bucket 'locked'")
    assert not (tmp_path / "pulled").exists()
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "a.txt").write_text("a")
    with pytest.raises(StorageError, match=r"^S3 access denied \(AccessDenied\)"):
        storage.upload_folder(tmp_path / "up", "s3://locked/new", endpoint=endpoint)


def test_an_unknown_access_key_is_named_as_rejected_credentials(
    iam_enforcing_s3: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A key the server never issued, made up at run time: no credential-shaped literal in the repository.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", f"unknown-{secrets.token_hex(8)}")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secrets.token_hex(16))
    with pytest.raises(StorageError, match=r"^S3 rejected the credentials \(InvalidAccessKeyId\)"):
        storage.download_folder("s3://locked/raw", tmp_path / "pulled", endpoint=iam_enforcing_s3["endpoint"])


def test_the_cli_prints_access_denied_in_one_line(
    iam_enforcing_s3: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bdirnet.cli import main

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", iam_enforcing_s3["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", iam_enforcing_s3["secret"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", iam_enforcing_s3["endpoint"])
    assert main(["data", "pull", "s3://locked/raw", str(tmp_path / "pulled")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "access denied (AccessDenied)" in err
    assert iam_enforcing_s3["secret"] not in err
