"""A content digest of a folder of shards (local or any URI pyarrow can list), recorded with each run."""

from __future__ import annotations

import hashlib


def folder_digest(uri: str, extra: str = "") -> str:
    """SHA-256 over the relative names and contents of every file under ``uri`` (sorted), then ``extra`` (what
    else defines the data, e.g. the training stream's recipe); 16 hex digits."""
    import pyarrow.fs as pafs

    filesystem, root = pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), uri)
    infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    files = sorted(info.path for info in infos if info.type == pafs.FileType.File)
    if not files:
        raise FileNotFoundError(f"{uri}: no files to hash (did the pairs stage run?)")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path[len(root) :].encode())
        with filesystem.open_input_stream(path) as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    digest.update(extra.encode())
    return digest.hexdigest()[:16]
